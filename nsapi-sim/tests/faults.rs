//! Each fault, injected at start or at run time, observed over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::{Fault, RefreshMode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn status_fault_answers_the_next_n_requests_then_recovers() {
    let sim = start().await;
    sim.inject(Fault::Status {
        status: 503,
        count: 2,
    });
    for _ in 0..2 {
        let res = password_grant(&sim).await;
        assert_eq!(res.status(), 503);
        assert!(content_type(&res).starts_with("text/html"));
    }
    assert_eq!(password_grant(&sim).await.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.password_grants, stats.password_grants_ok), (3, 1));
    assert_eq!(stats.count("token/password/fault_503"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_5xx_status_can_be_played() {
    let sim = start().await;
    for status in [500, 502, 503] {
        sim.inject(Fault::Status { status, count: 1 });
        assert_eq!(password_grant(&sim).await.status(), status);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_fraction_one_fails_all_and_zero_fails_none() {
    let sim = start().await;
    sim.inject(Fault::StatusFraction {
        status: 500,
        fraction: 1.0,
    });
    for _ in 0..3 {
        assert_eq!(password_grant(&sim).await.status(), 500);
    }
    sim.clear_faults();
    sim.inject(Fault::StatusFraction {
        status: 500,
        fraction: 0.0,
    });
    for _ in 0..3 {
        assert_eq!(password_grant(&sim).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_delays_but_still_answers() {
    let sim = start().await;
    sim.inject(Fault::Latency(Duration::from_millis(20)));
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(sim.stats().count("token/password/ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hang_makes_the_client_time_out_until_cleared() {
    let sim = start().await;
    sim.inject(Fault::Hang);
    let err = http_with_timeout(Duration::from_millis(200))
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .expect_err("the request hangs");
    assert!(err.is_timeout(), "{err}");
    sim.clear_faults();
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(sim.stats().count("token/password/fault_hang"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_releases_a_hanging_request() {
    let sim = start().await;
    sim.inject(Fault::Hang);
    let url = format!("{}oauth2/token/", sim.base_url());
    let pending = tokio::spawn(async move {
        http()
            .post(url)
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
    });
    for _ in 0..1000 {
        if sim.stats().token_requests > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.shutdown().await;
    // Whatever the client sees (a 503 or a closed connection), it is not left hanging.
    let _ = pending.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_not_parseable_and_still_consumes_a_rotated_refresh_token() {
    let sim = start_with(config().refresh_mode(RefreshMode::Rotate)).await;
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    sim.inject_times(Fault::MalformedJson, 1);
    let res = refresh_by_get(&sim, &rt).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(text.starts_with('{'));
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 400);
    let stats = sim.stats();
    assert_eq!(
        stats.count("token/refresh_token/fault_malformed_json_ok"),
        1
    );
    assert_eq!(stats.refresh_grants_ok, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_body_keeps_the_status() {
    let sim = start().await;
    sim.inject(Fault::EmptyBody);
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().is_empty());
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_as_html_labels_a_good_answer_text_html() {
    let sim = start().await;
    sim.inject(Fault::JsonAsHtml);
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("text/html"));
    let t: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    assert_eq!(sim.stats().password_grants_ok, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn firewall_answers_html_403_past_n_requests_per_window() {
    let sim = start().await;
    sim.inject(Fault::Firewall {
        after: 2,
        window: Duration::from_secs(600),
    });
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(password_grant(&sim).await.status(), 200);
    for _ in 0..2 {
        let res = password_grant(&sim).await;
        assert_eq!(res.status(), 403);
        assert!(content_type(&res).starts_with("text/html"));
        assert!(res.text().await.unwrap().contains("firewall"));
    }
    assert_eq!(sim.stats().count("token/password/fault_firewall"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn firewall_window_ends() {
    let sim = start().await;
    sim.inject(Fault::Firewall {
        after: 1,
        window: Duration::from_millis(30),
    });
    assert_eq!(password_grant(&sim).await.status(), 200);
    // Sleep past the window before each request, so it is the first of a new window.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(password_grant(&sim).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_sends_retry_after() {
    let sim = start().await;
    sim.inject(Fault::TooManyRequests {
        retry_after_secs: 30,
        count: 1,
    });
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "30");
    assert_eq!(password_grant(&sim).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_scope_on_v1() {
    let sim = start().await;
    sim.inject_times(Fault::InvalidScope, 1);
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Invalid Scope [APP001]"
    );
    assert_eq!(password_grant(&sim).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_refresh_fails_refreshes_but_not_password_grants() {
    let sim = start().await;
    sim.inject(Fault::RejectRefresh);
    let t = token(&sim).await;
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        400
    );
    sim.clear_faults();
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        200
    );
    assert_eq!(sim.stats().count("token/refresh_token/refresh_rejected"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_can_refuse_get_or_post() {
    let sim = start().await;
    sim.inject(Fault::MethodNotAllowed {
        method: "GET".into(),
    });
    let t = token(&sim).await;
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        405
    );
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&refresh_fields(str_field(&t, "refresh_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_set_at_start_apply_from_the_first_request() {
    let sim = start_with(config().fault(Fault::Status {
        status: 502,
        count: 1,
    }))
    .await;
    assert_eq!(password_grant(&sim).await.status(), 502);
    assert_eq!(password_grant(&sim).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn inject_times_limits_an_open_ended_fault() {
    let sim = start().await;
    sim.inject_times(
        Fault::StatusFraction {
            status: 500,
            fraction: 1.0,
        },
        2,
    );
    assert_eq!(password_grant(&sim).await.status(), 500);
    assert_eq!(password_grant(&sim).await.status(), 500);
    assert_eq!(password_grant(&sim).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_body_announces_more_than_it_sends_then_closes_the_connection() {
    let sim = start_with(config().refresh_mode(RefreshMode::Rotate)).await;
    sim.inject_times(Fault::TruncatedBody, 1);
    let raw = raw_form_post(sim.addr(), "/ns-api/oauth2/token/", &password_form()).await;
    assert!(raw.head.starts_with("HTTP/1.1 200"), "{}", raw.head);
    let announced = raw.content_length.expect("a Content-Length");
    assert!(
        raw.body.len() < announced,
        "{} of {announced} bytes sent",
        raw.body.len()
    );
    assert!(raw.body.starts_with(b"{\"access_token\""));
    // Worn off after one use.
    assert_eq!(password_grant(&sim).await.status(), 200);

    // A client library sees the status, then fails reading the body; a rotated refresh token
    // was consumed all the same.
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    sim.inject(Fault::TruncatedBody);
    let res = refresh_by_get(&sim, &rt).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err());
    sim.clear_faults();
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 400);
    let stats = sim.stats();
    assert_eq!(stats.count("token/password/fault_truncated_body_ok"), 1);
    assert_eq!(
        stats.count("token/refresh_token/fault_truncated_body_ok"),
        1
    );
    assert_eq!(stats.password_grants_ok, 2);
}

/// Resident memory of this process, in bytes (Linux), to show a huge body is streamed.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_body_streams_n_bytes_that_start_like_json() {
    const SIZE: u64 = 64 << 20;
    let sim = start().await;
    sim.inject_times(
        Fault::HugeBody {
            bytes: SIZE,
            chunked: false,
        },
        1,
    );
    let before = rss_bytes();
    let mut res = http_with_timeout(Duration::from_secs(60))
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.content_length(), Some(SIZE));
    let (mut total, mut start) = (0u64, Vec::new());
    while let Some(chunk) = res.chunk().await.unwrap() {
        if start.len() < 32 {
            start.extend_from_slice(&chunk[..chunk.len().min(32)]);
        }
        total += chunk.len() as u64;
    }
    assert_eq!(total, SIZE);
    assert!(start.starts_with(b"{\"access_token\":\"0000"), "{start:?}");
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(grown < SIZE / 2, "memory grew by {grown} bytes");
    }
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(sim.stats().count("token/password/fault_huge_body_ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_body_can_be_chunked_without_a_content_length() {
    let sim = start().await;
    sim.inject(Fault::HugeBody {
        bytes: 1 << 20,
        chunked: true,
    });
    let raw = raw_form_post(sim.addr(), "/ns-api/oauth2/token/", &password_form()).await;
    assert!(raw.head.starts_with("HTTP/1.1 200"), "{}", raw.head);
    assert_eq!(raw.content_length, None);
    assert!(
        raw.head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        raw.head
    );
    let res = password_grant(&sim).await;
    assert_eq!(res.content_length(), None);
    assert_eq!(res.bytes().await.unwrap().len(), 1 << 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_in_reports_any_value_while_the_token_keeps_its_real_lifetime() {
    let sim = start_with(config().token_ttl(Duration::from_secs(120))).await;
    for value in [
        json!(0),
        json!(-5),
        json!("soon"),
        json!(1e300),
        json!(2592000),
        json!(null),
        json!(3.5),
    ] {
        sim.inject_times(
            Fault::ExpiresIn {
                value: value.clone(),
            },
            1,
        );
        let t = token(&sim).await;
        assert_eq!(t["expires_in"], value);
        assert!(sim.is_token_valid(str_field(&t, "access_token")));
    }
    // Worn off: the real lifetime again, on refresh and on v2 alike.
    let t = token(&sim).await;
    assert_eq!(t["expires_in"], 120);
    sim.inject(Fault::ExpiresIn { value: json!(-5) });
    let refreshed: Value = refresh_by_get(&sim, str_field(&t, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["expires_in"], -5);
    let v2: Value = http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .json(&json!({"grant_type": "password", "client_id": CLIENT_ID,
                      "client_secret": CLIENT_SECRET, "username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["expires_in"], -5);
    // A failed grant is not one of its uses.
    sim.clear_faults();
    sim.inject_times(Fault::ExpiresIn { value: json!(0) }, 1);
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(token(&sim).await["expires_in"], 0);
    assert_eq!(token(&sim).await["expires_in"], 120);
}
