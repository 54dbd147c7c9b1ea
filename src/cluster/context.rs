//! What every reconcile pass shares: the clients, the policy, the in-memory state kept between
//! passes (sessions, retries, node health, rate limits, own writes), and forgetting it when a
//! credential goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::Reporter;

use crate::cluster::events::Events;
use crate::cluster::namespaces::NamespacePhases;
use crate::cluster::output_secret::OwnWrites;
use crate::cluster::trust::TrustedClients;
use crate::core::clock::Clock;
use crate::core::crd::NsApiCredential;
use crate::core::policy::Policy;
use crate::nsapi::NsApiClient;
use crate::nsapi::grants::Grants;
use crate::nsapi::nodes::NodeHealth;
use crate::nsapi::ratelimit::{Rate, RateLimiter};
use crate::nsapi::sessions::Sessions;
use crate::telemetry::metrics::Metrics;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub nsapi: NsApiClient,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub recorder: Events,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
    pub kube_retries: KubeRetries,
    pub namespaces: NamespacePhases,
    /// The self-imposed rate limit of NetSapiens requests, per API host.
    pub limiter: RateLimiter,
    /// Which API nodes answer (for `spec.fallbackApiBaseUrls`).
    pub health: NodeHealth,
    /// The NetSapiens clients for credentials' CA bundles.
    pub trusted: TrustedClients,
    /// Whether to name the pods that read a token statically (`--consumer-check`).
    pub consumer_check: bool,
    /// A test hook (`NSAPI_TEST_PANIC_CREDENTIAL=namespace/name`): passes over that credential
    /// panic, to prove that a panic stays that credential's condition.
    pub panic_on: Option<String>,
    /// The output Secret versions this operator wrote (their watch events start no pass).
    pub own_writes: OwnWrites,
}

impl Context {
    pub fn new(
        client: kube::Client,
        nsapi: NsApiClient,
        clock: Arc<dyn Clock>,
        policy: Policy,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        rate: Option<Rate>,
    ) -> Self {
        Self {
            recorder: Events::new(client.clone(), reporter),
            namespaces: NamespacePhases::new(client.clone()),
            client,
            nsapi,
            clock,
            policy,
            metrics,
            sessions: Sessions::default(),
            kube_retries: KubeRetries::default(),
            limiter: RateLimiter::new(rate),
            health: NodeHealth::default(),
            trusted: TrustedClients::default(),
            consumer_check: false,
            panic_on: None,
            own_writes: OwnWrites::default(),
        }
    }

    /// The NetSapiens calls of one credential (`uid`), through `nsapi`; `deadline` is when its
    /// token expires (its place in the rate limit's queue).
    pub(crate) fn grants<'g>(
        &'g self,
        nsapi: &'g NsApiClient,
        uid: &'g str,
        deadline: Timestamp,
    ) -> Grants<'g> {
        Grants {
            nsapi,
            sessions: &self.sessions,
            metrics: &self.metrics,
            limiter: &self.limiter,
            health: &self.health,
            clock: self.clock.as_ref(),
            uid,
            deadline,
        }
    }

    /// Forgets what the operator holds for a credential that is deleted or going away: its
    /// session, its retry count and its metric series.
    pub fn forget(&self, credential: &NsApiCredential) {
        let namespace = credential.namespace().unwrap_or_default();
        self.own_writes
            .forget(&namespace, &credential.spec.token_secret.name);
        self.forget_by_name(
            &credential.namespace().unwrap_or_default(),
            &credential.name_any(),
            credential.uid().as_deref(),
        );
    }

    pub fn forget_by_name(&self, namespace: &str, name: &str, uid: Option<&str>) {
        self.metrics.forget(namespace, name);
        if let Some(uid) = uid {
            self.sessions.forget(uid);
            self.kube_retries.clear(uid);
        }
    }
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
