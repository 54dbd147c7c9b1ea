//! The pure decisions about the pods and workloads that read a credential's token: when a
//! `rolloutRestartTargets` workload is due a restart, and which pods read the token in a way
//! that never sees a new one (env vars, `subPath` mounts). The API calls are `cluster::consumers`.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::core::clock::later;
use crate::core::crd::{RolloutRestartTarget, WorkloadKind, WorkloadRestart};

/// The least time between two restarts of one workload.
pub const MIN_RESTART_INTERVAL: SignedDuration = SignedDuration::from_secs(60);
/// Pods named in a condition, at most.
pub const MAX_NAMED_PODS: usize = 5;

/// What to do about one target for the token in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPlan {
    /// Restarted for this token already.
    Done,
    /// Restart it now.
    Now,
    /// It was restarted less than [`MIN_RESTART_INTERVAL`] ago (maybe for another credential):
    /// restart it at this time.
    Later(Timestamp),
}

/// What is known about one target workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetState {
    /// The last restart this credential made of it (from its status).
    pub ours: Option<Timestamp>,
    /// The restart time its pod template carries (anyone's).
    pub annotation: Option<Timestamp>,
    /// When the workload was created.
    pub created: Option<Timestamp>,
}

/// Pure: whether to restart a target for the token issued at `token_issued`. A workload
/// created or restarted (by anyone) after that already runs with that token. Times are whole
/// seconds: a workload created or restarted by someone else in the token's second may have
/// started before it, so it is restarted.
pub fn plan(target: TargetState, token_issued: Timestamp, now: Timestamp) -> RestartPlan {
    let after_token = |at: Option<Timestamp>| at.is_some_and(|at| at > token_issued);
    if target.ours.is_some_and(|at| at >= token_issued)
        || after_token(target.annotation)
        || after_token(target.created)
    {
        return RestartPlan::Done;
    }
    let annotation = target.annotation;
    match annotation {
        Some(at) if now < later(at, MIN_RESTART_INTERVAL) => {
            RestartPlan::Later(later(at, MIN_RESTART_INTERVAL))
        }
        _ => RestartPlan::Now,
    }
}

/// What happened to the targets in one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestartReport {
    /// Restarted now: `(kind, name)`.
    pub restarted: Vec<(String, String)>,
    /// Refused: `(kind, name, why)`.
    pub failed: Vec<(String, String, String)>,
    /// Missing: `(kind, name)`.
    pub missing: Vec<(String, String)>,
    /// To restart later: `(kind, name, when)`.
    pub pending: Vec<(String, String, Timestamp)>,
    /// The last restart of each target, for the status (targets no longer in the spec are
    /// dropped).
    pub records: Vec<WorkloadRestart>,
    /// How many targets the spec names (none: no condition).
    pub targets: usize,
}

/// Pure: the pods (by name) that read `secret` through an env var (`env`, `envFrom`) or a
/// `subPath` mount, which never see a rotated token, and that no restart target covers.
pub fn stale_consumers(
    pods: &[Pod],
    secret: &str,
    targets: &[RolloutRestartTarget],
) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            pod.metadata.deletion_timestamp.is_none()
                && !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter(|pod| {
            pod.spec
                .as_ref()
                .is_some_and(|spec| reads_statically(spec, secret))
        })
        .filter(|pod| !covered(pod, targets))
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    names.sort();
    names
}

fn reads_statically(spec: &PodSpec, secret: &str) -> bool {
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
                || v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
                })
        })
        .map(|v| v.name.as_str())
        .collect();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            let env = c.env.iter().flatten().any(|e| {
                e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .is_some_and(|r| r.name == secret)
            });
            let env_from = c
                .env_from
                .iter()
                .flatten()
                .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == secret));
            let sub_path = c.volume_mounts.iter().flatten().any(|m| {
                volumes.contains(&m.name.as_str())
                    && (m.sub_path.as_deref().is_some_and(|p| !p.is_empty())
                        || m.sub_path_expr.as_deref().is_some_and(|p| !p.is_empty()))
            });
            env || env_from || sub_path
        })
}

/// Whether a pod belongs to a restart target (a Deployment's pods belong to its ReplicaSets,
/// named `<deployment>-<hash>`).
fn covered(pod: &Pod, targets: &[RolloutRestartTarget]) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|owner| {
        targets.iter().any(|t| match t.kind {
            WorkloadKind::Deployment => {
                owner.kind == "ReplicaSet"
                    && owner
                        .name
                        .rsplit_once('-')
                        .is_some_and(|(deployment, _)| deployment == t.name)
            }
            kind => owner.kind == kind.as_str() && owner.name == t.name,
        })
    })
}

/// Turns the remaining wait of a pending restart into a requeue delay.
pub fn pending_delay(report: &RestartReport, now: Timestamp) -> Option<Duration> {
    report
        .pending
        .iter()
        .map(|(_, _, at)| at.duration_since(now))
        .min()
        .map(|d| {
            Duration::try_from(d)
                .unwrap_or_default()
                .max(Duration::from_secs(1))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_target_restarts_once_per_token_and_at_most_once_a_minute() {
        let issued = ts("2026-01-01T10:00:00Z");
        let now = ts("2026-01-01T10:00:05Z");
        let old = Some(ts("2026-01-01T08:00:00Z"));
        let state = |ours, annotation| TargetState {
            ours,
            annotation,
            created: old,
        };
        // Never restarted.
        assert_eq!(plan(state(None, None), issued, now), RestartPlan::Now);
        // We restarted it for this token already.
        let ours = Some(ts("2026-01-01T10:00:02Z"));
        assert_eq!(plan(state(ours, ours), issued, now), RestartPlan::Done);
        // We restarted it for the previous token, long ago.
        let previous = Some(ts("2026-01-01T09:00:00Z"));
        assert_eq!(
            plan(state(previous, previous), issued, now),
            RestartPlan::Now
        );
        // Someone restarted it 30 s before the token: wait until a minute has passed.
        assert_eq!(
            plan(state(None, Some(ts("2026-01-01T09:59:35Z"))), issued, now),
            RestartPlan::Later(ts("2026-01-01T10:00:35Z"))
        );
        // Someone restarted it after the token was issued, or it was created since: its pods
        // have the token already. In the token's own second, it may not.
        assert_eq!(
            plan(
                state(previous, Some(ts("2026-01-01T10:00:01Z"))),
                issued,
                now
            ),
            RestartPlan::Done
        );
        let created_since = TargetState {
            created: Some(ts("2026-01-01T10:00:03Z")),
            ..TargetState::default()
        };
        assert_eq!(plan(created_since, issued, now), RestartPlan::Done);
        let same_second = TargetState {
            created: Some(issued),
            ..TargetState::default()
        };
        assert_eq!(plan(same_second, issued, now), RestartPlan::Now);
    }

    fn pod(name: &str, spec: serde_json::Value, owner: Option<(&str, &str)>) -> Pod {
        let mut metadata = json!({"name": name});
        if let Some((kind, owner)) = owner {
            metadata["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": true
            }]);
        }
        serde_json::from_value(json!({"metadata": metadata, "spec": spec})).unwrap()
    }

    fn container(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"name": "app", "image": "x"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn pods_that_read_the_token_statically_are_found() {
        let volume = json!([{"name": "t", "secret": {"secretName": "tok"}}]);
        let pods = vec![
            pod(
                "mounted",
                json!({"containers": [container(json!({"volumeMounts": [{"name": "t", "mountPath": "/t"}]}))], "volumes": volume}),
                None,
            ),
            pod(
                "subpath",
                json!({"containers": [container(json!({"volumeMounts": [{"name": "t", "mountPath": "/t", "subPath": "access_token"}]}))], "volumes": volume}),
                None,
            ),
            pod(
                "env",
                json!({"containers": [container(json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "access_token"}}}]}))]}),
                None,
            ),
            pod(
                "envfrom",
                json!({"containers": [container(json!({"envFrom": [{"secretRef": {"name": "tok"}}]}))]}),
                None,
            ),
            pod(
                "other-secret",
                json!({"containers": [container(json!({"envFrom": [{"secretRef": {"name": "other"}}]}))]}),
                None,
            ),
            pod(
                "init-env",
                json!({"containers": [container(json!({}))], "initContainers": [container(json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}}]}))]}),
                None,
            ),
            pod(
                "restarted",
                json!({"containers": [container(json!({"envFrom": [{"secretRef": {"name": "tok"}}]}))]}),
                Some(("ReplicaSet", "reporter-5d8f7c9b4")),
            ),
            pod(
                "projected-subpath",
                json!({"containers": [container(json!({"volumeMounts": [{"name": "p", "mountPath": "/t", "subPath": "x"}]}))], "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "tok"}}]}}]}),
                None,
            ),
        ];
        let targets = vec![RolloutRestartTarget {
            kind: WorkloadKind::Deployment,
            name: "reporter".into(),
        }];
        assert_eq!(
            stale_consumers(&pods, "tok", &targets),
            ["env", "envfrom", "init-env", "projected-subpath", "subpath"]
        );
        assert!(stale_consumers(&pods, "unused", &targets).is_empty());
    }
}
