//! What real portals do that the documentation does not say (issue 19, NSAPI.md "What public
//! clients have recorded"): the operator binary against nsapi-sim playing a 200 without a
//! token, string numbers, a 44.0.x portal's v1 answer and HTTP Basic client authentication.
//! Each case ends with a Ready token or a named condition, a bounded number of requests, no
//! output Secret holding an empty token, and no secret value in logs, Events or status.

mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data};
use nsapi_sim::{ClientAuth, Fault, NoTokenBody, SimConfig, V1Answer};
use serde_json::json;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn started(prefix: &str, config: SimConfig) -> Fixture {
    let mut f = Fixture::new(prefix, config).await;
    f.create_input_secrets().await;
    f.start_operator();
    f
}

/// The message of the credential's condition `type_` once it has `status` and `reason`.
async fn condition(f: &Fixture, name: &str, type_: &str, status: &str, reason: &str) -> String {
    let cred = f
        .wait_condition(name, type_, status, Some(reason), secs(60))
        .await;
    cred.status
        .unwrap()
        .condition(type_)
        .unwrap()
        .message
        .clone()
}

/// No output Secret, or one without an empty token.
async fn assert_no_empty_token(f: &Fixture, name: &str) {
    if let Some(secret) = f.token_secret(&format!("{name}-token")).await {
        let token = data(&secret, "access_token").unwrap_or_default();
        assert!(
            !token.trim().is_empty(),
            "{name}: the output Secret holds an empty token"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_with_an_empty_object_is_an_unusable_answer_retried_with_backoff() {
    let f = started("no-token-empty", SimConfig::new()).await;
    f.sim.inject(Fault::NoToken {
        body: NoTokenBody::EmptyObject,
    });
    f.create_credential("abc", |_| {}).await;
    let message = condition(&f, "abc", "Degraded", "True", "ApiUnavailable").await;
    assert!(message.contains("without a token"), "{message}");
    let ready = f.credential("abc").await.status.unwrap();
    assert_eq!(ready.condition("Ready").unwrap().status, "False");
    let start = f.sim.stats().token_requests;
    tokio::time::sleep(secs(20)).await;
    let requests = f.sim.stats().token_requests - start;
    // Transient backoff: 2-5 s, 5-10 s, 10-20 s: at most 4 more in 20 s, never a loop.
    assert!(requests <= 4, "{requests} token requests in 20 s");
    assert_no_empty_token(&f, "abc").await;
    assert!(
        f.token_secret("abc-token").await.is_none(),
        "an output Secret was written without a token"
    );
    let events = f.events_json();
    assert!(events.contains("ApiUnavailable"), "no Event: {events}");

    f.sim.clear_faults();
    f.wait_ready("abc", secs(90)).await;
    assert_no_empty_token(&f, "abc").await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_with_an_in_band_refusal_is_a_refusal_with_lockout_safe_backoff() {
    let f = started("no-token-error", SimConfig::new()).await;
    f.sim.inject(Fault::NoToken {
        body: NoTokenBody::OauthError,
    });
    f.create_credential("oauth", |spec| spec["tokenApi"] = json!("v1"))
        .await;
    let message = condition(&f, "oauth", "Ready", "False", "AuthenticationFailed").await;
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(message.contains("HTTP 200 without a token"), "{message}");
    let first = f.sim.stats().token_requests;

    f.sim.clear_faults();
    f.sim.inject(Fault::NoToken {
        body: NoTokenBody::CodeMessage,
    });
    f.create_credential("code", |spec| {
        spec["tokenSecret"]["name"] = json!("code-token");
        spec["tokenApi"] = json!("v2");
    })
    .await;
    let message = condition(&f, "code", "Ready", "False", "AuthenticationFailed").await;
    assert!(message.contains("in-band error 401"), "{message}");

    // A refused password waits minutes: no further request in 20 s.
    let before = f.sim.stats().token_requests;
    assert!(before <= first + 1, "{first} then {before}");
    tokio::time::sleep(secs(20)).await;
    assert_eq!(f.sim.stats().token_requests, before, "retried a refusal");
    for name in ["oauth", "code"] {
        assert_no_empty_token(&f, name).await;
        assert!(f.token_secret(&format!("{name}-token")).await.is_none());
    }
    let events = f.events_json();
    assert!(
        events.contains("AuthenticationFailed"),
        "no Event: {events}"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn string_numbers_and_a_44_0_portals_v1_answer_give_a_ready_token() {
    let f = started(
        "string-numbers",
        SimConfig::new()
            .numbers_as_strings(true)
            .v1_answer(V1Answer::V44_0),
    )
    .await;
    for api in ["v1", "v2", "auto"] {
        let name = format!("as-{api}");
        f.create_credential(&name, |spec| {
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"));
            spec["tokenApi"] = json!(api);
        })
        .await;
        let cred = f.wait_ready(&name, secs(60)).await;
        let status = cred.status.unwrap();
        let lifetime = status
            .expires_at
            .unwrap()
            .0
            .duration_since(status.issued_at.unwrap().0);
        assert!(
            lifetime > jiff::SignedDuration::from_mins(30)
                && lifetime <= jiff::SignedDuration::from_hours(1),
            "{api}: lifetime {lifetime:?}"
        );
        let secret = f.token_secret(&format!("{name}-token")).await.unwrap();
        assert!(!data(&secret, "access_token").unwrap().is_empty());
    }
    let before = f.sim.stats().token_requests;
    tokio::time::sleep(secs(10)).await;
    assert_eq!(f.sim.stats().token_requests, before, "tokens in a loop");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_basic_only_portal_refuses_the_default_and_accepts_client_auth_basic() {
    let f = started(
        "client-auth",
        SimConfig::new().client_auth(ClientAuth::BasicOnly),
    )
    .await;
    f.create_credential("fields", |_| {}).await;
    let message = condition(&f, "fields", "Ready", "False", "AuthenticationFailed").await;
    assert!(message.contains("client_secret"), "{message}");
    assert!(f.token_secret("fields-token").await.is_none());

    for api in ["v1", "v2"] {
        let name = format!("basic-{api}");
        f.create_credential(&name, |spec| {
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"));
            spec["tokenApi"] = json!(api);
            spec["clientAuth"] = json!("basic");
        })
        .await;
        f.wait_ready(&name, secs(60)).await;
        let secret = f.token_secret(&format!("{name}-token")).await.unwrap();
        let token = data(&secret, "access_token").unwrap();
        assert!(f.sim.is_token_valid(&token), "{api}");
    }

    // Switching the refused credential to Basic is a change of what the token depends on: a
    // new password grant at once, not after the refusal's backoff.
    let patch = json!({"spec": {"clientAuth": "basic"}});
    f.credentials()
        .patch(
            "fields",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    f.wait_ready("fields", secs(30)).await;
    f.assert_no_secret_leaked().await;
}
