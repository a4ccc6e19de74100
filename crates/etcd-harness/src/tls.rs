//! A throw-away PKI for TLS tests: a CA, a server certificate for `127.0.0.1`/`localhost` and a
//! client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::HarnessError;

/// PEM files of a generated CA, a server certificate (SAN `127.0.0.1`, `localhost`) and a
/// client certificate, all signed by that CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (trust anchor for both sides).
    pub ca_cert: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The client certificate (common name as given, `root` by default).
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
}

fn err(what: &str) -> impl FnOnce(rcgen::Error) -> HarnessError + '_ {
    move |e| HarnessError::new(format!("generating {what}")).with_source(e)
}

impl TlsFiles {
    /// Generates the CA and both certificates into `dir` (created if missing), with client
    /// common name `root`.
    pub fn generate(dir: &Path) -> Result<Self, HarnessError> {
        Self::generate_with_client_cn(dir, "root")
    }

    /// Like [`TlsFiles::generate`], with the client certificate's common name (etcd takes it as
    /// the user name when auth is on).
    pub fn generate_with_client_cn(dir: &Path, client_cn: &str) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::new(format!("creating {}", dir.display())).with_source(e))?;

        let ca_key = KeyPair::generate().map_err(err("the CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("the CA"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "etcd-harness test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).map_err(err("the CA"))?;

        let server_key = KeyPair::generate().map_err(err("the server key"))?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(err("the server certificate"))?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "etcd-harness server");
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .map_err(err("the server certificate"))?;

        let client_key = KeyPair::generate().map_err(err("the client key"))?;
        let mut client_params =
            CertificateParams::new(Vec::<String>::new()).map_err(err("the client certificate"))?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, client_cn);
        client_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .map_err(err("the client certificate"))?;

        let files = TlsFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        for (path, pem) in [
            (&files.ca_cert, ca.pem()),
            (&files.server_cert, server.pem()),
            (&files.server_key, server_key.serialize_pem()),
            (&files.client_cert, client.pem()),
            (&files.client_key, client_key.serialize_pem()),
        ] {
            std::fs::write(path, pem).map_err(|e| {
                HarnessError::new(format!("writing {}", path.display())).with_source(e)
            })?;
        }
        Ok(files)
    }
}
