//! The operator end to end: the real binary against the local control plane (kube-apiserver +
//! etcd + kube-controller-manager) and nsapi-sim. Each test gets its own namespace, simulator
//! and operator process (scoped to that namespace), and ends by checking that no secret value
//! reached the operator's logs (at debug level), events or status.

mod control_plane;
mod fixture;

use std::time::{Duration, Instant};

use fixture::{CLIENT_SECRET_NAME, Fixture, SUBSCRIBER_SECRET_NAME, USERNAME, data, version};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use nsapi_sim::{Fault, RefreshMode, SimConfig, Subscriber};
use nsapi_token_operator::core::clock::rfc3339;
use nsapi_token_operator::core::crd::NsApiCredential;
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The message of a credential's Ready condition.
fn ready_message(cred: &NsApiCredential) -> String {
    let status = cred.status.as_ref().expect("status");
    status
        .condition("Ready")
        .expect("a Ready condition")
        .message
        .clone()
}

/// The common start: input Secrets, the operator, and a credential "abc" that is Ready.
async fn ready_credential(prefix: &str, config: SimConfig) -> (Fixture, NsApiCredential) {
    let mut f = Fixture::new(prefix, config).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let cred = f.wait_ready("abc", READY_TIMEOUT).await;
    (f, cred)
}

#[tokio::test(flavor = "multi_thread")]
async fn create_yields_a_ready_token_secret_that_the_api_accepts() {
    let mut f = Fixture::new("create", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.wait_operator_started().await;
    let started = Instant::now();
    f.create_credential("abc", |_| {}).await;
    let cred = f.wait_ready("abc", READY_TIMEOUT).await;
    eprintln!("measure: create -> Ready latency {:?}", started.elapsed());

    let secret = f.token_secret("abc-token").await.expect("output Secret");
    let token = data(&secret, "access_token").unwrap();
    assert!(token.len() >= 16, "token looks wrong");
    assert_eq!(
        data(&secret, "authorization").unwrap(),
        format!("Bearer {token}")
    );
    assert_eq!(data(&secret, "token_type").as_deref(), Some("Bearer"));
    assert_eq!(data(&secret, "api_base_url").unwrap(), f.sim.base_url());
    assert_eq!(data(&secret, "domain").as_deref(), Some("abc-company"));
    assert!(data(&secret, "scope").is_some());
    let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    assert!(!keys.iter().any(|k| k.contains("refresh")), "{keys:?}");
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("nsapi-token-operator")
    );
    let owner = &secret.owner_references()[0];
    assert_eq!(owner.uid, cred.uid().unwrap());
    assert_eq!(owner.controller, Some(true));

    // The token works against the API, sent exactly as a pod would send it.
    assert!(f.sim.is_token_valid(&token));
    let read = reqwest::Client::new()
        .get(format!("{}oauth2/read?format=json", f.sim.base_url()))
        .header("Authorization", data(&secret, "authorization").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let status = cred.status.as_ref().unwrap();
    assert_eq!(
        status.expires_at.as_ref().map(|t| rfc3339(t.0)),
        data(&secret, "expires_at")
    );
    assert!(status.issued_at.is_some() && status.next_refresh_at.is_some());
    assert!(status.next_refresh_at < status.expires_at);
    assert_eq!(status.last_grant.as_deref(), Some("password"));
    assert_eq!(status.token_secret_name.as_deref(), Some("abc-token"));
    assert_eq!(status.domain.as_deref(), Some("abc-company"));
    assert!(status.scope.is_some() && status.territory.is_some() && status.uid.is_some());
    assert!(status.server_version.is_some());
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.observed_generation, cred.metadata.generation);
    let ready = status.condition("Ready").unwrap();
    assert_eq!(ready.reason, "TokenIssued");
    assert_eq!(ready.observed_generation, cred.metadata.generation);

    // Printer columns.
    let out = control_plane::kubectl(&["get", "nscred", "abc", "-n", f.namespace()]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in ["READY", "DOMAIN", "SCOPE", "EXPIRES", "NEXT REFRESH", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.contains("True") && table.contains("abc-company"),
        "{table}"
    );
    assert!(
        table.contains(&rfc3339(status.expires_at.as_ref().unwrap().0)),
        "{table}"
    );

    let stats = f.sim.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 0));
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_before_expiry_by_refresh_grant_and_falls_back_to_the_password_grant() {
    let (f, first) = ready_credential("rotate", SimConfig::new().token_ttl(secs(20))).await;
    let first_expiry = first.status.clone().unwrap().expires_at.unwrap();
    let t0 = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();

    let t1 = f.wait_new_token("abc-token", &t0, secs(40)).await;
    // Status is written just after the Secret.
    let status = control_plane::eventually("status to show the refresh", secs(10), || async {
        let status = f.credential("abc").await.status?;
        (status.last_grant.as_deref() == Some("refresh_token")).then_some(status)
    })
    .await;
    assert!(
        status.issued_at.unwrap() < first_expiry,
        "the token was replaced only after it expired"
    );
    assert!(f.sim.is_token_valid(&t1));
    let stats = f.sim.stats();
    assert_eq!(stats.password_grants, 1);
    assert!(stats.refresh_grants_ok >= 1);
    eprintln!(
        "measure: rotation by refresh: password={} refresh={} (ok {}) read={}",
        stats.password_grants, stats.refresh_grants, stats.refresh_grants_ok, stats.read_requests
    );

    // The server stops honouring refresh tokens: the operator falls back to a password grant.
    f.sim.revoke_refresh_tokens();
    let t2 = f.wait_new_token("abc-token", &t1, secs(40)).await;
    assert!(f.sim.is_token_valid(&t2));
    let stats = f.sim.stats();
    assert!(stats.password_grants >= 2, "{stats:?}");
    control_plane::eventually("status to show the password grant", secs(10), || async {
        let status = f.credential("abc").await.status?;
        (status.last_grant.as_deref() == Some("password")).then_some(())
    })
    .await;
    f.wait_ready("abc", secs(5)).await;
    assert!(f.events_json().contains("RefreshFallback"));
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_refresh_tokens_are_never_reused() {
    let config = SimConfig::new()
        .token_ttl(secs(8))
        .refresh_mode(RefreshMode::Rotate);
    let (f, _) = ready_credential("rotation-mode", config).await;
    let mut token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    for _ in 0..3 {
        token = f.wait_new_token("abc-token", &token, secs(30)).await;
    }
    let stats = f.sim.stats();
    eprintln!(
        "measure: rotate mode after 3 rotations: password={} refresh_ok={} reuse={}",
        stats.password_grants, stats.refresh_grants_ok, stats.refresh_token_reuse
    );
    assert_eq!(stats.refresh_token_reuse, 0);
    assert!(stats.refresh_grants_ok >= 3, "{stats:?}");
    assert_eq!(stats.password_grants, 1);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_fresh_token_makes_no_request_and_rewrites_nothing() {
    let (mut f, _) = ready_credential("restart", SimConfig::new()).await;
    // Let the write-triggered reconciles settle.
    tokio::time::sleep(secs(2)).await;
    let before = f.sim.stats();
    let secret_version = version(&f.token_secret("abc-token").await.unwrap());
    let cred_version = f.credential("abc").await.resource_version();

    f.stop_operator();
    f.start_operator();
    // Wait until the new process has looked at the credential, then a little longer.
    control_plane::eventually("the restarted operator to reconcile", secs(30), || async {
        f.latest_operator_log()
            .contains("no token needed now")
            .then_some(())
    })
    .await;
    tokio::time::sleep(secs(3)).await;

    let after = f.sim.stats();
    eprintln!(
        "measure: restart: token requests before={} after={}, read requests before={} after={}",
        before.token_requests, after.token_requests, before.read_requests, after.read_requests
    );
    assert_eq!(after.token_requests, before.token_requests);
    assert_eq!(after.read_requests, before.read_requests);
    assert_eq!(
        version(&f.token_secret("abc-token").await.unwrap()),
        secret_version
    );
    assert_eq!(f.credential("abc").await.resource_version(), cred_version);

    // An unrelated edit (a label on the credential) costs nothing either.
    f.credentials()
        .patch(
            "abc",
            &kube::api::PatchParams::apply("nsapi-test"),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "voice"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(secs(3)).await;
    assert_eq!(f.sim.stats().token_requests, before.token_requests);
    assert_eq!(
        version(&f.token_secret("abc-token").await.unwrap()),
        secret_version
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_password_triggers_a_new_password_grant() {
    let (mut f, _) = ready_credential("password-change", SimConfig::new()).await;
    let t0 = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();

    let new_password = format!("pw2-{:016x}", rand::random::<u64>());
    f.sim.set_password(USERNAME, &new_password);
    f.create_subscriber_secret(&new_password).await;
    let t1 = f.wait_new_token("abc-token", &t0, secs(30)).await;
    assert!(f.sim.is_token_valid(&t1));
    let stats = f.sim.stats();
    assert_eq!((stats.password_grants_ok, stats.refresh_grants), (2, 0));
    f.password = new_password; // for the leak check below
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_inputs_are_reported_and_recovered_from() {
    let mut f = Fixture::new("missing", SimConfig::new()).await;
    f.create_client_secret().await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let cred = f
        .wait_condition(
            "abc",
            "Ready",
            "False",
            Some("SecretMissing"),
            READY_TIMEOUT,
        )
        .await;
    let message = ready_message(&cred);
    assert!(message.contains(SUBSCRIBER_SECRET_NAME), "{}", message);
    assert!(f.events_json().contains("SecretMissing"));

    // The Secret appears, without the password key.
    f.put_secret(
        SUBSCRIBER_SECRET_NAME,
        &[("username", USERNAME), ("pass", "x")],
    )
    .await;
    let cred = f
        .wait_condition("abc", "Ready", "False", Some("KeyMissing"), secs(30))
        .await;
    let message = ready_message(&cred);
    assert!(message.contains("\"password\""), "{message}");
    assert_eq!(f.sim.stats().token_requests, 0);

    f.create_subscriber_secret(&f.password.clone()).await;
    f.wait_ready("abc", secs(30)).await;
    assert!(f.token_secret("abc-token").await.is_some());
    assert_eq!(f.sim.stats().password_grants, 1);
    let cred = f.credential("abc").await;
    let degraded = cred.status.as_ref().unwrap().condition("Degraded").unwrap();
    assert_eq!(degraded.status, "False");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_backs_off_instead_of_storming_and_a_fix_retries_at_once() {
    let mut f = Fixture::new("wrong-password", SimConfig::new()).await;
    f.create_client_secret().await;
    f.create_subscriber_secret("not-the-password").await;
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    let cred = f
        .wait_condition(
            "abc",
            "Ready",
            "False",
            Some("AuthenticationFailed"),
            READY_TIMEOUT,
        )
        .await;
    let status = cred.status.as_ref().unwrap();
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(
        status.condition("Degraded").unwrap().reason,
        "AuthenticationFailed"
    );
    assert!(f.events_json().contains("AuthenticationFailed"));

    tokio::time::sleep(secs(60)).await;
    let attempts = f.sim.stats().password_grants;
    eprintln!("measure: password grants in the first minute with a wrong password: {attempts}");
    assert!(
        attempts <= 2,
        "{attempts} password grants in a minute: a retry storm"
    );

    // Fixing the Secret retries at once, not after the backoff.
    f.create_subscriber_secret(&f.password.clone()).await;
    let cred = f.wait_ready("abc", secs(30)).await;
    assert_eq!(cred.status.unwrap().consecutive_failures, 0);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_degrades_but_keeps_the_valid_token_then_recovers() {
    let (f, _) = ready_credential("outage", SimConfig::new().token_ttl(secs(20))).await;
    let t0 = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();

    f.sim.inject(Fault::Status {
        status: 503,
        count: 2,
    });
    let cred = f
        .wait_condition("abc", "Degraded", "True", Some("ApiUnavailable"), secs(30))
        .await;
    let status = cred.status.as_ref().unwrap();
    assert_eq!(status.condition("Ready").unwrap().status, "True");
    assert_eq!(
        data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap(),
        t0,
        "the valid token was replaced during the outage"
    );
    let t1 = f.wait_new_token("abc-token", &t0, secs(30)).await;
    assert!(f.sim.is_token_valid(&t1));
    f.wait_condition("abc", "Degraded", "False", None, secs(10))
        .await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_with_the_output_name_is_left_untouched() {
    let mut f = Fixture::new("conflict", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.put_secret("abc-token", &[("owner", "someone else")])
        .await;
    let before = f.token_secret("abc-token").await.unwrap();
    f.start_operator();
    f.create_credential("abc", |_| {}).await;
    f.wait_condition(
        "abc",
        "Ready",
        "False",
        Some("SecretConflict"),
        READY_TIMEOUT,
    )
    .await;
    tokio::time::sleep(secs(2)).await;
    let after = f.token_secret("abc-token").await.unwrap();
    assert_eq!(version(&after), version(&before));
    assert_eq!(after.data, before.data);
    assert_eq!(f.sim.stats().token_requests, 0);

    // Once the other Secret is gone, the credential takes the name.
    f.secrets()
        .delete("abc-token", &Default::default())
        .await
        .unwrap();
    f.wait_ready("abc", secs(30)).await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_credential_garbage_collects_the_output_secret() {
    let (f, _) = ready_credential("gc", SimConfig::new()).await;
    assert!(f.token_secret("abc-token").await.is_some());
    f.delete_credential("abc").await;
    control_plane::eventually(
        "the output Secret to be garbage-collected",
        secs(60),
        || async { f.token_secret("abc-token").await.is_none().then_some(()) },
    )
    .await;
    assert!(
        f.secrets()
            .get_opt(CLIENT_SECRET_NAME)
            .await
            .unwrap()
            .is_some()
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_blocked_hosts_and_mfa_users_send_no_usable_request() {
    let mut f = Fixture::new("refusals", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &[
            "--allowed-api-host",
            "127.0.0.1",
            "--allowed-api-host",
            "*.example.com",
        ],
    );

    f.create_credential("paused", |s| s["suspend"] = json!(true))
        .await;
    let cred = f
        .wait_condition("paused", "Ready", "False", Some("Suspended"), READY_TIMEOUT)
        .await;
    assert!(cred.status.unwrap().next_refresh_at.is_none());

    let elsewhere = f.sim.base_url().replace("127.0.0.1", "localhost");
    f.create_credential("elsewhere", |s| s["apiBaseUrl"] = json!(elsewhere))
        .await;
    f.wait_condition(
        "elsewhere",
        "Ready",
        "False",
        Some("ApiHostNotAllowed"),
        READY_TIMEOUT,
    )
    .await;
    assert_eq!(f.sim.stats().token_requests, 0, "a request was sent");

    // Resuming issues the token.
    f.credentials()
        .patch(
            "paused",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    f.wait_ready("paused", secs(30)).await;

    // A subscriber with MFA gets no usable token: the operator says so and backs off.
    f.sim
        .add_subscriber(Subscriber::new("mfa@abc-company", "mfa-pass").with_mfa(true));
    f.put_secret(
        "mfa-subscriber",
        &[("username", "mfa@abc-company"), ("password", "mfa-pass")],
    )
    .await;
    f.create_credential("mfa", |s| {
        s["subscriberSecretRef"] = json!({"name": "mfa-subscriber"})
    })
    .await;
    let cred = f
        .wait_condition("mfa", "Ready", "False", Some("MfaRequired"), READY_TIMEOUT)
        .await;
    let message = ready_message(&cred);
    assert!(
        message.contains("MFA") || message.contains("multi-factor"),
        "{message}"
    );
    assert!(f.token_secret("mfa-token").await.is_none());
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_rejects_bad_specs_on_a_server_side_dry_run() {
    let f = Fixture::new("bad-specs", SimConfig::new()).await;
    // (case, field of the spec, bad value or null to remove the field, text the error names)
    #[rustfmt::skip]
    let cases = [
        ("ftp scheme", "/apiBaseUrl", json!("ftp://portal.example.com/ns-api/"), "apiBaseUrl"),
        ("query string", "/apiBaseUrl", json!("https://portal.example.com/ns-api/?a=b"), "apiBaseUrl"),
        ("user info", "/apiBaseUrl", json!("https://u:p@portal.example.com/ns-api/"), "apiBaseUrl"),
        ("not a URL", "/apiBaseUrl", json!("portal.example.com"), "apiBaseUrl"),
        ("bad duration", "/refreshBefore", json!("soon"), "refreshBefore"),
        ("negative duration", "/refreshBefore", json!("-5m"), "refreshBefore"),
        ("unknown token API", "/tokenApi", json!("v3"), "tokenApi"),
        ("unknown method", "/refreshMethod", json!("PUT"), "refreshMethod"),
        ("suspend not a bool", "/suspend", json!("yes"), "suspend"),
        ("output overwrites an input", "/tokenSecret/name", json!(CLIENT_SECRET_NAME), "must differ"),
        ("bad Secret name", "/tokenSecret/name", json!("Bad_Name"), "tokenSecret.name"),
        ("bad key", "/clientSecretRef/clientSecretKey", json!("a/b"), "clientSecretKey"),
        ("reserved label", "/tokenSecret/labels", json!({"app.kubernetes.io/managed-by": "me"}), "managed-by"),
        ("reserved annotation", "/tokenSecret/annotations", json!({"nsapi.io/expires-at": "never"}), "nsapi.io/"),
        ("missing client Secret", "/clientSecretRef", json!(null), "clientSecretRef"),
        ("missing output Secret", "/tokenSecret", json!(null), "tokenSecret"),
    ];
    for (name, field, value, expected) in cases {
        let manifest = f.credential_manifest("bad", |spec| {
            let (parent, key) = field.rsplit_once('/').unwrap();
            let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
            match value {
                serde_json::Value::Null => parent.remove(key),
                value => parent.insert(key.to_owned(), value),
            };
        });
        let out = control_plane::kubectl_stdin(
            &["apply", "--dry-run=server", "-f", "-"],
            &serde_json::to_string(&manifest).unwrap(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            stderr.contains(expected),
            "{name}: error does not mention {expected:?}: {stderr}"
        );
    }
    let good = f.credential_manifest("good", |_| {});
    let out = control_plane::kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        &serde_json::to_string(&good).unwrap(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_leader_that_hands_over_on_shutdown() {
    let mut f = Fixture::new("leader", SimConfig::new().token_ttl(secs(20))).await;
    f.create_input_secrets().await;
    let ns = f.namespace().to_owned();
    let args = ["--leader-election", "--leader-election-namespace", &ns];
    let kubeconfig = control_plane::admin_kubeconfig();
    let first = f.spawn_operator(&kubeconfig, &args);
    control_plane::eventually("the first replica to lead", secs(30), || async {
        first.log().contains("became the leader").then_some(())
    })
    .await;
    let second = f.spawn_operator(&kubeconfig, &args);
    control_plane::eventually("the second replica to stand by", secs(30), || async {
        second.log().contains("standing by").then_some(())
    })
    .await;

    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let t0 = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    assert_eq!(f.sim.stats().password_grants, 1);
    assert!(
        !second.log().contains("obtaining a token"),
        "the standby acted"
    );

    // The leader shuts down and releases the Lease; the standby takes over and rotates.
    assert!(first.stop(), "the leader did not exit on SIGTERM");
    control_plane::eventually("the standby to take over", secs(30), || async {
        second.log().contains("became the leader").then_some(())
    })
    .await;
    let t1 = f.wait_new_token("abc-token", &t0, secs(40)).await;
    assert!(f.sim.is_token_valid(&t1));
    assert!(second.log().contains("obtaining a token"));
    assert!(second.stop(), "the new leader did not exit on SIGTERM");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_and_annotations_removed_from_the_spec_leave_the_output_secret() {
    let mut f = Fixture::new("relabel", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator();
    f.create_credential("abc", |spec| {
        spec["tokenSecret"]["labels"] = json!({"team": "voice", "tier": "gold"});
        spec["tokenSecret"]["annotations"] = json!({"note": "first"});
    })
    .await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let secret = f.token_secret("abc-token").await.unwrap();
    assert_eq!(
        secret.labels().get("team").map(String::as_str),
        Some("voice")
    );
    assert_eq!(
        secret.annotations().get("note").map(String::as_str),
        Some("first")
    );

    // Drop one label and the annotation: the Secret follows (the output Secret is created, then
    // owned by server-side apply, so removed fields are really removed).
    let patch = json!({"spec": {"tokenSecret": {"labels": {"team": null}, "annotations": null}}});
    f.credentials()
        .patch("abc", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let secret = control_plane::eventually("the label and annotation to go", secs(30), || async {
        let s = f.token_secret("abc-token").await?;
        (!s.labels().contains_key("team") && !s.annotations().contains_key("note")).then_some(s)
    })
    .await;
    assert_eq!(
        secret.labels().get("tier").map(String::as_str),
        Some("gold")
    );
    assert_eq!(
        secret
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("nsapi-token-operator")
    );
    assert!(data(&secret, "access_token").is_some());
    assert_eq!(
        f.sim.stats().token_requests,
        1,
        "a relabel obtained a token"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_or_deleted_output_secret_is_restored_without_a_request() {
    let (f, _) = ready_credential("restore", SimConfig::new()).await;
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();

    // Someone overwrites the token.
    let tampered = json!({"data": {"access_token": "dGFtcGVyZWQ="}});
    f.secrets()
        .patch(
            "abc-token",
            &PatchParams::default(),
            &Patch::Merge(&tampered),
        )
        .await
        .unwrap();
    let started = Instant::now();
    control_plane::eventually("the token to be restored", secs(30), || async {
        let s = f.token_secret("abc-token").await?;
        (data(&s, "access_token").as_deref() == Some(token.as_str())).then_some(())
    })
    .await;
    eprintln!(
        "measure: edited output Secret restored in {:?}",
        started.elapsed()
    );

    // Someone deletes the Secret.
    f.secrets()
        .delete("abc-token", &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    let restored = control_plane::eventually("the Secret to be recreated", secs(30), || async {
        f.token_secret("abc-token").await
    })
    .await;
    eprintln!(
        "measure: deleted output Secret restored in {:?}",
        started.elapsed()
    );
    assert_eq!(
        data(&restored, "access_token").as_deref(),
        Some(token.as_str())
    );
    assert!(f.sim.is_token_valid(&token));
    assert_eq!(
        f.sim.stats().token_requests,
        1,
        "restoring the Secret called NetSapiens"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_being_deleted_gets_no_new_token_or_secret() {
    let (f, _) = ready_credential("deleting", SimConfig::new().token_ttl(secs(30))).await;
    // A finalizer of someone else's keeps the credential in deletion for as long as the test
    // needs; its Secret is removed first, as the garbage collector may do.
    let hold = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    f.credentials()
        .patch("abc", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    f.delete_credential("abc").await;
    f.secrets()
        .delete("abc-token", &DeleteParams::default())
        .await
        .unwrap();
    let before = f.sim.stats().token_requests;
    // Longer than the token's rotation point: a live credential would have been rotated.
    tokio::time::sleep(secs(25)).await;
    assert!(
        f.token_secret("abc-token").await.is_none(),
        "the Secret was recreated"
    );
    assert_eq!(f.sim.stats().token_requests, before, "a token was obtained");
    let (_, metrics) = f.operator_http("/metrics").await;
    assert!(
        !metrics.contains("token_expiry_timestamp_seconds{"),
        "the deleted credential's series remain: {metrics}"
    );
    let release = json!({"metadata": {"finalizers": null}});
    f.credentials()
        .patch("abc", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_lets_a_token_request_in_flight_finish_and_be_written() {
    let mut f = Fixture::new("shutdown", SimConfig::new()).await;
    f.create_input_secrets().await;
    // The grant takes 10 s: longer than the old fixed 8 s shutdown grace.
    f.sim.inject_times(Fault::Latency(secs(10)), 1);
    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &["--api-timeout", "15s"],
    );
    f.create_credential("abc", |_| {}).await;
    control_plane::eventually("the token request to arrive", secs(30), || async {
        (f.sim.stats().token_requests == 1).then_some(())
    })
    .await;
    let started = Instant::now();
    f.operator.as_ref().unwrap().signal("TERM");
    // While the pass finishes, readiness is gone and the probe says so (503), and /metrics
    // can still be scraped.
    control_plane::eventually("/readyz to answer 503", secs(5), || async {
        (f.operator_http("/readyz").await.0 == 503).then_some(())
    })
    .await;
    assert_eq!(f.operator_http("/healthz").await.0, 200);
    assert_eq!(f.operator_http("/metrics").await.0, 200);
    let operator = f.operator.take().unwrap();
    assert!(
        operator.stop_within(secs(25)),
        "the operator did not exit within 25 s of SIGTERM"
    );
    eprintln!(
        "measure: exit {:?} after SIGTERM with a 10 s grant in flight",
        started.elapsed()
    );
    let secret = f
        .token_secret("abc-token")
        .await
        .expect("the token obtained during shutdown was written");
    assert!(
        f.sim
            .is_token_valid(&data(&secret, "access_token").unwrap())
    );
    f.assert_no_secret_leaked().await;
}

/// The operator's Event publisher against the real API server: a repeat within six minutes is
/// counted on the first Event (its `series`, its note kept), another reason is an Event of its
/// own, and a repeat of an Event deleted meanwhile creates it anew.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_is_counted_on_the_first_and_one_deleted_is_created_anew() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::Api;
    use kube::runtime::events::{Event, EventType, Reporter};
    use nsapi_token_operator::cluster::events::Events;

    let f = Fixture::new("events", SimConfig::new()).await;
    let ns = f.namespace().to_owned();
    let events = Events::new(
        f.client.clone(),
        Reporter {
            controller: "nsapi-token-operator".into(),
            instance: Some("test".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("nsapi.io/v1alpha1".into()),
        kind: Some("NsApiCredential".into()),
        name: Some("abc".into()),
        namespace: Some(ns.clone()),
        uid: Some("00000000-0000-0000-0000-000000000001".into()),
        ..ObjectReference::default()
    };
    let missing = |note: &str| Event {
        type_: EventType::Warning,
        reason: "SecretMissing".into(),
        note: Some(note.into()),
        action: "ObtainToken".into(),
        secondary: None,
    };
    events.publish(&missing("first"), &regarding).await.unwrap();
    events
        .publish(&missing("second"), &regarding)
        .await
        .unwrap();
    let issued = Event {
        type_: EventType::Normal,
        reason: "TokenIssued".into(),
        note: Some("issued".into()),
        action: "ObtainToken".into(),
        secondary: None,
    };
    events.publish(&issued, &regarding).await.unwrap();

    let api: Api<K8sEvent> = Api::namespaced(f.client.clone(), &ns);
    let listed = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let first = listed
        .iter()
        .find(|e| e.reason.as_deref() == Some("SecretMissing"))
        .unwrap();
    assert_eq!(first.series.as_ref().map(|s| s.count), Some(2), "{first:?}");
    assert_eq!(first.note.as_deref(), Some("first"));
    assert_eq!(
        first.reporting_controller.as_deref(),
        Some("nsapi-token-operator")
    );
    assert_eq!(first.reporting_instance.as_deref(), Some("test"));
    let other = listed
        .iter()
        .find(|e| e.reason.as_deref() == Some("TokenIssued"))
        .unwrap();
    assert!(other.series.is_none(), "{other:?}");

    // Deleted meanwhile: the next repeat is a new Event.
    api.delete(&first.name_any(), &Default::default())
        .await
        .unwrap();
    events.publish(&missing("third"), &regarding).await.unwrap();
    let again: Vec<K8sEvent> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SecretMissing"))
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again[0].name_any(), first.name_any());
    assert!(again[0].series.is_none());
    assert_eq!(again[0].note.as_deref(), Some("third"));
}

/// A credential whose triggers are all lost (a test hook drops its watch events and Secret
/// changes, as a lost event would) is found by the sweep, at its second sighting, and gets its
/// token; it is counted and named, and no other credential is.
#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_starts_a_credential_whose_triggers_were_lost() {
    let mut f = Fixture::new("sweep", SimConfig::new()).await;
    f.create_input_secrets().await;
    let lost = format!("{}/lost", f.namespace());
    f.start_operator_env(
        &[],
        &[
            ("NSAPI_TEST_LOSE_TRIGGERS", &lost),
            ("NSAPI_TEST_SWEEP_EVERY_MS", "2000"),
        ],
    );
    f.wait_operator_started().await;
    f.create_credential("found", |_| {}).await;
    f.create_credential("lost", |spec| {
        spec["tokenSecret"]["name"] = json!("lost-token")
    })
    .await;
    f.wait_ready("found", READY_TIMEOUT).await;
    f.wait_ready("lost", READY_TIMEOUT).await;
    assert!(f.token_secret("lost-token").await.is_some());

    let (status, metrics) = f.operator_http("/metrics").await;
    assert_eq!(status, 200);
    let count = |found: &str| {
        let prefix = format!("nsapi_token_operator_sweep_retriggered_total{{found=\"{found}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(count("never_triggered"), 1.0, "only `lost`, once");
    assert_eq!(count("stalled"), 0.0);
    let log = f.latest_operator_log();
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("owed a pass")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&lost), "{}", warnings[0]);
    assert_eq!(f.sim.stats().password_grants, 2, "one token each");

    // Deleted, they leave nothing due in the work queue.
    for name in ["found", "lost"] {
        f.delete_credential(name).await;
    }
    control_plane::eventually(
        "the deleted credentials to leave the work queue",
        secs(60),
        || async {
            let (_, metrics) = f.operator_http("/metrics").await;
            (!metrics.contains("name=\"found\"")
                && !metrics.contains("name=\"lost\"")
                && metrics
                    .lines()
                    .any(|l| l == "nsapi_token_operator_work_queue_depth 0"))
            .then_some(())
        },
    )
    .await;
    f.assert_no_secret_leaked().await;
}
