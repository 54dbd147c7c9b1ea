//! What every reconcile pass shares: the clients, the policy, the in-memory state kept between
//! passes (sessions, retries, node health, rate limits, own writes), and forgetting it when a
//! credential goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::Reporter;

use crate::cluster::events::Events;
use crate::cluster::namespaces::NamespacePhases;
use crate::cluster::outages::Outages;
use crate::cluster::output_secret::OwnWrites;
use crate::cluster::trust::TrustedClients;
use crate::cluster::watched::Watched;
use crate::core::clock::Clock;
use crate::core::policy::Policy;
use crate::core::schedule::{self, FailureClass};
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
    /// The credentials waiting out an outage of their API host, woken when it answers.
    pub outages: Outages,
    /// The NetSapiens clients for credentials' CA bundles.
    pub trusted: TrustedClients,
    /// Whether to name the pods that read a token statically (`--consumer-check`).
    pub consumer_check: bool,
    /// Whether routine new tokens get an Event (`--routine-events`).
    pub routine_events: bool,
    /// A test hook (`NSAPI_TEST_PANIC_CREDENTIAL=namespace/name`): passes over that credential
    /// panic, to prove that a panic stays that credential's condition.
    pub panic_on: Option<String>,
    /// A test hook (`NSAPI_TEST_LOSE_TRIGGERS=namespace/name`): the watch events and Secret
    /// changes of that credential start no pass, as if lost, so that only the sweep can.
    pub lose_triggers: Option<String>,
    /// How often the sweep runs (`sweep::SWEEP_EVERY`; `NSAPI_TEST_SWEEP_EVERY_MS` in tests).
    pub sweep_every: std::time::Duration,
    /// The output Secret versions this operator wrote (their watch events start no pass).
    pub own_writes: OwnWrites,
    /// Credentials deleted in the last minutes (see [`Tombstones`]).
    pub gone: Tombstones,
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
            outages: Outages::default(),
            trusted: TrustedClients::default(),
            consumer_check: false,
            routine_events: true,
            panic_on: None,
            lose_triggers: None,
            sweep_every: crate::cluster::sweep::SWEEP_EVERY,
            gone: Tombstones::default(),
            own_writes: OwnWrites::default(),
        }
    }

    /// Whether the test hook `lose_triggers` drops the triggers of `credential`.
    pub fn loses_trigger(&self, credential: &crate::cluster::watched::Watched) -> bool {
        let meta = kube::Resource::meta(credential);
        self.loses_trigger_of(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Whether the test hook `lose_triggers` drops the triggers of `namespace/name`.
    pub fn loses_trigger_of(&self, namespace: &str, name: &str) -> bool {
        self.lose_triggers
            .as_deref()
            .is_some_and(|lost| lost.split_once('/') == Some((namespace, name)))
    }

    /// The NetSapiens calls of one credential (`uid`), through `nsapi`; `deadline` is when its
    /// token expires (its place in the rate limit's queue).
    pub(crate) fn grants<'g>(
        &'g self,
        nsapi: &'g NsApiClient,
        trust: &'g str,
        uid: &'g str,
        deadline: Timestamp,
    ) -> Grants<'g> {
        Grants {
            nsapi,
            trust,
            sessions: &self.sessions,
            metrics: &self.metrics,
            limiter: &self.limiter,
            health: &self.health,
            answers: &self.outages,
            clock: self.clock.as_ref(),
            uid,
            deadline,
        }
    }

    /// Forgets what the operator holds for a credential that is deleted or going away: its
    /// session, its retry count and its metric series.
    pub fn forget(&self, credential: &Watched) {
        let namespace = credential.namespace().unwrap_or_default();
        // The output Secret, and the name written before a rename while the status names it.
        for output in credential.outputs() {
            self.own_writes.forget(&namespace, output);
        }
        self.forget_by_name(
            &namespace,
            &credential.name_any(),
            credential.uid().as_deref(),
        );
    }

    pub fn forget_by_name(&self, namespace: &str, name: &str, uid: Option<&str>) {
        self.metrics.forget(namespace, name);
        self.metrics.queue.forget(namespace, name);
        if let Some(uid) = uid {
            self.gone.bury(uid, std::time::Instant::now());
            self.sessions.forget(uid);
            self.kube_retries.clear(uid);
            self.outages.forget(uid);
        }
    }

    /// Whether the credential with `uid` was deleted since the operator started watching: a
    /// pass that was running when it was deleted must not leave its state behind.
    pub fn is_gone(&self, uid: &str) -> bool {
        self.gone.contains(uid, std::time::Instant::now())
    }
}

/// How long a deleted credential's UID is remembered: longer than any pass can run (a token
/// request has a deadline of seconds, a Kubernetes call of seconds).
const TOMBSTONE_TTL: Duration = Duration::from_secs(10 * 60);

/// The UIDs of credentials deleted in the last few minutes. A pass that was running when its
/// credential was deleted ends after the forgetting, and would otherwise bring its session (a
/// live refresh token), metric series and own-write records back for good.
#[derive(Default)]
pub struct Tombstones(Mutex<HashMap<String, Instant>>);

impl Tombstones {
    pub fn bury(&self, uid: &str, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, at| now.saturating_duration_since(*at) < TOMBSTONE_TTL);
        map.insert(uid.to_owned(), now);
    }

    /// The credential is back in view (a label selector matches it again): not gone.
    pub fn exhume(&self, uid: &str) {
        self.lock().remove(uid);
    }

    pub fn contains(&self, uid: &str, now: Instant) -> bool {
        self.lock()
            .get(uid)
            .is_some_and(|at| now.saturating_duration_since(*at) < TOMBSTONE_TTL)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Counts one more failure and returns how long to wait before the next pass: exponential
    /// with jitter, as `schedule::retry_delay` decides for a transient failure.
    pub fn next_delay(&self, uid: &str) -> Duration {
        let failures = self.failed(uid);
        let seed = schedule::seed_of(&[uid, &failures.to_string()]);
        let delay = schedule::retry_delay(FailureClass::Transient, failures, None, seed);
        Duration::try_from(delay).unwrap_or(Duration::from_secs(10))
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

    #[test]
    fn deleted_credentials_are_remembered_for_minutes_then_pruned() {
        let gone = Tombstones::default();
        let t0 = Instant::now();
        gone.bury("a", t0);
        assert!(gone.contains("a", t0 + Duration::from_secs(60)));
        assert!(!gone.contains("b", t0));
        assert!(!gone.contains("a", t0 + TOMBSTONE_TTL));
        // Each burial prunes the expired ones: the map stays bounded by the deletion rate.
        gone.bury("b", t0 + TOMBSTONE_TTL + Duration::from_secs(1));
        assert_eq!(gone.len(), 1);
        gone.exhume("b");
        assert!(gone.is_empty());
    }
}
