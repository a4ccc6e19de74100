//! coord-core: backend traits and coordination primitives written once, generically.
#![deny(missing_docs)]

pub mod backend;
pub mod error;
pub mod kv;
pub mod lease;
pub mod prefixed;
pub mod txn;
pub mod watch;

pub use backend::{Backend, BackendLimits, DynBackend};
pub use error::{BoxError, Error, Result};
pub use kv::{
    prefix_end, DeleteRequest, DeleteResponse, KeyRange, KeyValue, LeaseId, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget,
};
pub use lease::{LeaseGrant, LeaseTimeToLive};
pub use prefixed::Prefixed;
pub use txn::{Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResponse, TxnResponse};
pub use watch::{EventKind, WatchEvent, WatchRequest, WatchStream};
