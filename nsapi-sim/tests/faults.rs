//! Each fault, injected at start or at run time, observed over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::{Fault, RefreshMode};
use serde_json::Value;

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
