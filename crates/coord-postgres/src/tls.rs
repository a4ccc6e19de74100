//! The connection URL and its TLS settings.
//!
//! `tokio-postgres` parses URLs but knows only `sslmode=disable|prefer|require` and rejects
//! `sslrootcert`; libpq users write `sslmode=verify-full&sslrootcert=ca.pem`. So this module
//! takes `sslmode` and `sslrootcert` out of the URL first, then hands the rest over.
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | absent, `disable`, `allow` | no | — |
//! | `prefer` | if the server offers it | as `require` |
//! | `require` | yes | checked against the CA when one is given (libpq's rule), else not checked |
//! | `verify-ca` | yes | must chain to the CA (required) |
//! | `verify-full` | yes | must chain to the CA (required) and name the host |

use std::sync::Arc;

use coord_core::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;

use crate::config::{Pem, PostgresConfig};

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Not at all: encryption only (libpq's `require` without a root certificate).
    Nothing,
    /// It must chain to a trusted CA.
    Chain,
    /// It must chain to a trusted CA and name the host.
    Full,
}

/// The connector every connection of a backend uses.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// The parsed URL, with TLS decided.
pub(crate) struct Target {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) tls: Tls,
}

/// Parses `config`'s URL: `sslmode` and `sslrootcert` by libpq's rules, the rest by
/// `tokio-postgres`.
pub(crate) fn target(config: &PostgresConfig) -> Result<Target> {
    let (rest, mode, root) = take_tls_params(&config.url)?;
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| Error::invalid(format!("bad PostgreSQL URL: {e}")))?;
    let ca = match (&config.ca_cert, root) {
        (Some(pem), _) => Some(pem.load("CA certificate")?),
        (None, Some(path)) => Some(Pem::File(path.into()).load("CA certificate (sslrootcert)")?),
        (None, None) => None,
    };
    let mode = mode.unwrap_or_else(|| "disable".to_string());
    let (ssl, verify) = match mode.as_str() {
        "disable" | "allow" => (SslMode::Disable, Verify::Nothing),
        "prefer" => (SslMode::Prefer, checked_if_ca(&ca)),
        "require" => (SslMode::Require, checked_if_ca(&ca)),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => return Err(Error::invalid(format!("unknown sslmode {other:?}"))),
    };
    pg.ssl_mode(ssl);
    if verify != Verify::Nothing && ca.is_none() {
        return Err(Error::invalid(format!(
            "sslmode={mode} needs a CA certificate: sslrootcert=… in the URL or PostgresConfig::with_ca_cert"
        )));
    }
    let tls = if ssl == SslMode::Disable {
        Tls::Plain
    } else {
        Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
            client_config(verify, ca.as_deref())?,
        ))
    };
    Ok(Target { pg, tls })
}

fn checked_if_ca(ca: &Option<Vec<u8>>) -> Verify {
    if ca.is_some() {
        Verify::Chain
    } else {
        Verify::Nothing
    }
}

/// Splits `sslmode` and `sslrootcert` off a URL (`postgres://…?…`) or a key-value string.
fn take_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>)> {
    let mut mode = None;
    let mut root = None;
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), None, None));
        };
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k {
                "sslmode" => mode = Some(percent_decode(v)?),
                "sslrootcert" => root = Some(percent_decode(v)?),
                _ => kept.push(param),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, mode, root))
    } else {
        // libpq's key-value form; these two values never need quoting in practice.
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.trim_matches('\'').to_string()),
                Some(("sslrootcert", v)) => root = Some(v.trim_matches('\'').to_string()),
                _ => kept.push(token),
            }
        }
        Ok((kept.join(" "), mode, root))
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            let b = u8::from_str_radix(hex, 16)
                .map_err(|_| Error::invalid(format!("bad percent-encoding in {s:?}")))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid(format!("non-UTF-8 value {s:?}")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: Verify, ca: Option<&[u8]>) -> Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS setup: {e}")))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let mut roots = RootCertStore::empty();
            let pem = ca.unwrap_or_default();
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::invalid(format!("cannot parse the CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(Error::invalid(
                    "the CA certificate file holds no certificate",
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid(format!("bad CA certificate: {e}")))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::invalid(format!("TLS setup: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// `sslmode=verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            })) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=require` without a CA: encrypted, the server not authenticated (libpq's meaning
/// of `require`). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));
        let (rest, mode, root) = take_tls_params("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), mode, root),
            ("postgres://u@h/db", None, None)
        );
        let (rest, mode, _) = take_tls_params("host=h user=u sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("host=h user=u", Some("require"))
        );
    }

    #[test]
    fn modes() {
        let t = target(&PostgresConfig::new("postgres://u@h/db")).unwrap();
        assert!(matches!(t.tls, Tls::Plain));
        assert_eq!(t.pg.get_ssl_mode(), SslMode::Disable);
        let t = target(&PostgresConfig::new("postgres://u@h/db?sslmode=require")).unwrap();
        assert!(matches!(t.tls, Tls::Rustls(_)));
        assert_eq!(t.pg.get_ssl_mode(), SslMode::Require);
        assert!(matches!(
            target(&PostgresConfig::new(
                "postgres://u@h/db?sslmode=verify-full"
            )),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            target(&PostgresConfig::new("postgres://u@h/db?sslmode=bogus")),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
