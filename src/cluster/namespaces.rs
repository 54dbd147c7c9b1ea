//! Whether a namespace is being deleted. A credential in a namespace that is going away gets no
//! new token: its Secret could not be written anyway, and NetSapiens would be called for
//! nothing. Asked only before a token is obtained, and remembered for a few seconds, so a burst
//! of credentials in one namespace costs one read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use tokio::time::Instant;
use tracing::debug;

/// How long an answer is reused.
const REMEMBER: Duration = Duration::from_secs(10);

pub struct NamespacePhases {
    client: kube::Client,
    known: Mutex<HashMap<String, (bool, Instant)>>,
}

impl NamespacePhases {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// True when the namespace is terminating (or already gone). When the operator may not
    /// read namespaces, or the read fails, the answer is false: this check only saves calls,
    /// it never stops a token that might be needed.
    pub async fn terminating(&self, namespace: &str) -> bool {
        if let Some((terminating, at)) = self.lock().get(namespace).copied()
            && at.elapsed() < REMEMBER
        {
            return terminating;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let terminating = match api.get_opt(namespace).await {
            Ok(Some(ns)) => {
                ns.metadata.deletion_timestamp.is_some()
                    || ns.status.and_then(|s| s.phase).as_deref() == Some("Terminating")
            }
            Ok(None) => true,
            Err(error) => {
                debug!(namespace, %error, "could not read the namespace; assuming it stays");
                false
            }
        };
        self.remember(namespace, terminating);
        terminating
    }

    /// Records what a write refused with `NamespaceTerminating` said.
    pub fn remember(&self, namespace: &str, terminating: bool) {
        self.lock()
            .insert(namespace.to_owned(), (terminating, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a Kubernetes API error says the namespace is being deleted (a create refused with
/// 403 and the cause `NamespaceTerminating`).
pub fn is_namespace_terminating(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 403
                && (status.message.contains("because it is being terminated")
                    || status.reason.contains("NamespaceTerminating"))
        }
        _ => false,
    }
}
