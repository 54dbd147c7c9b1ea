//! The bad-input table: every way a user can get a credential wrong ends in a schema rejection
//! on `kubectl apply --dry-run=server`, or in a named condition and an Event, with nothing
//! crashing and nothing retried in a loop. The operator runs with an allow-list
//! (`127.0.0.1`, `localhost:8443`), as in production.

mod control_plane;
mod fixture;

use std::collections::BTreeMap;
use std::time::Duration;

use fixture::{CLIENT_ID, CLIENT_SECRET_NAME, Fixture, SUBSCRIBER_SECRET_NAME, USERNAME};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use nsapi_sim::{SimConfig, Subscriber};
use serde_json::{Value, json};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What a case must end in.
enum Expect {
    /// `kubectl apply --dry-run=server` fails and its error mentions this.
    Rejected(&'static str),
    /// The credential reaches `condition=status` with `reason`, and an Event with that reason
    /// is recorded for it.
    Condition(&'static str, &'static str, &'static str),
}

/// An edit of a credential's spec.
type Edit = Box<dyn Fn(&mut Value)>;

/// A case: its name, an edit of the credential's spec, and what it must end in.
type Case = (&'static str, Edit, Expect);

fn set(pointer: &'static str, value: Value) -> Edit {
    Box::new(move |spec: &mut Value| {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = spec.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match &value {
            Value::Null => parent.remove(key),
            value => parent.insert(key.to_owned(), value.clone()),
        };
    })
}

fn edits(edits: Vec<Edit>) -> Edit {
    Box::new(move |spec: &mut Value| edits.iter().for_each(|e| e(spec)))
}

/// A Secret with raw bytes as values.
async fn raw_secret(f: &Fixture, name: &str, type_: &str, pairs: &[(&str, &[u8])]) {
    let data: BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
        .collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": f.namespace()},
        "type": type_,
        "data": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("cannot create Secret {name}: {e}"));
}

/// Whether an Event with `reason` was recorded for the credential `name`.
fn has_event(events: &Value, name: &str, reason: &str) -> bool {
    events["items"].as_array().into_iter().flatten().any(|e| {
        let regarding = e
            .get("regarding")
            .or_else(|| e.get("involvedObject"))
            .and_then(|r| r["name"].as_str());
        regarding == Some(name) && e["reason"] == reason
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_ends_in_a_rejection_or_a_named_condition() {
    let mut f = Fixture::new(
        "bad-input",
        // Hour-long tokens: nothing is due for rotation while the table runs, so any request in
        // the last 20 s would be a retry.
        SimConfig::new()
            .token_ttl(secs(3600))
            .subscriber(Subscriber::new("mfa@abc-company", "mfa-password").with_mfa(true)),
    )
    .await;
    f.create_input_secrets().await;
    let sim = f.sim.base_url();
    let port = sim
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let sim_path = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // Input Secrets the cases point at.
    let (cid, cs, user, pw) = (
        CLIENT_ID,
        f.client_secret.clone(),
        USERNAME,
        f.password.clone(),
    );
    raw_secret(
        &f,
        "no-client-id",
        "Opaque",
        &[("client_secret", cs.as_bytes())],
    )
    .await;
    raw_secret(
        &f,
        "empty-client-id",
        "Opaque",
        &[("client_id", b""), ("client_secret", cs.as_bytes())],
    )
    .await;
    raw_secret(
        &f,
        "blank-client-id",
        "Opaque",
        &[("client_id", b" \n"), ("client_secret", cs.as_bytes())],
    )
    .await;
    raw_secret(
        &f,
        "binary-secret",
        "Opaque",
        &[
            ("client_id", cid.as_bytes()),
            ("client_secret", &[0xff, 0xfe, 0x00, 0x80]),
        ],
    )
    .await;
    let huge = vec![b'x'; 1_000_000];
    raw_secret(
        &f,
        "huge-password",
        "Opaque",
        &[("username", user.as_bytes()), ("password", &huge)],
    )
    .await;
    let newline = format!("{pw}\n");
    raw_secret(
        &f,
        "newline-password",
        "Opaque",
        &[
            ("username", user.as_bytes()),
            ("password", newline.as_bytes()),
        ],
    )
    .await;
    let spaced = format!(" {pw}");
    raw_secret(
        &f,
        "spaced-password",
        "Opaque",
        &[
            ("username", user.as_bytes()),
            ("password", spaced.as_bytes()),
        ],
    )
    .await;
    raw_secret(
        &f,
        "wrong-client",
        "Opaque",
        &[
            ("client_id", cid.as_bytes()),
            ("client_secret", b"not-the-client-secret"),
        ],
    )
    .await;
    raw_secret(
        &f,
        "mfa-user",
        "Opaque",
        &[
            ("username", b"mfa@abc-company"),
            ("password", b"mfa-password"),
        ],
    )
    .await;
    raw_secret(
        &f,
        "everything",
        "Opaque",
        &[
            ("client_id", cid.as_bytes()),
            ("client_secret", cs.as_bytes()),
            ("username", user.as_bytes()),
            ("password", pw.as_bytes()),
        ],
    )
    .await;
    raw_secret(
        &f,
        "tls-typed-output",
        "kubernetes.io/tls",
        &[("tls.crt", b"x"), ("tls.key", b"y")],
    )
    .await;

    let cond = |t, s, r| Expect::Condition(t, s, r);
    let ready = || cond("Ready", "True", "TokenIssued");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Rejected by the schema (in addition to the 16 of tests/operator.rs).
        ("fragment in the URL", set("/apiBaseUrl", json!("https://portal.example.com/ns-api/#x")), Expect::Rejected("apiBaseUrl")),
        ("space in the URL", set("/apiBaseUrl", json!("https://portal example.com/")), Expect::Rejected("apiBaseUrl")),
        ("empty URL", set("/apiBaseUrl", json!("")), Expect::Rejected("apiBaseUrl")),
        ("URL of 3000 characters", set("/apiBaseUrl", json!(format!("https://portal.example.com/{}", "a".repeat(3000)))), Expect::Rejected("apiBaseUrl")),
        ("Secret name of 254 characters", set("/clientSecretRef/name", json!("a".repeat(254))), Expect::Rejected("clientSecretRef.name")),
        ("output named like the subscriber Secret", set("/tokenSecret/name", json!(SUBSCRIBER_SECRET_NAME)), Expect::Rejected("must differ")),
        ("unknown duration unit", set("/refreshBefore", json!("10x")), Expect::Rejected("refreshBefore")),
        ("duration with a space", set("/refreshBefore", json!("1h 30m")), Expect::Rejected("refreshBefore")),
        ("empty key name", set("/subscriberSecretRef/usernameKey", json!("")), Expect::Rejected("usernameKey")),
        ("token API in capitals", set("/tokenApi", json!("V1")), Expect::Rejected("tokenApi")),
        ("client auth in capitals", set("/clientAuth", json!("Basic")), Expect::Rejected("clientAuth")),
        ("unknown client auth", set("/clientAuth", json!("header")), Expect::Rejected("clientAuth")),
        ("label key with a space", set("/tokenSecret/labels", json!({"bad key": "x"})), Expect::Rejected("label keys")),
        ("label value of 64 characters", set("/tokenSecret/labels", json!({"team": "v".repeat(64)})), Expect::Rejected("labels")),
        ("annotation key with a slash too many", set("/tokenSecret/annotations", json!({"a/b/c": "x"})), Expect::Rejected("annotation keys")),
        ("65 labels", set("/tokenSecret/labels", json!((0..65).map(|i| (format!("l{i}"), json!("v"))).collect::<serde_json::Map<_, _>>())), Expect::Rejected("labels")),
        ("fallback repeating the primary", set("/fallbackApiBaseUrls", json!([sim])), Expect::Rejected("must not repeat apiBaseUrl")),
        ("five fallbacks", set("/fallbackApiBaseUrls", json!(["https://a.example/", "https://b.example/", "https://c.example/", "https://d.example/", "https://e.example/"])), Expect::Rejected("fallbackApiBaseUrls")),
        ("fallback that is no URL", set("/fallbackApiBaseUrls", json!(["dal.portal.example.com"])), Expect::Rejected("fallbackApiBaseUrls")),
        ("CA bundle in the output Secret", Box::new(|spec: &mut Value| { let output = spec["tokenSecret"]["name"].clone(); spec["caBundle"] = json!({"kind": "Secret", "name": output}); }), Expect::Rejected("caBundle must not name the output Secret")),
        ("CA bundle of an unknown kind", set("/caBundle", json!({"kind": "File", "name": "ca"})), Expect::Rejected("caBundle")),
        ("verifyInterval in days", set("/verifyInterval", json!("1d")), Expect::Rejected("verifyInterval")),
        ("verifyInterval under a minute", set("/verifyInterval", json!("30s")), Expect::Rejected("verifyInterval must be between 1m and 168h")),
        ("verifyInterval past the end of time", set("/verifyInterval", json!("100000000h")), Expect::Rejected("verifyInterval must be between 1m and 168h")),
        ("refreshBefore past the end of time", set("/refreshBefore", json!("100000000h")), Expect::Rejected("refreshBefore must be at most 168h")),
        ("restart target of an unknown kind", set("/rolloutRestartTargets", json!([{"kind": "Job", "name": "x"}])), Expect::Rejected("rolloutRestartTargets")),
        // Named conditions, each with an Event.
        ("missing client Secret", set("/clientSecretRef/name", json!("absent")), cond("Ready", "False", "SecretMissing")),
        ("missing subscriber Secret", set("/subscriberSecretRef/name", json!("absent-too")), cond("Ready", "False", "SecretMissing")),
        ("missing key", set("/clientSecretRef/name", json!("no-client-id")), cond("Ready", "False", "KeyMissing")),
        ("missing custom key", set("/subscriberSecretRef/passwordKey", json!("pass")), cond("Ready", "False", "KeyMissing")),
        ("empty value", set("/clientSecretRef/name", json!("empty-client-id")), cond("Ready", "False", "KeyMissing")),
        ("whitespace-only value", set("/clientSecretRef/name", json!("blank-client-id")), cond("Ready", "False", "KeyMissing")),
        ("non-UTF-8 value", set("/clientSecretRef/name", json!("binary-secret")), cond("Ready", "False", "KeyMissing")),
        ("value of 1,000,000 bytes", set("/subscriberSecretRef/name", json!("huge-password")), cond("Ready", "False", "KeyMissing")),
        ("password with a trailing newline", set("/subscriberSecretRef/name", json!("newline-password")), ready()),
        ("password with a leading space", set("/subscriberSecretRef/name", json!("spaced-password")), cond("Ready", "False", "AuthenticationFailed")),
        ("wrong client secret", set("/clientSecretRef/name", json!("wrong-client")), cond("Ready", "False", "AuthenticationFailed")),
        ("subscriber with MFA", set("/subscriberSecretRef/name", json!("mfa-user")), cond("Ready", "False", "MfaRequired")),
        ("one Secret for client and subscriber", edits(vec![set("/clientSecretRef/name", json!("everything")), set("/subscriberSecretRef/name", json!("everything"))]), ready()),
        ("host outside the allow-list", set("/apiBaseUrl", json!("https://portal.example.com/ns-api/")), cond("Ready", "False", "ApiHostNotAllowed")),
        ("another port on an allowed host", set("/apiBaseUrl", json!("https://localhost:9443/ns-api/")), cond("Ready", "False", "ApiHostNotAllowed")),
        ("IP-literal host", set("/apiBaseUrl", json!("https://10.1.2.3/ns-api/")), cond("Ready", "False", "ApiHostNotAllowed")),
        ("IDN host", set("/apiBaseUrl", json!("https://pörtal.example.com/ns-api/")), cond("Ready", "False", "ApiHostNotAllowed")),
        ("trailing-dot host", set("/apiBaseUrl", json!("https://portal.example.com./ns-api/")), cond("Ready", "False", "ApiHostNotAllowed")),
        ("existing Secret of another type with the output name", set("/tokenSecret/name", json!("tls-typed-output")), cond("Ready", "False", "SecretConflict")),
        ("refreshBefore equal to the lifetime", set("/refreshBefore", json!("1h")), ready()),
        ("refreshBefore beyond the lifetime", set("/refreshBefore", json!("2h")), ready()),
        ("wrong API path", set("/apiBaseUrl", json!(sim_path("/wrong/"))), cond("Ready", "False", "ApiRequestRejected")),
        ("nothing listening", set("/apiBaseUrl", json!("http://127.0.0.1:1/ns-api/")), cond("Ready", "False", "ApiUnavailable")),
        ("suspended before the first token", set("/suspend", json!(true)), cond("Ready", "False", "Suspended")),
        // An optional setting that cannot work is ignored and named; the token still comes.
        ("fallback outside the allow-list", set("/fallbackApiBaseUrls", json!(["https://dal.example.com/ns-api/"])), cond("SettingsIgnored", "True", "InvalidSetting")),
        ("CA bundle that does not exist", set("/caBundle", json!({"name": "absent-ca"})), cond("Ready", "False", "CaBundleInvalid")),
        ("CA bundle without a certificate", set("/caBundle", json!({"kind": "Secret", "name": "everything", "key": "username"})), cond("Ready", "False", "CaBundleInvalid")),
    ];
    let rejections = cases
        .iter()
        .filter(|c| matches!(c.2, Expect::Rejected(_)))
        .count();
    eprintln!(
        "measure: {} bad-input cases ({rejections} schema rejections)",
        cases.len()
    );
    assert!(cases.len() >= 30);

    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &[
            "--allowed-api-host",
            "127.0.0.1",
            "--allowed-api-host",
            "localhost:8443",
        ],
    );
    let mut waiting = Vec::new();
    for (i, (name, edit, expect)) in cases.iter().enumerate() {
        let credential = format!("case-{i:02}");
        let manifest = f.credential_manifest(&credential, |spec| edit(spec));
        match expect {
            Expect::Rejected(mentions) => {
                let out = control_plane::kubectl_stdin(
                    &["apply", "--dry-run=server", "-f", "-"],
                    &serde_json::to_string(&manifest).unwrap(),
                );
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{name}: accepted");
                assert!(
                    stderr.contains(mentions),
                    "{name}: the error does not mention {mentions:?}: {stderr}"
                );
            }
            Expect::Condition(type_, status, reason) => {
                let out = control_plane::kubectl_stdin(
                    &["apply", "-f", "-"],
                    &serde_json::to_string(&manifest).unwrap(),
                );
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if *type_ == "SettingsIgnored" {
                    waiting.push((*name, credential.clone(), "Ready", "True", "TokenIssued"));
                }
                waiting.push((*name, credential, *type_, *status, *reason));
            }
        }
    }
    // Two credentials with one output name: the second finds the first's Secret.
    f.create_credential("first-owner", |spec| {
        spec["tokenSecret"]["name"] = json!("shared-token")
    })
    .await;
    f.wait_ready("first-owner", secs(60)).await;
    f.create_credential("second-owner", |spec| {
        spec["tokenSecret"]["name"] = json!("shared-token")
    })
    .await;
    waiting.push((
        "two credentials, one output name",
        "second-owner".into(),
        "Ready",
        "False",
        "SecretConflict",
    ));

    for (name, credential, type_, status, reason) in &waiting {
        let cred = f
            .wait_condition(credential, type_, status, Some(reason), secs(90))
            .await;
        let message = cred
            .status
            .unwrap()
            .condition(type_)
            .unwrap()
            .message
            .clone();
        assert!(!message.is_empty(), "{name}: an empty message");
    }
    let events: Value = serde_json::from_str(&f.events_json()).unwrap();
    for (name, credential, _, _, reason) in &waiting {
        assert!(
            has_event(&events, credential, reason),
            "{name}: no {reason} Event"
        );
    }

    // Nothing is retried in a loop: refused and rejected requests back off for minutes.
    let before = f.sim.stats().token_requests;
    tokio::time::sleep(secs(20)).await;
    let after = f.sim.stats().token_requests;
    eprintln!(
        "measure: token requests in the 20 s after every case settled: {}",
        after - before
    );
    assert_eq!(after, before, "a bad input was retried in a loop");
    let log = f.latest_operator_log();
    assert!(!log.contains("panicked"), "the operator panicked");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_refused_unless_the_operator_allows_it() {
    let mut f = Fixture::new("http-refused", SimConfig::new()).await;
    f.create_input_secrets().await;
    f.start_operator_as(&control_plane::admin_kubeconfig(), &["--no-insecure-http"]);
    f.create_credential("abc", |_| {}).await;
    let cred = f
        .wait_condition("abc", "Ready", "False", Some("InvalidSpec"), secs(60))
        .await;
    let message = cred
        .status
        .unwrap()
        .condition("Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("--allow-insecure-http"), "{message}");
    let events: Value = serde_json::from_str(&f.events_json()).unwrap();
    assert!(has_event(&events, "abc", "InvalidSpec"));
    assert_eq!(
        f.sim.stats().token_requests,
        0,
        "a request went out over plain http"
    );
    let _ = CLIENT_SECRET_NAME;
    f.assert_no_secret_leaked().await;
}
