//! Wiring: which credentials this instance acts on, the watches that trigger a reconcile (the
//! credentials, and the metadata of Secrets that a credential uses), and what happens when a
//! pass fails on the Kubernetes API. One pass itself is `reconciler.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::NsApiCredential;
use crate::reconciler::{Context, reconcile};
use crate::schedule::{self, FailureClass};
use crate::{Error, Result};

/// Which credentials this operator instance acts on.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Only credentials whose labels match (for sharding a large fleet across deployments).
    pub label_selector: Option<String>,
}

/// Fails fast, with a hint, when the NsApiCredential CRD is not served.
pub async fn ensure_crd_served(client: &kube::Client, scope: &Scope) -> Result<()> {
    let credentials: Api<NsApiCredential> = match scope.namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    credentials
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdNotInstalled)?;
    Ok(())
}

/// Runs the controller until `shutdown` resolves: one watch for the whole cluster, or one per
/// namespace in scope.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let apis: Vec<(Api<NsApiCredential>, Api<PartialObjectMeta<Secret>>)> =
        if scope.namespaces.is_empty() {
            vec![(Api::all(ctx.client.clone()), Api::all(ctx.client.clone()))]
        } else {
            scope
                .namespaces
                .iter()
                .map(|ns| {
                    (
                        Api::namespaced(ctx.client.clone(), ns),
                        Api::namespaced(ctx.client.clone(), ns),
                    )
                })
                .collect()
        };
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = &scope.label_selector {
        config = config.labels(selector);
    }
    info!(namespaces = ?scope.namespaces, label_selector = ?scope.label_selector, "controller started");
    let controllers = apis.into_iter().map(|(credentials, secrets)| {
        let controller = Controller::new(credentials, config.clone());
        let store = controller.store();
        // Metadata only: the operator never holds the data of Secrets it does not own in memory.
        let (metrics, known) = (ctx.metrics.clone(), store.clone());
        let secret_changes = watcher(secrets, watcher::Config::default())
            .inspect_ok(move |event| {
                // A deleted credential is never reconciled again, but the garbage collector
                // then deletes its Secret: the moment to drop the credential's metric series.
                if let watcher::Event::Delete(secret) = event {
                    for owner in credentials_using(&known, secret) {
                        if known.get(&owner).is_none() {
                            metrics.forget(
                                owner.namespace.as_deref().unwrap_or_default(),
                                &owner.name,
                            );
                        }
                    }
                }
            })
            .touched_objects();
        controller
            .watches_stream(secret_changes, move |secret| {
                credentials_using(&store, &secret)
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    debug!(%error, "reconcile loop");
                }
            })
    });
    futures::future::join_all(controllers).await;
    info!("controller stopped");
}

/// The credentials a Secret matters to: those that reference it as an input or output, and the
/// one that controls it.
fn credentials_using(
    store: &Store<NsApiCredential>,
    secret: &impl Resource,
) -> Vec<ObjectRef<NsApiCredential>> {
    let meta = secret.meta();
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut refs: Vec<_> = store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns))
        .filter(|c| {
            let s = &c.spec;
            s.client_secret_ref.name == name
                || s.subscriber_secret_ref.name == name
                || s.token_secret.name == name
                || c.status
                    .as_ref()
                    .and_then(|st| st.token_secret_name.as_deref())
                    == Some(name)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect();
    for owner in meta.owner_references.iter().flatten() {
        if owner.controller == Some(true) && owner.kind == "NsApiCredential" {
            refs.push(ObjectRef::new(&owner.name).within(ns));
        }
    }
    refs
}

/// Consecutive passes that failed on the Kubernetes API, per credential UID, for backoff.
#[derive(Default)]
pub struct KubeRetries(Mutex<HashMap<String, u32>>);

impl KubeRetries {
    /// Counts one more failure and returns the count.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut counts = self.lock();
        let count = counts.entry(uid.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    pub fn clear(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A pass failed on the Kubernetes API: retry soon after a conflict, otherwise back off
/// exponentially (5 s up to 5 min), so a lasting problem (an RBAC denial, an outage) does not
/// turn into a retry loop.
fn error_policy(credential: Arc<NsApiCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    // Someone changed the object between our read and our write: start over soon.
    if matches!(error, Error::Kube(kube::Error::Api(e)) if e.code == 409) {
        return Action::requeue(Duration::from_secs(1));
    }
    let uid = credential.uid().unwrap_or_default();
    let failures = ctx.kube_retries.failed(&uid);
    let seed = schedule::seed_of(&[&uid, &failures.to_string()]);
    let delay = schedule::retry_delay(FailureClass::Transient, failures, None, seed);
    warn!(
        credential = %credential.name_any(),
        namespace = credential.namespace().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(Duration::try_from(delay).unwrap_or(Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_retries_count_per_credential_and_clear() {
        let retries = KubeRetries::default();
        assert_eq!(retries.failed("a"), 1);
        assert_eq!(retries.failed("a"), 2);
        assert_eq!(retries.failed("b"), 1);
        retries.clear("a");
        assert_eq!(retries.failed("a"), 1);
    }
}
