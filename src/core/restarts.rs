//! The pure decisions about the pods and workloads that read a credential's token: whether a
//! `rolloutRestartTargets` workload consents to be restarted by this credential, when it is due
//! a restart, when a failed restart is tried again, and which pods read the token in a way that
//! never sees a new one (env vars, `subPath` mounts). The API calls are `cluster::consumers`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::core::clock::later;
use crate::core::crd::{RolloutRestartTarget, WorkloadKind, WorkloadRestart};

/// The least time between two restarts of one workload.
pub const MIN_RESTART_INTERVAL: SignedDuration = SignedDuration::from_secs(60);
/// Pods named in a condition, at most.
pub const MAX_NAMED_PODS: usize = 5;
/// The annotation (on a workload's own metadata, not its pod template) by which a workload that
/// does not reference the output Secret consents to restarts by credentials of its namespace:
/// a comma-separated list of credential names, or `*` for any.
pub const ALLOW_RESTART_ANNOTATION: &str = "nsapi.io/allow-restart-by";
/// The first retry of a restart that failed for a reason that passes (a 5xx, a timeout, a
/// conflict, a rate limit): then as long as the token has been waiting for the restart, so the
/// wait about doubles each time, up to [`RETRY_MAX`].
pub const RETRY_MIN: SignedDuration = SignedDuration::from_secs(10);
/// The longest wait between two retries of a restart that failed for a reason that passes.
pub const RETRY_MAX: SignedDuration = SignedDuration::from_secs(160);
/// When a restart that cannot work as things are (RBAC, an invalid object) or a target that
/// does not consent is looked at again (a change to the credential looks at once).
pub const RECHECK: SignedDuration = SignedDuration::from_secs(600);

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

/// Why a target may be restarted by a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Its pod template references the output Secret (a volume, `env` or `envFrom`).
    ReadsTheSecret,
    /// Its [`ALLOW_RESTART_ANNOTATION`] names the credential, or is `*`.
    Annotated,
    /// Neither: it is not restarted.
    Refused,
}

impl Consent {
    pub fn given(self) -> bool {
        self != Consent::Refused
    }
}

/// Pure: whether a workload consents to restarts by the credential `credential` whose output
/// Secret is `secret`. `annotations` are the workload's own (not its pod template's): editing
/// them is a change to the workload, which the credential's editor may not be allowed to make.
pub fn consent(
    annotations: Option<&BTreeMap<String, String>>,
    template: Option<&PodSpec>,
    secret: &str,
    credential: &str,
) -> Consent {
    if template.is_some_and(|spec| references(spec, secret)) {
        return Consent::ReadsTheSecret;
    }
    let allowed = annotations
        .and_then(|a| a.get(ALLOW_RESTART_ANNOTATION))
        .is_some_and(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|name| name == "*" || name == credential)
        });
    if allowed {
        Consent::Annotated
    } else {
        Consent::Refused
    }
}

/// Whether a pod spec reads `secret` at all: a volume (`secret` or a projected source), or
/// `env[].valueFrom.secretKeyRef` or `envFrom[].secretRef` in any container or init container.
fn references(spec: &PodSpec, secret: &str) -> bool {
    !secret_volumes(spec, secret).is_empty()
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| reads_by_env(c, secret))
}

/// The names of the volumes that hold `secret`.
fn secret_volumes<'a>(spec: &'a PodSpec, secret: &str) -> Vec<&'a str> {
    spec.volumes
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
        .collect()
}

/// Whether a container reads `secret` through `env` or `envFrom`.
fn reads_by_env(c: &k8s_openapi::api::core::v1::Container, secret: &str) -> bool {
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
    env || env_from
}

/// Whether a failed restart is worth trying again soon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// It may work in a moment: no answer (a timeout, a broken connection), a 5xx, a conflict
    /// (409), a rate limit (429), a 404 between the read and the write.
    Transient,
    /// It cannot work as things are: RBAC (403, 401), an invalid request (400, 422), ...
    Permanent,
}

/// Pure: the kind of a failure from its HTTP status code (`None`: no answer).
pub fn failure_kind(code: Option<u16>) -> FailureKind {
    match code {
        None | Some(404 | 408 | 409 | 425 | 429) => FailureKind::Transient,
        Some(code) if code >= 500 => FailureKind::Transient,
        Some(_) => FailureKind::Permanent,
    }
}

/// A target that could not be read or restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartFailure {
    /// The workload's kind and name.
    pub kind: String,
    pub name: String,
    /// The API's words (they name no secret).
    pub why: String,
    pub failure: FailureKind,
}

/// What happened to the targets in one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestartReport {
    /// Restarted now: `(kind, name)`.
    pub restarted: Vec<(String, String)>,
    /// Could not be read or restarted.
    pub failed: Vec<RestartFailure>,
    /// Not restarted: the workload neither references the output Secret nor carries
    /// [`ALLOW_RESTART_ANNOTATION`] for this credential: `(kind, name)`.
    pub not_consented: Vec<(String, String)>,
    /// Missing: `(kind, name)`.
    pub missing: Vec<(String, String)>,
    /// To restart later: `(kind, name, when)`.
    pub pending: Vec<(String, String, Timestamp)>,
    /// The last restart of each target, for the status (targets no longer in the spec are
    /// dropped).
    pub records: Vec<WorkloadRestart>,
    /// How many targets the spec names (none: no condition).
    pub targets: usize,
    /// The credential's name and its output Secret's, for the messages.
    pub credential: String,
    pub token_secret: String,
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
    let volumes = secret_volumes(spec, secret);
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            let sub_path = c.volume_mounts.iter().flatten().any(|m| {
                volumes.contains(&m.name.as_str())
                    && (m.sub_path.as_deref().is_some_and(|p| !p.is_empty())
                        || m.sub_path_expr.as_deref().is_some_and(|p| !p.is_empty()))
            });
            reads_by_env(c, secret) || sub_path
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

/// Pure: how long to wait before retrying a restart that failed for a reason that passes, for
/// the token issued at `token_issued`: as long as the token has waited for it, at least
/// [`RETRY_MIN`] and at most [`RETRY_MAX`] (10 s, 10 s, 20 s, 40 s, ... from a new token). A new
/// token starts again from [`RETRY_MIN`].
pub fn retry_delay(token_issued: Option<Timestamp>, now: Timestamp) -> SignedDuration {
    let waited = token_issued.map_or(SignedDuration::ZERO, |at| now.duration_since(at));
    waited.clamp(RETRY_MIN, RETRY_MAX)
}

/// Pure: when a pass is next needed for the targets: a pending restart's time, a transient
/// failure's retry ([`retry_delay`]), or, for a permanent failure or a target that does not
/// consent, [`RECHECK`] from now. `None`: nothing to do until something changes.
pub fn next_attempt(
    report: &RestartReport,
    token_issued: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    let pending = report.pending.iter().map(|(_, _, at)| *at).min();
    let failed = |kind| report.failed.iter().any(|f| f.failure == kind);
    let retry = failed(FailureKind::Transient).then(|| later(now, retry_delay(token_issued, now)));
    let recheck = (failed(FailureKind::Permanent) || !report.not_consented.is_empty())
        .then(|| later(now, RECHECK));
    [pending, retry, recheck].into_iter().flatten().min()
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

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_workload_consents_by_reading_the_secret_or_by_its_annotation() {
        let app = |extra| json!({"containers": [container(extra)]});
        let reads = [
            (
                "a secret volume",
                json!({"containers": [container(json!({}))], "volumes": [{"name": "t", "secret": {"secretName": "tok"}}]}),
            ),
            (
                "a projected volume",
                json!({"containers": [container(json!({}))], "volumes": [{"name": "p", "projected": {"sources": [{"configMap": {"name": "tok"}}, {"secret": {"name": "tok"}}]}}]}),
            ),
            (
                "env secretKeyRef",
                app(
                    json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "access_token"}}}]}),
                ),
            ),
            (
                "envFrom secretRef",
                app(
                    json!({"envFrom": [{"configMapRef": {"name": "x"}}, {"secretRef": {"name": "tok"}}]}),
                ),
            ),
            (
                "an init container",
                json!({"containers": [container(json!({}))], "initContainers": [container(json!({"envFrom": [{"secretRef": {"name": "tok"}}]}))]}),
            ),
            (
                "a second container",
                json!({"containers": [container(json!({})), container(json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}}]}))]}),
            ),
        ];
        for (name, value) in reads {
            let spec = spec(value);
            assert_eq!(
                consent(None, Some(&spec), "tok", "abc"),
                Consent::ReadsTheSecret,
                "{name}"
            );
            assert!(consent(None, Some(&spec), "tok", "abc").given(), "{name}");
        }

        let unrelated = spec(json!({
            "containers": [container(json!({
                "envFrom": [{"secretRef": {"name": "other"}}, {"configMapRef": {"name": "tok"}}],
                "env": [
                    {"name": "A", "value": "tok"},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "tok", "key": "k"}}}
                ]
            }))],
            "volumes": [
                {"name": "c", "configMap": {"name": "tok"}},
                {"name": "o", "secret": {"secretName": "other"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "other"}}]}}
            ]
        }));
        let annotated =
            |value: &str| BTreeMap::from([(ALLOW_RESTART_ANNOTATION.to_owned(), value.to_owned())]);
        let cases = [
            ("nothing", None, Consent::Refused),
            ("the credential", Some(annotated("abc")), Consent::Annotated),
            ("any credential", Some(annotated("*")), Consent::Annotated),
            ("a list", Some(annotated("other, abc")), Consent::Annotated),
            (
                "another credential",
                Some(annotated("abcd")),
                Consent::Refused,
            ),
            ("empty", Some(annotated("")), Consent::Refused),
            (
                "a glob is not a wildcard",
                Some(annotated("ab*")),
                Consent::Refused,
            ),
            (
                "another annotation",
                Some(BTreeMap::from([(
                    "nsapi.io/allow".to_owned(),
                    "abc".to_owned(),
                )])),
                Consent::Refused,
            ),
        ];
        for (name, annotations, expected) in cases {
            assert_eq!(
                consent(annotations.as_ref(), Some(&unrelated), "tok", "abc"),
                expected,
                "{name}"
            );
            assert_eq!(
                consent(annotations.as_ref(), None, "tok", "abc"),
                expected,
                "{name}, no template"
            );
        }
        assert!(!consent(None, Some(&unrelated), "tok", "abc").given());
    }

    #[test]
    fn only_failures_that_pass_are_retried_soon() {
        for code in [
            None,
            Some(500),
            Some(503),
            Some(504),
            Some(409),
            Some(429),
            Some(404),
        ] {
            assert_eq!(failure_kind(code), FailureKind::Transient, "{code:?}");
        }
        for code in [Some(400), Some(401), Some(403), Some(405), Some(422)] {
            assert_eq!(failure_kind(code), FailureKind::Permanent, "{code:?}");
        }
    }

    #[test]
    fn a_failed_restart_is_retried_with_a_bounded_backoff() {
        let issued = ts("2026-01-01T10:00:00Z");
        let at = |s: i64| later(issued, SignedDuration::from_secs(s));
        // From the token: about 10 s, 10 s, 20 s, 40 s, 80 s, then 160 s until it works.
        let mut now = at(1);
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = retry_delay(Some(issued), now);
            waits.push(wait.as_secs());
            now = later(now, wait);
        }
        assert_eq!(waits, [10, 11, 22, 44, 88, 160, 160, 160, 160]);
        // Never less than the minimum, even with a token from the future or none.
        assert_eq!(retry_delay(Some(at(100)), at(1)), RETRY_MIN);
        assert_eq!(retry_delay(None, at(1)), RETRY_MIN);
        assert_eq!(retry_delay(Some(Timestamp::MIN), Timestamp::MAX), RETRY_MAX);

        let failure = |name: &str, failure| RestartFailure {
            kind: "Deployment".into(),
            name: name.into(),
            why: "x".into(),
            failure,
        };
        let now = at(30);
        let nothing = RestartReport {
            targets: 1,
            ..RestartReport::default()
        };
        assert_eq!(next_attempt(&nothing, Some(issued), now), None);
        let transient = RestartReport {
            failed: vec![failure("a", FailureKind::Transient)],
            ..nothing.clone()
        };
        assert_eq!(next_attempt(&transient, Some(issued), now), Some(at(60)));
        let permanent = RestartReport {
            failed: vec![failure("a", FailureKind::Permanent)],
            ..nothing.clone()
        };
        assert_eq!(next_attempt(&permanent, Some(issued), now), Some(at(630)));
        let refused = RestartReport {
            not_consented: vec![("Deployment".into(), "a".into())],
            ..nothing.clone()
        };
        assert_eq!(next_attempt(&refused, Some(issued), now), Some(at(630)));
        // The soonest of everything that waits.
        let all = RestartReport {
            failed: vec![
                failure("a", FailureKind::Permanent),
                failure("b", FailureKind::Transient),
            ],
            pending: vec![("Deployment".into(), "c".into(), at(45))],
            ..refused.clone()
        };
        assert_eq!(next_attempt(&all, Some(issued), now), Some(at(45)));
        let missing = RestartReport {
            missing: vec![("Deployment".into(), "d".into())],
            ..nothing
        };
        assert_eq!(next_attempt(&missing, Some(issued), now), None);
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
