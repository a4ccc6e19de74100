//! TLS with client-certificate auth.

use std::time::Duration;

use coord_core::{Backend, Error, KeyRange, PutRequest, RangeRequest, WatchRequest};
use coord_etcd::EtcdConfig;
use etcd_harness::{EtcdOptions, EtcdServer};

use crate::next_item;

#[tokio::test]
async fn tls_with_client_cert() {
    let opts = EtcdOptions::new()
        .with_generated_tls()
        .with_client_cert_auth();
    let Some(server) = EtcdServer::start_or_skip_with(opts).await else {
        return;
    };
    let files = server.tls().unwrap().clone();

    let b = EtcdConfig::new(server.endpoints())
        .with_ca_cert(&files.ca_cert)
        .with_client_cert(&files.client_cert, &files.client_key)
        .connect()
        .await
        .unwrap();
    let mut w = b
        .watch(WatchRequest::new(KeyRange::key("k")))
        .await
        .unwrap();
    let put = b.put(PutRequest::new("k", "v")).await.unwrap();
    assert_eq!(
        next_item(&mut w).await.unwrap().revision(),
        put.header_revision
    );
    assert_eq!(
        b.range(RangeRequest::key("k")).await.unwrap().kvs[0].value,
        b"v"
    );

    // The same with an https:// URL and the PEM bytes.
    let pem = |p: &std::path::Path| std::fs::read(p).unwrap();
    let b2 = EtcdConfig::new([server.client_url()])
        .with_ca_cert_pem(pem(&files.ca_cert))
        .with_client_cert_pem(pem(&files.client_cert), pem(&files.client_key))
        .with_domain_name("localhost")
        .connect()
        .await
        .unwrap();
    assert_eq!(b2.range(RangeRequest::key("k")).await.unwrap().count, 1);
    let debug = format!("{b2:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");

    // No client certificate: refused, with the reason in the error chain.
    let e = EtcdConfig::new(server.endpoints())
        .with_ca_cert(&files.ca_cert)
        .with_connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("client cert required");
    let chain = error_chain(&e);
    eprintln!("without client cert: {chain}");
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(chain.contains("BadCertificate"), "{chain}");

    // Not trusting the server's CA: refused.
    let e = EtcdConfig::new(server.endpoints())
        .with_client_cert(&files.client_cert, &files.client_key)
        .with_connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("server not trusted");
    let chain = error_chain(&e);
    eprintln!("without CA: {chain}");
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // A missing file is a clear InvalidArgument.
    let e = EtcdConfig::new(server.endpoints())
        .with_ca_cert("/nonexistent/ca.pem")
        .connect()
        .await
        .expect_err("missing CA file");
    assert!(
        matches!(&e, Error::InvalidArgument { reason } if reason.contains("/nonexistent/ca.pem")),
        "{e:?}"
    );
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
