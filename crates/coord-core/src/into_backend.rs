//! What a recipe that needs only the store (no lease) accepts: a backend or a session.

use std::sync::Arc;

use crate::backend::{Backend, DynBackend};
use crate::session::Session;

/// Something that gives a [`DynBackend`]: any [`Backend`] (taken by value), a `&DynBackend`
/// (cloned) or a `&Session` (its backend). Recipes whose keys live on no lease, such as
/// [`Counter`](crate::Counter) and [`stm::run`](crate::stm::run), take this, so a caller passes
/// whichever it has.
pub trait IntoBackend {
    /// The backend.
    fn into_backend(self) -> DynBackend;
}

impl<B: Backend> IntoBackend for B {
    fn into_backend(self) -> DynBackend {
        Arc::new(self)
    }
}

impl IntoBackend for &DynBackend {
    fn into_backend(self) -> DynBackend {
        self.clone()
    }
}

impl IntoBackend for &Session {
    fn into_backend(self) -> DynBackend {
        self.backend().clone()
    }
}
