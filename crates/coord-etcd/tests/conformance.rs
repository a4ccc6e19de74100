//! The shared conformance suite of `coord_core::conformance`, on a real etcd: the one named by
//! `ETCD_ENDPOINTS`, or one started for each test.

use std::sync::Arc;
use std::time::Duration;

use coord_core::DynBackend;
use coord_etcd::EtcdConfig;

coord_core::conformance_tests!(|| async {
    let etcd = etcd_harness::endpoints_for_tests().await?;
    let config = if etcd.is_exclusive() {
        EtcdConfig::new(etcd.endpoints())
    } else {
        EtcdConfig::from_env()
            .expect("ETCD_* settings")
            .with_endpoints(etcd.endpoints())
    };
    let backend = config
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to etcd");
    Some((Arc::new(backend) as DynBackend, etcd))
});
