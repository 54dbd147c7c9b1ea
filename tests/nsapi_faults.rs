//! The fault matrix, NetSapiens side: the operator binary against nsapi-sim playing hostile or
//! broken answers. Each case ends with a valid token (or a named condition that says why not),
//! a bounded number of requests (no retry loop), and no secret value in the operator's logs,
//! the Events or the status.

mod control_plane;
mod fixture;

use std::time::Duration;

use control_plane::{ProxyMode, TcpProxy};
use fixture::{Fixture, data};
use nsapi_sim::{Fault, RefreshMode, SimConfig};
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

/// The message of the credential's Degraded condition once it has `reason`.
async fn degraded(f: &Fixture, name: &str, reason: &str) -> String {
    let cred = f
        .wait_condition(name, "Degraded", "True", Some(reason), secs(60))
        .await;
    cred.status
        .unwrap()
        .condition("Degraded")
        .unwrap()
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_is_honoured() {
    let f = started("rate-limited", SimConfig::new()).await;
    f.sim.inject(Fault::TooManyRequests {
        retry_after_secs: 20,
        count: 1,
    });
    f.create_credential("abc", |_| {}).await;
    let message = degraded(&f, "abc", "ApiUnavailable").await;
    assert!(message.contains("retry after 20s"), "{message}");
    tokio::time::sleep(secs(12)).await;
    assert_eq!(
        f.sim.stats().token_requests,
        1,
        "retried before Retry-After"
    );
    f.wait_ready("abc", secs(40)).await;
    assert_eq!(f.sim.stats().token_requests, 2);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firewall_ban_parks_the_credential_instead_of_hammering() {
    let f = started("firewall", SimConfig::new()).await;
    f.sim.inject(Fault::Firewall {
        after: 0,
        window: secs(3600),
    });
    f.create_credential("abc", |_| {}).await;
    let message = degraded(&f, "abc", "ApiUnavailable").await;
    assert!(message.contains("firewall"), "{message}");
    let cred = f.credential("abc").await;
    let next = cred.status.unwrap().next_refresh_at.unwrap().0;
    let wait = next.duration_since(jiff::Timestamp::now());
    assert!(
        wait >= jiff::SignedDuration::from_mins(14),
        "retrying after only {wait:?}"
    );
    tokio::time::sleep(secs(15)).await;
    assert_eq!(f.sim.stats().token_requests, 1);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_that_hangs_times_out_and_the_credential_recovers() {
    let f = started("hang", SimConfig::new()).await;
    f.sim.inject(Fault::Hang);
    f.create_credential("abc", |_| {}).await;
    let message = degraded(&f, "abc", "ApiUnavailable").await;
    assert!(message.contains("did not answer"), "{message}");
    f.sim.clear_faults();
    f.wait_ready("abc", secs(60)).await;
    let requests = f.sim.stats().token_requests;
    assert!(requests <= 4, "{requests} requests");
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_64_mib_bodies_are_retried_and_cost_no_memory() {
    let f = started("bodies", SimConfig::new()).await;
    f.sim.inject_times(Fault::TruncatedBody, 1);
    f.create_credential("truncated", |_| {}).await;
    degraded(&f, "truncated", "ApiUnavailable").await;
    f.wait_ready("truncated", secs(60)).await;

    f.sim.inject_times(
        Fault::HugeBody {
            bytes: 64 * 1024 * 1024,
            chunked: false,
        },
        1,
    );
    f.create_credential("huge", |spec| {
        spec["tokenSecret"]["name"] = json!("huge-token")
    })
    .await;
    let message = degraded(&f, "huge", "ApiUnavailable").await;
    assert!(message.contains("unusable answer"), "{message}");
    f.wait_ready("huge", secs(60)).await;
    assert_eq!(
        f.sim.stats().token_requests,
        4,
        "each bad answer retried once"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_expires_in_values_are_retried_and_a_huge_one_does_not_loop() {
    let f = started("expires-in", SimConfig::new()).await;
    for (i, value) in [json!(0), json!(-5), json!("soon")].into_iter().enumerate() {
        let name = format!("bad-{i}");
        f.sim.inject_times(
            Fault::ExpiresIn {
                value: value.clone(),
            },
            1,
        );
        f.create_credential(&name, |spec| {
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"))
        })
        .await;
        let message = degraded(&f, &name, "ApiUnavailable").await;
        assert!(message.contains("expires_in is"), "{value}: {message}");
        f.wait_ready(&name, secs(60)).await;
    }
    assert_eq!(f.sim.stats().token_requests, 6);

    // 30 days, and 1e300: taken as a week, obtained once, then left alone.
    f.sim.inject(Fault::ExpiresIn {
        value: json!(2_592_000),
    });
    f.create_credential("long", |spec| {
        spec["tokenSecret"]["name"] = json!("long-token")
    })
    .await;
    let cred = f.wait_ready("long", secs(60)).await;
    let status = cred.status.unwrap();
    let lifetime = status
        .expires_at
        .unwrap()
        .0
        .duration_since(status.issued_at.unwrap().0);
    assert_eq!(lifetime, jiff::SignedDuration::from_hours(7 * 24));
    let before = f.sim.stats().token_requests;
    tokio::time::sleep(secs(15)).await;
    assert_eq!(
        f.sim.stats().token_requests,
        before,
        "an implausible lifetime made the operator obtain tokens in a loop"
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_session() {
    let f = started(
        "omit",
        SimConfig::new()
            .token_ttl(secs(20))
            .refresh_mode(RefreshMode::Omit),
    )
    .await;
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", secs(60)).await;
    let mut token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    for _ in 0..3 {
        token = f.wait_new_token("abc-token", &token, secs(40)).await;
        assert!(f.sim.is_token_valid(&token));
    }
    let stats = f.sim.stats();
    eprintln!(
        "measure: omit mode, 3 rotations: {} password grants, {} refresh grants ({} ok)",
        stats.password_grants, stats.refresh_grants, stats.refresh_grants_ok
    );
    assert_eq!(stats.password_grants, 1, "the session was dropped");
    assert_eq!(stats.refresh_grants_ok, 3);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_that_never_connected_keeps_its_refresh_token() {
    // The port of the API closed across a rotation (a stopped server, not a slow one): the
    // refresh grant cannot connect, so it sent nothing, and once the port opens again the
    // same refresh token is used. No second login.
    let f = started(
        "unsent",
        SimConfig::new()
            .token_ttl(secs(20))
            .refresh_mode(RefreshMode::Rotate),
    )
    .await;
    let proxy = TcpProxy::start(f.sim.addr()).await;
    let base = f
        .sim
        .base_url()
        .replace(&f.sim.addr().to_string(), &proxy.addr.to_string());
    f.create_credential("abc", |spec| spec["apiBaseUrl"] = json!(base))
        .await;
    f.wait_ready("abc", secs(60)).await;
    let first = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    proxy.set(ProxyMode::Closed);
    let unsent = r#"nsapi_token_operator_token_requests_total{grant="refresh_token",result="connect_failed"}"#;
    control_plane::eventually(
        "a refresh grant that could not connect",
        secs(40),
        || async {
            let (_, metrics) = f.operator_http("/metrics").await;
            metrics.lines().any(|l| l.starts_with(unsent)).then_some(())
        },
    )
    .await;
    proxy.set(ProxyMode::Forward);
    let second = f.wait_new_token("abc-token", &first, secs(60)).await;
    assert!(f.sim.is_token_valid(&second));
    let stats = f.sim.stats();
    eprintln!(
        "measure: port closed across a rotation: {} password grants, {} refresh grants ({} ok), {} reuses",
        stats.password_grants,
        stats.refresh_grants,
        stats.refresh_grants_ok,
        stats.refresh_token_reuse
    );
    assert_eq!(stats.password_grants, 1, "a second login");
    assert!(stats.refresh_grants_ok >= 1);
    assert_eq!(stats.refresh_token_reuse, 0);
    // The new token came from the refresh grant.
    f.wait_condition("abc", "Ready", "True", Some("TokenRefreshed"), secs(30))
        .await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_v1_when_the_server_answers_v2_with_an_html_403_or_5xx() {
    let f = started("v2-absent", SimConfig::new().v2_enabled(false)).await;
    for (status, name) in [(403, "forbidden"), (503, "unavailable")] {
        f.sim.set_v2_absent_status(status);
        f.create_credential(name, |spec| {
            spec["tokenApi"] = json!("auto");
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"));
        })
        .await;
        let cred = f.wait_ready(name, secs(60)).await;
        assert_eq!(
            cred.status.unwrap().token_api.as_deref(),
            Some("v1"),
            "{status}"
        );
    }
    let stats = f.sim.stats();
    assert_eq!((stats.v2_requests, stats.token_requests), (2, 4));
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_server_side_is_replaced_at_the_next_rotation() {
    let f = started("revoked", SimConfig::new().token_ttl(secs(20))).await;
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", secs(60)).await;
    let token = data(&f.token_secret("abc-token").await.unwrap(), "access_token").unwrap();
    f.sim.revoke_token(&token);
    assert!(!f.sim.is_token_valid(&token));
    let next = f.wait_new_token("abc-token", &token, secs(40)).await;
    assert!(f.sim.is_token_valid(&next));
    f.wait_ready("abc", secs(30)).await;
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_waiting_out_an_outage_are_woken_when_the_host_answers_again() {
    // Four credentials fail on a host answering 503 to everything until each has failed four
    // times (its next attempt 20-40 s away). The outage ends; a new credential gets a token at
    // once, and that answer wakes the four: each gets its token with one request, before the
    // retry time its status announced.
    let f = started("outage-wake", SimConfig::new()).await;
    f.sim.inject(Fault::StatusFraction {
        status: 503,
        fraction: 1.0,
    });
    let waiting = ["a", "b", "c", "d"];
    for name in waiting {
        f.create_credential(name, |spec| {
            spec["tokenSecret"]["name"] = json!(format!("{name}-token"))
        })
        .await;
    }
    let mut retry_at = Vec::new();
    for name in waiting {
        let cred =
            control_plane::eventually(&format!("{name} to fail four times"), secs(120), || async {
                let cred = f.credentials().get(name).await.ok()?;
                let status = cred.status.as_ref()?;
                (status.consecutive_failures >= 4).then_some(cred)
            })
            .await;
        let status = cred.status.unwrap();
        retry_at.push(status.next_refresh_at.unwrap().0);
    }
    let failed = f.sim.stats().token_requests;
    f.sim.clear_faults();
    let back = jiff::Timestamp::now();

    f.create_credential("probe", |spec| {
        spec["tokenSecret"]["name"] = json!("probe-token")
    })
    .await;
    let mut woken = 0;
    for (name, retry_at) in waiting.into_iter().zip(retry_at) {
        let cred = f.wait_ready(name, secs(60)).await;
        let issued = cred.status.unwrap().issued_at.unwrap().0;
        // Only a retry time well after the outage's end tells a wake from a retry (the last
        // credential to fail its fourth time has one 20 s or more after it).
        if retry_at.duration_since(back) >= jiff::SignedDuration::from_secs(10) {
            assert!(
                issued < retry_at,
                "{name} waited out its backoff (token issued {issued}, retry announced for {retry_at})"
            );
            woken += 1;
        }
    }
    assert!(woken >= 1, "no credential had a retry time to beat");
    f.wait_ready("probe", secs(60)).await;
    // One request each once the host answered (one more if a retry raced the fault's end).
    let after = f.sim.stats().token_requests - failed;
    assert!(after <= 6, "{after} requests once the host answered");
    f.assert_no_secret_leaked().await;
}
