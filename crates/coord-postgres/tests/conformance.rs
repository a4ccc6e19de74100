//! The shared conformance suite of `coord_core::conformance` on a real PostgreSQL (the one
//! named by `POSTGRES_URL`), every scenario of the list, in this process's own schema. The
//! backend declares every capability, so no scenario is left out.

use std::sync::Arc;

use coord_core::DynBackend;

mod common;

coord_core::conformance_tests!(|| async {
    common::backend()
        .await
        .map(|backend| Arc::new(backend) as DynBackend)
});
