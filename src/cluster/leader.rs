//! Leader election on a `coordination.k8s.io` Lease, so that several replicas can run and only
//! one of them calls the NetSapiens API and writes. The decision is pure (`decide`); the loop
//! around it reads and writes the Lease with optimistic concurrency.
//!
//! As in client-go, a Lease held by another replica counts as expired only when this replica
//! has seen it unchanged for the lease duration, measured on its own monotonic clock: the
//! holder's `renewTime` comes from the holder's clock, and comparing it with ours would let
//! clock skew between nodes hand a healthy Lease to a second leader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::core::clock::Clock;

/// Timing of the election, as in client-go: a holder that has not renewed for `lease_duration`
/// loses the Lease; a holder that cannot renew within `renew_deadline` steps down.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Take it: it is free, expired, or ours already (then this renews it).
    Acquire { transition: bool },
    /// Someone else holds it and renewed it recently.
    Wait { holder: String },
}

/// Decides from the Lease as read. Pure: `unchanged_for` is how long this replica has seen the
/// Lease record unchanged (by its own clock).
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> LeaseAction {
    let Some(spec) = spec else {
        return LeaseAction::Acquire { transition: true };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseAction::Acquire { transition: false };
    }
    if holder.is_empty() {
        return LeaseAction::Acquire { transition: true };
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    if unchanged_for < duration {
        LeaseAction::Wait { holder }
    } else {
        LeaseAction::Acquire { transition: true }
    }
}

/// Holds or competes for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    /// The Lease record last seen (its resourceVersion) and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            observed: Mutex::new(None),
        }
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut waiting_for = None;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => debug!(%error, "could not take the lease this round"),
            }
            let holder = self.holder().await;
            if holder != waiting_for {
                info!(holder = ?holder, "another replica leads; standing by");
                waiting_for = holder;
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until it cannot be renewed within the renew deadline (counted from the
    /// last renewal: each attempt gets only the time that is left); then returns, and the
    /// caller must stop acting as leader. A hung API server therefore costs at most the renew
    /// deadline, which is shorter than the lease duration a standby waits.
    pub async fn hold(&self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(left, self.try_acquire()).await {
                Ok(Ok(true)) => last_renewal = Instant::now(),
                Ok(Ok(false)) => {
                    warn!("the lease was taken by another replica");
                    return;
                }
                Ok(Err(error)) => warn!(%error, "could not renew the lease"),
                Err(_) => warn!(
                    renew_deadline = ?self.config.renew_deadline,
                    "the lease could not be renewed within the renew deadline"
                ),
            }
            if last_renewal.elapsed() >= self.config.renew_deadline {
                return;
            }
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!("released the lease"),
            Err(error) => warn!(%error, "could not release the lease"),
        }
    }

    async fn holder(&self) -> Option<String> {
        let lease = self.api.get_opt(&self.config.name).await.ok()??;
        lease.spec?.holder_identity
    }

    /// How long the Lease record with `version` has been seen unchanged.
    fn unchanged_for(&self, version: Option<&str>) -> Duration {
        let version = version.unwrap_or_default();
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((seen, at)) if seen == version => at.elapsed(),
            _ => {
                *observed = Some((version.to_owned(), Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One round: read, decide, write. `Ok(true)` when this replica holds the Lease afterwards.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = self.clock.now();
        let existing = self.api.get_opt(&self.config.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let version = existing
            .as_ref()
            .and_then(|l| l.metadata.resource_version.as_deref());
        let unchanged_for = self.unchanged_for(version);
        let transition = match decide(
            spec,
            &self.config.identity,
            unchanged_for,
            self.config.lease_duration,
        ) {
            LeaseAction::Wait { .. } => return Ok(false),
            LeaseAction::Acquire { transition } => transition,
        };
        let mut spec = spec.cloned().unwrap_or_default();
        if transition {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(existing.is_some()));
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.lease_duration.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                // Optimistic concurrency: of two replicas writing at once, one gets a conflict.
                resource_version: existing
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        let result = match existing {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed.parse::<Timestamp>().unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let d = Duration::from_secs(15);
        let secs = Duration::from_secs;
        let other = || LeaseAction::Wait {
            holder: "other".into(),
        };
        let take = LeaseAction::Acquire { transition: true };
        let cases = [
            ("no lease", None, secs(0), take.clone()),
            (
                "ours",
                Some(held_by("me", "2026-01-01T09:59:59Z")),
                secs(0),
                LeaseAction::Acquire { transition: false },
            ),
            (
                "another's, just seen changing",
                Some(held_by("other", "2026-01-01T09:59:50Z")),
                secs(0),
                other(),
            ),
            (
                "another's, unchanged for less than its duration",
                Some(held_by("other", "2026-01-01T09:59:50Z")),
                secs(14),
                other(),
            ),
            (
                "another's, unchanged for its duration",
                Some(held_by("other", "2026-01-01T09:59:50Z")),
                secs(15),
                take.clone(),
            ),
            // The holder's clock is an hour behind ours: its renewTime looks ancient, but it
            // renews (the record changes), so it keeps the Lease.
            (
                "another's, renewed by a skewed clock",
                Some(held_by("other", "2026-01-01T09:00:00Z")),
                secs(2),
                other(),
            ),
            (
                "another's, never renewed, just seen",
                Some(LeaseSpec {
                    holder_identity: Some("other".into()),
                    ..LeaseSpec::default()
                }),
                secs(1),
                other(),
            ),
            (
                "another's, with its own shorter duration",
                Some(LeaseSpec {
                    lease_duration_seconds: Some(5),
                    ..held_by("other", "2026-01-01T09:59:50Z")
                }),
                secs(6),
                take.clone(),
            ),
            (
                "released",
                Some(LeaseSpec::default()),
                secs(0),
                take.clone(),
            ),
        ];
        for (name, spec, unchanged_for, expected) in cases {
            assert_eq!(
                decide(spec.as_ref(), "me", unchanged_for, d),
                expected,
                "{name}"
            );
        }
    }
}
