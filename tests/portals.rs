//! What real portals do that the documentation does not say (issue 19, NSAPI.md "What public
//! clients have recorded"): the operator binary against nsapi-sim playing a 200 without a
//! token, string numbers, a 44.0.x portal's v1 answer, HTTP Basic client authentication, users
//! with MFA enforced (TOTP) and `v2/jwt` JWTs with refresh JWTs and session cookies.
//! Each case ends with a Ready token or a named condition, a bounded number of requests, no
//! output Secret holding an empty token, and no secret value in logs, Events or status.

mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data};
use nsapi_sim::{ClientAuth, Fault, NoTokenBody, SimConfig, Subscriber, V1Answer};
use serde_json::{Value, json};

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

/// An Event with this reason was recorded.
fn assert_event(f: &Fixture, reason: &str) {
    let events = f.events_json();
    assert!(events.contains(reason), "no {reason} Event: {events}");
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
    assert_event(&f, "ApiUnavailable");

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
    assert_event(&f, "AuthenticationFailed");
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

/// An MFA subscriber's TOTP seed, as an authenticator app shows it (grouped, lower case).
const SEED: &str = "jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp";
const SEED_BASE32: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const OTHER_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// How many requests of the simulator ended in `result` (the last part of its stats keys).
fn results(stats: &nsapi_sim::Stats, result: &str) -> u64 {
    stats
        .by_key
        .iter()
        .filter(|(key, _)| key.rsplit('/').next() == Some(result))
        .map(|(_, n)| n)
        .sum()
}

/// A subscriber Secret `name` for `username`, and a Secret `{name}-totp` holding `seed` under
/// `seed`.
async fn mfa_secrets(f: &Fixture, name: &str, username: &str, password: &str, seed: &str) {
    f.put_secret(name, &[("username", username), ("password", password)])
        .await;
    f.put_secret(&format!("{name}-totp"), &[("seed", seed)])
        .await;
    f.also_secret(seed);
    f.also_secret(&seed.replace(' ', "").to_uppercase());
}

/// A credential for the MFA subscriber of `mfa_secrets(.., subscriber, ..)`.
async fn mfa_credential(f: &Fixture, name: &str, subscriber: &str, tweak: impl FnOnce(&mut Value)) {
    f.create_credential(name, |spec| {
        spec["tokenSecret"]["name"] = json!(format!("{name}-token"));
        spec["subscriberSecretRef"]["name"] = json!(subscriber);
        spec["mfa"] =
            json!({"totpSecretRef": {"name": format!("{subscriber}-totp"), "key": "seed"}});
        tweak(spec);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mfa_user_logs_in_with_its_totp_seed_and_no_passcode_is_sent_twice() {
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let f = started(
        "mfa-totp",
        SimConfig::new()
            .token_ttl(secs(90))
            .subscriber(Subscriber::new("mfa@abc-company", &password).with_totp_seed(SEED_BASE32))
            .subscriber(
                Subscriber::new("jwt-mfa@abc-company", &password).with_totp_seed(OTHER_SEED),
            ),
    )
    .await;
    f.also_secret(&password);
    mfa_secrets(&f, "mfa-user", "mfa@abc-company", &password, SEED).await;
    mfa_secrets(
        &f,
        "jwt-mfa-user",
        "jwt-mfa@abc-company",
        &password,
        OTHER_SEED,
    )
    .await;

    // Without spec.mfa the login stops at the challenge, with a condition that says what to do.
    f.create_credential("bare", |spec| {
        spec["tokenSecret"]["name"] = json!("bare-token");
        spec["subscriberSecretRef"]["name"] = json!("mfa-user");
    })
    .await;
    let message = condition(&f, "bare", "Ready", "False", "MfaRequired").await;
    assert!(message.contains("spec.mfa.totpSecretRef"), "{message}");
    assert_eq!(f.sim.stats().mfa_attempts, 0);

    // Two credentials of one user and one seed, on v1 and v2, and a JWT login of another: each
    // gets a token; the second of the first two waits for the next passcode instead of
    // sending the same one again.
    mfa_credential(&f, "first", "mfa-user", |spec| {
        spec["tokenApi"] = json!("v1")
    })
    .await;
    mfa_credential(&f, "second", "mfa-user", |spec| {
        spec["tokenApi"] = json!("v2")
    })
    .await;
    mfa_credential(&f, "jwt", "jwt-mfa-user", |spec| {
        spec["tokenApi"] = json!("jwt")
    })
    .await;
    for name in ["first", "second", "jwt"] {
        let cred = f.wait_ready(name, secs(120)).await;
        let status = cred.status.unwrap();
        let token = data(
            &f.token_secret(&format!("{name}-token")).await.unwrap(),
            "access_token",
        )
        .unwrap();
        assert!(f.sim.is_token_valid(&token), "{name}: not a valid token");
        assert_eq!(status.last_grant.as_deref(), Some("mfa"), "{name}");
        assert_eq!(status.consecutive_failures, 0, "{name}");
    }
    let stats = f.sim.stats();
    assert_eq!(stats.mfa_refusals, 0, "a passcode was refused: {stats:?}");
    assert_eq!(stats.mfa_attempts, 3, "{stats:?}");
    assert_eq!(stats.jwt_issued, 1, "{stats:?}");

    // The 90 s tokens are rotated with the refresh tokens the MFA logins gave, without a new
    // passcode.
    let first = data(
        &f.token_secret("first-token").await.unwrap(),
        "access_token",
    )
    .unwrap();
    f.wait_new_token("first-token", &first, secs(90)).await;
    assert_eq!(f.sim.stats().mfa_attempts, 3);
    assert!(f.sim.stats().refresh_grants_ok >= 1);

    // Once the refresh tokens are refused, the rotation logs in again with a fresh passcode.
    f.sim.inject(Fault::RejectRefresh);
    let second = data(
        &f.token_secret("second-token").await.unwrap(),
        "access_token",
    )
    .unwrap();
    f.wait_new_token("second-token", &second, secs(120)).await;
    let stats = f.sim.stats();
    assert!(stats.mfa_attempts >= 4, "{stats:?}");
    assert_eq!(stats.mfa_refusals, 0, "a passcode was refused: {stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_totp_seed_is_refused_like_a_wrong_password_and_its_fix_is_taken_at_once() {
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let f = started(
        "mfa-wrong",
        SimConfig::new()
            .subscriber(Subscriber::new("mfa@abc-company", &password).with_totp_seed(SEED_BASE32)),
    )
    .await;
    f.also_secret(&password);
    mfa_secrets(&f, "mfa-user", "mfa@abc-company", &password, OTHER_SEED).await;
    f.also_secret(SEED);
    mfa_credential(&f, "wrong", "mfa-user", |_| {}).await;
    let message = condition(&f, "wrong", "Ready", "False", "AuthenticationFailed").await;
    assert!(message.contains("spec.mfa.totpSecretRef"), "{message}");
    assert!(f.token_secret("wrong-token").await.is_none());

    // A refused passcode waits minutes, like a refused password: no request in 20 s.
    let before = f.sim.stats();
    assert_eq!(before.mfa_refusals, 1, "{before:?}");
    tokio::time::sleep(secs(20)).await;
    let after = f.sim.stats();
    assert_eq!(
        after.token_requests, before.token_requests,
        "retried a refusal"
    );
    assert_eq!(after.mfa_attempts, before.mfa_attempts, "retried a refusal");

    // The right seed is a change of the inputs: a new login at once.
    f.put_secret("mfa-user-totp", &[("seed", SEED)]).await;
    f.wait_ready("wrong", secs(60)).await;
    assert_eq!(f.sim.stats().mfa_refusals, 1);
    assert_event(&f, "AuthenticationFailed");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwt_is_rotated_by_its_refresh_jwt_then_by_a_new_login_with_its_session_cookie() {
    let f = started(
        "jwt-rotate",
        SimConfig::new()
            .jwt_ttl(secs(60))
            .jwt_refresh(true)
            .jwt_cookie("NSSESSION", true),
    )
    .await;
    f.create_credential("jwt", |spec| spec["tokenApi"] = json!("jwt"))
        .await;
    let cred = f.wait_ready("jwt", secs(60)).await;
    let status = cred.status.unwrap();
    assert_eq!(status.token_api.as_deref(), Some("jwt"));
    let lifetime = status
        .expires_at
        .unwrap()
        .0
        .duration_since(status.issued_at.unwrap().0);
    assert!(
        lifetime > jiff::SignedDuration::from_secs(50)
            && lifetime <= jiff::SignedDuration::from_secs(60),
        "the lifetime is read from the JWT: {lifetime:?}"
    );
    let mut token = data(&f.token_secret("jwt-token").await.unwrap(), "access_token").unwrap();
    assert!(f.sim.is_token_valid(&token));

    // Rotated with the refresh JWT (the session cookie sent back, as the server demands).
    token = f.wait_new_token("jwt-token", &token, secs(60)).await;
    let stats = f.sim.stats();
    assert_eq!(stats.jwt_refreshed, 1, "{stats:?}");
    assert_eq!(results(&stats, "cookie_missing"), 0, "{stats:?}");

    // A server that stops giving refresh JWTs: the next rotations log in again.
    f.sim.set_jwt_refresh(false);
    token = f.wait_new_token("jwt-token", &token, secs(60)).await;
    f.wait_new_token("jwt-token", &token, secs(60)).await;
    let stats = f.sim.stats();
    assert!(stats.jwt_issued >= 4, "{stats:?}");
    assert!(stats.jwt_refreshed <= 2, "{stats:?}");
    assert_eq!(stats.refresh_token_reuse, 0, "{stats:?}");
    assert_eq!(results(&stats, "refresh_reused"), 0, "{stats:?}");
    assert_eq!(results(&stats, "cookie_missing"), 0, "{stats:?}");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_jwt_is_found_by_the_token_check_and_replaced() {
    let f = started(
        "jwt-revoked",
        SimConfig::new().jwt_cookie("NSSESSION", true),
    )
    .await;
    f.create_credential("jwt", |spec| {
        spec["tokenApi"] = json!("jwt");
        spec["verifyInterval"] = json!("1m");
    })
    .await;
    f.wait_ready("jwt", secs(60)).await;
    let token = data(&f.token_secret("jwt-token").await.unwrap(), "access_token").unwrap();
    // The checks pass while the JWT is good (GET v2/jwt with the session cookie).
    tokio::time::sleep(secs(65)).await;
    assert_eq!(
        data(&f.token_secret("jwt-token").await.unwrap(), "access_token").unwrap(),
        token
    );
    let stats = f.sim.stats();
    assert!(stats.count("jwt_read/-/ok") >= 1, "no check: {stats:?}");
    assert_eq!(results(&stats, "cookie_missing"), 0, "{stats:?}");

    f.sim.revoke_token(&token);
    let new = f.wait_new_token("jwt-token", &token, secs(90)).await;
    assert!(f.sim.is_token_valid(&new));
    f.assert_no_secret_leaked().await;
}
