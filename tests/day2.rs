//! Day-2 operations against the local control plane and nsapi-sim: renewal on demand,
//! revocation checks, rollout restarts of consumers (with their consent, retried after a
//! failure), pods that cannot see a new token, and the metrics the alerts are built on. The
//! operator runs as a real process (see `fixture`).

mod chart;
mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data, grants};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use nsapi_sim::{Fault, SimConfig};
use nsapi_token_operator::core::crd::{NsApiCredential, RENEW_ANNOTATION, RESTARTED_AT_ANNOTATION};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Sets the renewal annotation to `value`.
async fn request_renewal(f: &Fixture, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
    f.credentials()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Adds a label to the credential: a change that makes the operator look again, and nothing
/// else.
async fn poke(f: &Fixture, name: &str, value: &str) {
    let patch = json!({"metadata": {"labels": {"poke": value}}});
    f.credentials()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Event reasons recorded for objects in the test's namespace.
fn event_reasons(f: &Fixture) -> Vec<String> {
    let events: Value = serde_json::from_str(&f.events_json()).unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

fn status_of(cred: &NsApiCredential) -> &nsapi_token_operator::core::crd::NsApiCredentialStatus {
    cred.status.as_ref().expect("a status")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_request_obtains_one_new_token_and_lifts_a_backoff() {
    let mut f = Fixture::new("renew", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    let before = grants(&f);

    // A fresh token is replaced once for one value of the annotation.
    request_renewal(&f, "abc", "2026-11-30T12:00:00Z").await;
    let second = f.wait_new_token("abc-token", &first, secs(30)).await;
    let cred = f
        .wait_condition("abc", "Ready", "True", None, secs(30))
        .await;
    assert_eq!(
        status_of(&cred).last_renew_request.as_deref(),
        Some("2026-11-30T12:00:00Z")
    );
    // Other changes to the credential do not renew again.
    poke(&f, "abc", "1").await;
    tokio::time::sleep(secs(4)).await;
    assert_eq!(grants(&f), before + 1, "one request for one renewal");
    let secret = f.token_secret("abc-token").await.unwrap();
    assert_eq!(data(&secret, "access_token").unwrap(), second);
    assert!(event_reasons(&f).iter().any(|r| r == "RenewRequested"));

    // A refused login backs off for minutes; fixing the account on the portal changes no
    // Secret, so only a renewal request retries at once.
    f.sim
        .set_password(fixture::USERNAME, "changed-on-the-portal");
    f.sim.revoke_refresh_tokens();
    request_renewal(&f, "abc", "2026-11-30T12:05:00Z").await;
    let cred = f
        .wait_condition(
            "abc",
            "Degraded",
            "True",
            Some("AuthenticationFailed"),
            secs(30),
        )
        .await;
    let retry_at = status_of(&cred).next_refresh_at.clone().unwrap().0;
    let failures = status_of(&cred).consecutive_failures;
    assert!(failures >= 1);
    f.sim.set_password(fixture::USERNAME, &f.password.clone());
    let requests = grants(&f);
    tokio::time::sleep(secs(4)).await;
    assert_eq!(grants(&f), requests, "the backoff holds without a request");
    assert!(
        retry_at > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30),
        "the backoff is long: {retry_at}"
    );
    request_renewal(&f, "abc", "2026-11-30T12:06:00Z").await;
    let cred = f
        .wait_condition("abc", "Degraded", "False", None, secs(30))
        .await;
    assert_eq!(status_of(&cred).consecutive_failures, 0);
    assert_eq!(
        status_of(&cred).last_renew_request.as_deref(),
        Some("2026-11-30T12:06:00Z")
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_is_replaced_and_a_failed_check_keeps_the_token() {
    let mut f = Fixture::new("verify", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("abc", |spec| spec["verifyInterval"] = json!("1m"))
        .await;
    let cred = f.wait_ready("abc", READY_TIMEOUT).await;
    let issued = status_of(&cred).issued_at.clone().unwrap().0;
    // A new token counts as checked: the first check is an interval later.
    assert_eq!(
        status_of(&cred).last_verified_at.as_ref().map(|t| t.0),
        Some(issued)
    );
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    let reads = f.sim.stats().read_requests;

    // The first check fails for a reason other than a refusal: the token stays.
    f.sim.inject(Fault::ReadStatus {
        status: 503,
        count: 1,
    });
    let wait_reads = |n: u64| {
        let f = &f;
        async move {
            control_plane::eventually(&format!("{n} token checks"), secs(150), || async {
                (f.sim.stats().read_requests >= n).then_some(())
            })
            .await
        }
    };
    wait_reads(reads + 1).await;
    tokio::time::sleep(secs(3)).await;
    let secret = f.token_secret("abc-token").await.unwrap();
    assert_eq!(data(&secret, "access_token").unwrap(), first);
    let cred = f.credential("abc").await;
    assert_eq!(
        status_of(&cred).last_verified_at.as_ref().map(|t| t.0),
        Some(issued),
        "a failed check vouches for nothing"
    );
    assert!(!event_reasons(&f).iter().any(|r| r == "TokenRevoked"));

    // The token is revoked on the portal: the next check (a minute later) replaces it.
    f.sim.revoke_token(&first);
    let before = grants(&f);
    let second = f.wait_new_token("abc-token", &first, secs(150)).await;
    assert!(f.sim.is_token_valid(&second));
    let cred = control_plane::eventually("the status of the new token", secs(30), || async {
        let cred = f.credential("abc").await;
        let status = cred.status.as_ref()?;
        (status.last_verified_at.as_ref().map(|t| t.0) > Some(issued)
            && status.condition("Ready")?.status == "True")
            .then_some(cred)
    })
    .await;
    assert!(
        grants(&f) - before <= 2,
        "a refresh (and at most a fallback)"
    );
    assert!(event_reasons(&f).iter().any(|r| r == "TokenRevoked"));
    assert!(status_of(&cred).issued_at.as_ref().map(|t| t.0) > Some(issued));
    eprintln!(
        "measure: token checks {} (one failed, one refused); grants for the revoked token {}",
        f.sim.stats().read_requests - reads,
        grants(&f) - before
    );
    f.assert_no_secret_leaked().await;
}

/// A Deployment whose pods read `secret` through env vars, as an app that reads its token once.
fn deployment(name: &str, secret: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "localhost/none:1",
                    "envFrom": [{"secretRef": {"name": secret}}]
                }]}
            }
        }
    }))
    .unwrap()
}

/// The `nsapi.io/restarted-at` annotation of a Deployment's pod template.
async fn restarted_at(f: &Fixture, name: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(f.client.clone(), f.namespace())
        .get(name)
        .await
        .unwrap();
    d.spec
        .template
        .metadata?
        .annotations?
        .get(RESTARTED_AT_ANNOTATION)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_targets_restart_once_per_token_and_static_readers_are_named() {
    let mut f = Fixture::new("restart", SimConfig::new()).await;
    f.create_input_secrets().await;
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), f.namespace());
    deployments
        .create(&PostParams::default(), &deployment("reporter", "abc-token"))
        .await
        .unwrap();
    // A bare pod that reads the token through an env var, covered by no target (it stays
    // Pending: the plain control plane has no node). Its ServiceAccount comes with the
    // namespace, a moment later.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "dialer"},
        "spec": {"containers": [{
            "name": "app", "image": "localhost/none:1",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "abc-token", "key": "access_token"}}}]
        }]}
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(f.client.clone(), f.namespace());
    control_plane::eventually("the pod to be created", secs(30), || async {
        pods.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    // A pod of the Deployment, which the target covers. The plain control plane runs no
    // Deployment controller: its ReplicaSet and pod are made here as that controller would.
    let replica_set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "reporter-5d8f7c9b4", "labels": {"app": "reporter"}},
        "spec": {"selector": {"matchLabels": {"app": "reporter"}}, "template": {
            "metadata": {"labels": {"app": "reporter"}},
            "spec": {"containers": [{"name": "app", "image": "localhost/none:1"}]}
        }}
    }))
    .unwrap();
    let replica_set = Api::<ReplicaSet>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &replica_set)
        .await
        .unwrap();
    let mut owned = deployment("reporter", "abc-token").spec.template;
    let meta = owned.metadata.get_or_insert_default();
    meta.name = Some("reporter-5d8f7c9b4-x7k2p".into());
    meta.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reporter-5d8f7c9b4",
            "uid": replica_set.metadata.uid, "controller": true
        }))
        .unwrap(),
    ]);
    let owned = Pod {
        metadata: owned.metadata.unwrap(),
        spec: owned.spec,
        status: None,
    };
    pods.create(&PostParams::default(), &owned).await.unwrap();

    f.start_operator_as(&control_plane::admin_kubeconfig(), &["--consumer-check"]);
    f.create_credential("abc", |spec| {
        spec["rolloutRestartTargets"] = json!([
            {"kind": "Deployment", "name": "reporter"},
            {"kind": "StatefulSet", "name": "absent"},
        ])
    })
    .await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    // A missing target is a condition, not a failure of the token.
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "False",
            Some("RestartTargetMissing"),
            secs(30),
        )
        .await;
    let condition = status_of(&cred).condition("RolloutRestart").unwrap();
    assert!(
        condition.message.contains("StatefulSet \"absent\""),
        "{}",
        condition.message
    );
    assert_eq!(status_of(&cred).condition("Ready").unwrap().status, "True");
    // The Deployment was created before the token: it is restarted for it.
    let first_restart = control_plane::eventually("a restart", secs(30), || async {
        restarted_at(&f, "reporter").await
    })
    .await;
    let cred = f.credential("abc").await;
    let restarts = &status_of(&cred).restarts;
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert_eq!(
        (restarts[0].kind.as_str(), restarts[0].name.as_str()),
        ("Deployment", "reporter")
    );
    // The bare pod is named; the Deployment's pods are not (a restart covers them).
    let cred = f
        .wait_condition("abc", "ConsumersCannotRefresh", "True", None, secs(30))
        .await;
    let message = &status_of(&cred)
        .condition("ConsumersCannotRefresh")
        .unwrap()
        .message;
    assert!(
        message.starts_with("1 pod(s)") && message.contains("dialer"),
        "{message}"
    );
    assert!(!message.contains("reporter"), "{message}");
    assert!(
        event_reasons(&f)
            .iter()
            .any(|r| r == "ConsumersCannotRefresh")
    );
    assert!(event_reasons(&f).iter().any(|r| r == "RolloutRestarted"));

    // Drop the missing target. Passes without a new token restart nothing.
    let patch =
        json!({"spec": {"rolloutRestartTargets": [{"kind": "Deployment", "name": "reporter"}]}});
    f.credentials()
        .patch("abc", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    f.wait_condition(
        "abc",
        "RolloutRestart",
        "True",
        Some("RolloutRestarted"),
        secs(30),
    )
    .await;
    poke(&f, "abc", "1").await;
    tokio::time::sleep(secs(3)).await;
    assert_eq!(
        restarted_at(&f, "reporter").await.as_ref(),
        Some(&first_restart)
    );

    // A new token within a minute of the last restart: the restart waits for the minute.
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    request_renewal(&f, "abc", "2026-11-30T12:00:00Z").await;
    f.wait_new_token("abc-token", &token, secs(30)).await;
    let second_restart = control_plane::eventually("the next restart", secs(90), || async {
        restarted_at(&f, "reporter")
            .await
            .filter(|at| *at != first_restart)
    })
    .await;
    let (a, b): (jiff::Timestamp, jiff::Timestamp) = (
        first_restart.parse().unwrap(),
        second_restart.parse().unwrap(),
    );
    assert!(
        b.duration_since(a) >= jiff::SignedDuration::from_secs(60),
        "restarts of one target at least a minute apart: {a} then {b}"
    );
    f.wait_condition(
        "abc",
        "RolloutRestart",
        "True",
        Some("RolloutRestarted"),
        secs(30),
    )
    .await;
    // Once per token: more passes do not restart again.
    poke(&f, "abc", "2").await;
    tokio::time::sleep(secs(3)).await;
    assert_eq!(
        restarted_at(&f, "reporter").await.as_ref(),
        Some(&second_restart)
    );
    eprintln!("measure: restarts of one target {a} and {b} (renewal right after the first)");
    f.assert_no_secret_leaked().await;
}

/// The chart's Role and RoleBinding for the operator identity with scope=namespace, in the
/// test's namespace only (so no other test's cluster-wide grants are touched), with or without
/// `rolloutRestart.enabled`.
async fn grant_in_namespace(f: &Fixture, restarts: bool) {
    let watch = format!("watchNamespaces={{{}}}", f.namespace());
    let restarts = format!("rolloutRestart.enabled={restarts}");
    let objects = chart::render(
        "nsapi-token-operator",
        "nsapi-system",
        &[
            "scope=namespace",
            &watch,
            &restarts,
            "fullnameOverride=nsapi-token-operator",
        ],
    );
    let params = PatchParams::apply("nsapi-test").force();
    let name = "nsapi-token-operator";
    let role: Role = serde_json::from_value(chart::of_kind(&objects, "Role")[0].clone()).unwrap();
    let binding: RoleBinding =
        serde_json::from_value(chart::of_kind(&objects, "RoleBinding")[0].clone()).unwrap();
    Api::<Role>::namespaced(f.client.clone(), f.namespace())
        .patch(name, &params, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(f.client.clone(), f.namespace())
        .patch(name, &params, &Patch::Apply(&binding))
        .await
        .unwrap();
    tokio::time::sleep(secs(2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_the_operator_may_not_make_are_a_condition_until_granted() {
    let mut f = Fixture::new("restart-rbac", SimConfig::new()).await;
    f.create_input_secrets().await;
    Api::<Deployment>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &deployment("reporter", "abc-token"))
        .await
        .unwrap();
    grant_in_namespace(&f, false).await;
    f.start_operator_as(&control_plane::operator_kubeconfig(), &[]);
    f.create_credential("abc", |spec| {
        spec["rolloutRestartTargets"] = json!([{"kind": "Deployment", "name": "reporter"}])
    })
    .await;
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "False",
            Some("RestartFailed"),
            READY_TIMEOUT,
        )
        .await;
    let message = &status_of(&cred)
        .condition("RolloutRestart")
        .unwrap()
        .message;
    assert!(message.contains("rolloutRestart.enabled"), "{message}");
    assert_eq!(status_of(&cred).condition("Ready").unwrap().status, "True");
    // Without --consumer-check, consumers are not checked (no condition, no pod list).
    assert!(
        status_of(&cred)
            .condition("ConsumersCannotRefresh")
            .is_none()
    );

    // Granted (the chart's rolloutRestart.enabled), the next pass restarts the target.
    grant_in_namespace(&f, true).await;
    poke(&f, "abc", "1").await;
    f.wait_condition(
        "abc",
        "RolloutRestart",
        "True",
        Some("RolloutRestarted"),
        secs(30),
    )
    .await;
    assert!(restarted_at(&f, "reporter").await.is_some());
    f.assert_no_secret_leaked().await;
}

/// A Deployment whose pods do not read the credential's Secret, with `annotations` on the
/// Deployment itself.
fn bystander(name: &str, annotations: Value) -> Deployment {
    let mut d = deployment(name, "unrelated");
    d.metadata.annotations = serde_json::from_value(annotations).unwrap();
    d
}

/// A Deployment that mounts `secret` as a volume (no env var).
fn mounter(name: &str, secret: &str) -> Deployment {
    let mut d = deployment(name, secret);
    d.spec.template.spec = serde_json::from_value(json!({
        "containers": [{"name": "app", "image": "localhost/none:1",
            "volumeMounts": [{"name": "token", "mountPath": "/var/run/nsapi"}]}],
        "volumes": [{"name": "token", "secret": {"secretName": secret}}]
    }))
    .unwrap();
    d
}

/// Finding 8 of issue 17: a credential's editor cannot restart a workload of the namespace
/// that does not read the token and has not opted in.
#[tokio::test(flavor = "multi_thread")]
async fn restart_targets_need_consent_from_the_target() {
    let mut f = Fixture::new("restart-consent", SimConfig::new()).await;
    f.create_input_secrets().await;
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), f.namespace());
    // Opted in for another credential only: no consent for "abc".
    let others = json!({"nsapi.io/allow-restart-by": "other-credential"});
    for d in [
        bystander("bystander", others),
        mounter("mounter", "abc-token"),
    ] {
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    f.start_operator_as(&control_plane::admin_kubeconfig(), &[]);
    f.create_credential("abc", |spec| {
        spec["rolloutRestartTargets"] = json!([
            {"kind": "Deployment", "name": "bystander"},
            {"kind": "Deployment", "name": "mounter"},
        ])
    })
    .await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "False",
            Some("RestartNotConsented"),
            secs(30),
        )
        .await;
    let message = &status_of(&cred)
        .condition("RolloutRestart")
        .unwrap()
        .message;
    for text in [
        "Deployment \"bystander\" was not restarted",
        "reference the Secret \"abc-token\"",
        "nsapi.io/allow-restart-by: \"abc\"",
    ] {
        assert!(message.contains(text), "{text:?} not in {message}");
    }
    assert!(!message.contains("mounter"), "{message}");
    // The Deployment that mounts the Secret is restarted as before; the bystander is not.
    control_plane::eventually("the mounter's restart", secs(30), || async {
        restarted_at(&f, "mounter").await
    })
    .await;
    assert_eq!(restarted_at(&f, "bystander").await, None);
    let cred = f.credential("abc").await;
    let restarted: Vec<&str> = status_of(&cred)
        .restarts
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(restarted, ["mounter"]);
    assert_eq!(status_of(&cred).condition("Ready").unwrap().status, "True");
    control_plane::eventually("a RestartNotConsented Event", secs(30), || async {
        event_reasons(&f)
            .iter()
            .any(|r| r == "RestartNotConsented")
            .then_some(())
    })
    .await;

    // The workload opts in for this credential: the next pass restarts it, for the same token.
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    let patch = json!({"metadata": {"annotations": {"nsapi.io/allow-restart-by": "other-credential, abc"}}});
    deployments
        .patch("bystander", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    poke(&f, "abc", "1").await;
    f.wait_condition(
        "abc",
        "RolloutRestart",
        "True",
        Some("RolloutRestarted"),
        secs(30),
    )
    .await;
    assert!(restarted_at(&f, "bystander").await.is_some());
    assert_eq!(
        data(&f.token_secret("abc-token").await.unwrap(), "access_token").as_ref(),
        Some(&token),
        "no new token was needed"
    );
    f.assert_no_secret_leaked().await;
}

/// Deletes a cluster-scoped ValidatingWebhookConfiguration when dropped.
struct WebhookGuard(String);

impl Drop for WebhookGuard {
    fn drop(&mut self) {
        control_plane::kubectl(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.0,
            "--ignore-not-found",
        ]);
    }
}

/// Finding 4 of issue 17: a restart that fails for a reason that passes is retried with a
/// short backoff, not at the next token. The failure is real: a validating webhook whose
/// endpoint does not answer, with `failurePolicy: Fail`, makes the API server answer the
/// operator's PATCH with 500 (only in this test's namespace).
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_that_failed_for_a_passing_reason_is_retried_without_a_new_token() {
    let mut f = Fixture::new("restart-retry", SimConfig::new()).await;
    f.create_input_secrets().await;
    Api::<Deployment>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &deployment("reporter", "abc-token"))
        .await
        .unwrap();
    let webhook = WebhookGuard(format!("nsapi-test-{}", f.namespace()));
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": webhook.0},
        "webhooks": [{
            "name": "unreachable.nsapi.test",
            "clientConfig": {"url": "https://127.0.0.1:1/validate"},
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["deployments"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f.namespace()}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 2
        }]
    });
    let out = control_plane::kubectl_stdin(&["apply", "-f", "-"], &config.to_string());
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(secs(2)).await;

    f.start_operator_as(&control_plane::admin_kubeconfig(), &[]);
    f.create_credential("abc", |spec| {
        spec["rolloutRestartTargets"] = json!([{"kind": "Deployment", "name": "reporter"}])
    })
    .await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "False",
            Some("RestartFailed"),
            secs(30),
        )
        .await;
    let message = &status_of(&cred)
        .condition("RolloutRestart")
        .unwrap()
        .message;
    assert!(
        message.contains("(500)") && message.contains("tried again"),
        "{message}"
    );
    let issued = status_of(&cred).issued_at.clone();
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    // Let a retry or two fail too, then let the PATCH through. Nothing else changes: only the
    // operator's own retry can restart the workload now.
    tokio::time::sleep(secs(15)).await;
    assert_eq!(restarted_at(&f, "reporter").await, None);
    drop(webhook);
    let fixed = std::time::Instant::now();
    control_plane::eventually("the retried restart", secs(90), || async {
        restarted_at(&f, "reporter").await
    })
    .await;
    let waited = fixed.elapsed();
    let cred = f
        .wait_condition(
            "abc",
            "RolloutRestart",
            "True",
            Some("RolloutRestarted"),
            secs(30),
        )
        .await;
    assert_eq!(status_of(&cred).issued_at, issued, "the same token");
    assert_eq!(
        data(&f.token_secret("abc-token").await.unwrap(), "access_token").as_ref(),
        Some(&token)
    );
    eprintln!(
        "measure: restart retried {} s after the failure's cause went",
        waited.as_secs()
    );
    f.assert_no_secret_leaked().await;
}

/// The value of one sample in a Prometheus text exposition.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_alerts_need_follow_each_credential() {
    let mut f = Fixture::new("alert-metrics", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.create_wrong_subscriber_secret().await;
    f.start_operator();
    f.create_credential("good", |spec| spec["refreshBefore"] = json!("15m"))
        .await;
    f.create_credential("bad", |spec| {
        spec["subscriberSecretRef"] = json!({"name": "wrong-subscriber"})
    })
    .await;
    f.wait_ready("good", READY_TIMEOUT).await;
    f.wait_condition(
        "bad",
        "Ready",
        "False",
        Some("AuthenticationFailed"),
        READY_TIMEOUT,
    )
    .await;
    let (code, metrics) = f.operator_http("/metrics").await;
    assert_eq!(code, 200);
    let ns = f.namespace().to_owned();
    let good = format!("namespace=\"{ns}\",name=\"good\"");
    let bad = format!("namespace=\"{ns}\",name=\"bad\"");
    let p = "nsapi_token_operator_";
    assert_eq!(
        sample(&metrics, &format!("{p}credential_ready"), &good),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, &format!("{p}credential_ready"), &bad),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("{p}credential_consecutive_failures"),
            &bad
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, &format!("{p}token_refresh_lead_seconds"), &good),
        Some(900.0)
    );
    assert!(
        sample(
            &metrics,
            &format!("{p}token_expiry_timestamp_seconds"),
            &good
        )
        .is_some()
    );
    assert!(
        sample(
            &metrics,
            &format!("{p}token_expiry_timestamp_seconds"),
            &bad
        )
        .is_none()
    );
    let ready_series: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{p}credential_condition{{"))
                && l.contains("condition=\"Ready\"")
        })
        .collect();
    assert!(
        ready_series
            .iter()
            .any(|l| l.contains(&good) && l.contains("status=\"True\"") && l.ends_with(" 1")),
        "{ready_series:?}"
    );
    assert!(
        ready_series
            .iter()
            .any(|l| l.contains(&bad) && l.contains("status=\"False\"") && l.ends_with(" 1")),
        "{ready_series:?}"
    );
    // Only the status a condition has: no series for the others.
    assert_eq!(ready_series.len(), 2, "{ready_series:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        metrics.lines().any(|l| l.starts_with(&format!(
            "{p}build_info{{version=\"{version}\",git_commit=\""
        )) && l.contains(",rustc=\"rustc ")
            && l.ends_with("} 1")),
        "no build_info"
    );

    // A deleted credential leaves no series behind.
    f.delete_credential("bad").await;
    control_plane::eventually(
        "the deleted credential's series to go",
        secs(30),
        || async {
            let (_, metrics) = f.operator_http("/metrics").await;
            (!metrics.contains(&bad)).then_some(())
        },
    )
    .await;
    f.assert_no_secret_leaked().await;
}
