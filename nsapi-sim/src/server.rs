//! The HTTP application: shared state behind a lock, the router (API under the base path, admin
//! under `/_sim/`) and the shutdown signal that also releases hanging requests. The listeners
//! that serve it, one per node, are in [`crate::node`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::routing::{any, get};
use tokio::sync::watch;

use crate::node::Node;
use crate::store::{GrantKind, Store};
use crate::tls::Tls;
use crate::{admin, api};

/// State shared by every request handler, every node and the [`crate::Sim`] handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    shutdown: watch::Receiver<bool>,
    base_path: String,
    tls: Option<Tls>,
    nodes: Mutex<Vec<Arc<Node>>>,
}

impl Shared {
    pub fn new(
        store: Store,
        shutdown: watch::Receiver<bool>,
        base_path: String,
        tls: Option<Tls>,
    ) -> Self {
        Shared {
            store: Mutex::new(store),
            shutdown,
            base_path,
            tls,
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// The state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count(&self, node: usize, endpoint: &str, grant: GrantKind, result: &str) {
        self.lock().count(node, endpoint, grant, result);
    }

    /// Resolves when the server is told to stop.
    pub async fn until_shutdown(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// A receiver of the stop signal.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The API base path, normalised (`""` or `/x`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.node_list().clone()
    }

    pub fn node(&self, index: usize) -> Option<Arc<Node>> {
        self.node_list().get(index).cloned()
    }

    /// The node list, to read or to append to (never held across an await).
    pub fn node_list(&self) -> MutexGuard<'_, Vec<Arc<Node>>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The whole application. `base` is normalised: empty or `/x` without a trailing slash.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let base = shared.base_path().to_owned();
    let api = Router::new()
        .route(&format!("{base}/oauth2/token"), any(api::v1_token))
        .route(&format!("{base}/oauth2/token/"), any(api::v1_token))
        .route(&format!("{base}/oauth2/read"), get(api::read))
        .route(&format!("{base}/oauth2/read/"), get(api::read))
        .route(&format!("{base}/v2/tokens"), any(api::v2_tokens))
        .route(&format!("{base}/v2/tokens/"), any(api::v2_tokens));
    api.merge(admin::router())
        .fallback(api::not_found)
        .with_state(shared)
}

/// Normalise a base path: leading slash, no trailing slash, `""` for the root.
pub(crate) fn normalise_base(p: &str) -> String {
    let trimmed = p.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}
