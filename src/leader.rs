//! Leader election on a `coordination.k8s.io` Lease, so that several replicas can run and only
//! one of them calls the NetSapiens API and writes. The decision is pure (`decide`); the loop
//! around it reads and writes the Lease with optimistic concurrency.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tracing::{debug, info, warn};

use crate::clock::Clock;

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

/// Decides from the Lease as read. Pure: `now` is given.
pub fn decide(
    spec: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
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
        .map(|s| SignedDuration::from_secs(i64::from(s)))
        .unwrap_or_else(|| SignedDuration::try_from(default_duration).unwrap_or_default());
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(at) if now < at + duration => LeaseAction::Wait { holder },
        _ => LeaseAction::Acquire { transition: true },
    }
}

/// Holds or competes for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
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

    /// Renews the Lease until renewal fails for longer than the renew deadline; then returns,
    /// and the caller must stop acting as leader.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("the lease was taken by another replica");
                    return;
                }
                Err(error) => {
                    warn!(%error, "could not renew the lease");
                    if last_renewal.elapsed() > self.config.renew_deadline {
                        return;
                    }
                }
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

    /// One round: read, decide, write. `Ok(true)` when this replica holds the Lease afterwards.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = self.clock.now();
        let existing = self.api.get_opt(&self.config.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let transition = match decide(spec, &self.config.identity, now, self.config.lease_duration)
        {
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

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let d = Duration::from_secs(15);
        let now = t("2026-01-01T10:00:00Z");
        let cases = [
            ("no lease", None, LeaseAction::Acquire { transition: true }),
            (
                "ours",
                Some(held_by("me", "2026-01-01T09:59:59Z")),
                LeaseAction::Acquire { transition: false },
            ),
            (
                "another's, fresh",
                Some(held_by("other", "2026-01-01T09:59:50Z")),
                LeaseAction::Wait {
                    holder: "other".into(),
                },
            ),
            (
                "another's, expired",
                Some(held_by("other", "2026-01-01T09:59:44Z")),
                LeaseAction::Acquire { transition: true },
            ),
            (
                "another's, never renewed",
                Some(LeaseSpec {
                    holder_identity: Some("other".into()),
                    ..LeaseSpec::default()
                }),
                LeaseAction::Acquire { transition: true },
            ),
            (
                "released",
                Some(LeaseSpec::default()),
                LeaseAction::Acquire { transition: true },
            ),
        ];
        for (name, spec, expected) in cases {
            assert_eq!(decide(spec.as_ref(), "me", now, d), expected, "{name}");
        }
    }
}
