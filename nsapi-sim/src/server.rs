//! The HTTP server: shared state behind a lock, the router (API under the base path, admin
//! under `/_sim/`) and the shutdown signal that also releases hanging requests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::routing::{any, get};
use tokio::sync::watch;

use crate::store::{GrantKind, Store};
use crate::{admin, api};

/// State shared by every request handler and the [`crate::Sim`] handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(store: Store, shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            store: Mutex::new(store),
            shutdown,
        }
    }

    /// The state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count(&self, endpoint: &str, grant: GrantKind, result: &str) {
        self.lock().count(endpoint, grant, result);
    }

    /// Resolves when the server is told to stop.
    pub async fn until_shutdown(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// The whole application. `base` is normalised: empty or `/x` without a trailing slash.
pub(crate) fn router(shared: Arc<Shared>, base: &str) -> Router {
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
