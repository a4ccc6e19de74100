//! The builder of a [`MemStore`].

use coord_core::{BackendLimits, Capabilities};

use crate::store::MemStore;

/// Configures a [`MemStore`]; from [`MemStore::builder`].
///
/// ```
/// use coord_core::{Backend, BackendLimits};
/// use coord_mem::MemStore;
///
/// let store = MemStore::builder()
///     .history_limit(1_000)
///     .limits(BackendLimits::new(64 * 1024, 1, 3600))
///     .lease_id_seed(7)
///     .build();
/// assert_eq!(store.limits().max_ttl, 3600);
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MemStoreBuilder {
    pub(crate) history_limit: u64,
    pub(crate) limits: BackendLimits,
    pub(crate) max_txn_ops: usize,
    pub(crate) lease_id_seed: Option<u64>,
    pub(crate) capabilities: Capabilities,
}

impl Default for MemStoreBuilder {
    fn default() -> Self {
        MemStoreBuilder {
            history_limit: MemStoreBuilder::DEFAULT_HISTORY_LIMIT,
            limits: BackendLimits::default(),
            max_txn_ops: MemStoreBuilder::DEFAULT_MAX_TXN_OPS,
            lease_id_seed: None,
            capabilities: Capabilities::all(),
        }
    }
}

impl MemStoreBuilder {
    /// Revisions of history kept by default.
    pub const DEFAULT_HISTORY_LIMIT: u64 = 10_000;

    /// etcd's default `--max-txn-ops`.
    pub const DEFAULT_MAX_TXN_OPS: usize = 128;

    /// A builder with the defaults: 10,000 revisions of history, etcd's limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep at most `revisions` revisions of history: older ones are compacted automatically
    /// (like etcd's revision-mode auto-compaction), so memory stays bounded however many
    /// writes run. Past reads and watch replays from before that give
    /// [`Error::Compacted`](coord_core::Error::Compacted).
    pub fn history_limit(mut self, revisions: u64) -> Self {
        self.history_limit = revisions;
        self
    }

    /// The request and TTL bounds the store enforces (and reports from
    /// [`Backend::limits`](coord_core::Backend::limits)).
    pub fn limits(mut self, limits: BackendLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Most compares, and most operations per branch, in one transaction (etcd's
    /// `--max-txn-ops`, 128 by default); more is [`Error::InvalidArgument`](coord_core::Error).
    pub fn max_txn_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = ops;
        self
    }

    /// Seeds the generator of lease ids, so the ids the store picks repeat from run to run.
    /// Without it, ids are random.
    pub fn lease_id_seed(mut self, seed: u64) -> Self {
        self.lease_id_seed = Some(seed);
        self
    }

    /// The optional capabilities the store declares and accepts (default: all of them, as
    /// etcd). With fewer, requests that need a missing one fail with
    /// [`Error::Unsupported`](coord_core::Error::Unsupported), as on a backend that has only
    /// the required level: `Capabilities::none()` checks that code runs on any backend.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemStore {
        MemStore::from_builder(self)
    }
}
