//! The `/_sim/` admin API: the same state as the Rust handle, reachable with curl.

mod common;

use common::*;
use nsapi_sim::Sim;
use serde_json::{Value, json};

fn admin(sim: &Sim, path: &str) -> String {
    format!("{}{path}", sim.admin_url())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_urls() {
    let sim = start().await;
    assert_eq!(sim.admin_url(), format!("http://{}/_sim/", sim.addr()));
    assert_eq!(sim.base_url(), format!("http://{}/ns-api/", sim.addr()));
    let res = http().get(admin(&sim, "health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_are_read_and_reset() {
    let sim = start().await;
    token(&sim).await;
    let stats: Value = http()
        .get(admin(&sim, "stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["token_requests"], 1);
    assert_eq!(stats["password_grants_ok"], 1);
    assert_eq!(stats["by_key"]["token/password/ok"], 1);
    let res = http().delete(admin(&sim, "stats")).send().await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(sim.stats().token_requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_are_added_listed_and_cleared() {
    let sim = start().await;
    let res = http()
        .post(admin(&sim, "faults"))
        .json(&json!([
            {"type": "status", "status": 503, "count": 1},
            {"type": "latency", "delay": "1ms", "times": 5}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let listed: Value = http()
        .get(admin(&sim, "faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([{"type": "status", "status": 503, "count": 1, "times": 1},
               {"type": "latency", "delay": "1ms", "times": 5}])
    );
    assert_eq!(password_grant(&sim).await.status(), 503);

    let one = json!({"type": "too_many_requests", "retry_after_secs": 9});
    let res = http()
        .post(admin(&sim, "faults"))
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(password_grant(&sim).await.status(), 429);

    http()
        .post(admin(&sim, "faults"))
        .json(&json!({"type": "hang"}))
        .send()
        .await
        .unwrap();
    let res = http().delete(admin(&sim, "faults")).send().await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(password_grant(&sim).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_body_faults_are_injected_with_times() {
    let sim = start().await;
    let res = http()
        .post(admin(&sim, "faults"))
        .json(&json!([
            {"type": "expires_in", "value": "soon", "times": 2},
            {"type": "huge_body", "bytes": 4096, "times": 1},
            {"type": "truncated_body", "times": 1}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let listed: Value = res.json().await.unwrap();
    assert_eq!(
        listed,
        json!([{"type": "expires_in", "value": "soon", "times": 2},
               {"type": "huge_body", "bytes": 4096, "times": 1},
               {"type": "truncated_body", "times": 1}])
    );
    // The first body fault applies first, then the next; expires_in rides along.
    let res = password_grant(&sim).await;
    assert_eq!(res.content_length(), Some(4096));
    assert_eq!(res.bytes().await.unwrap().len(), 4096);
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err());
    let t = token(&sim).await;
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(sim.stats().password_grants_ok, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_fault_is_refused() {
    let sim = start().await;
    for bad in [
        json!({"type": "meteor"}),
        json!({"type": "status", "status": 1000}),
    ] {
        let res = http()
            .post(admin(&sim, "faults"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_validity_by_get_and_post() {
    let sim = start().await;
    let t = token(&sim).await;
    let access = str_field(&t, "access_token");
    let by_get: Value = http()
        .get(admin(&sim, "tokens/valid"))
        .query(&[("token", access)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_get, json!({"valid": true}));
    let by_post: Value = http()
        .post(admin(&sim, "tokens/valid"))
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_post, json!({"valid": false, "reason": "invalid_token"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_revoked_and_expired() {
    let sim = start().await;
    let a = token(&sim).await;
    let b = token(&sim).await;
    let post = |path: &'static str, token: String| {
        let url = admin(&sim, path);
        async move {
            http()
                .post(url)
                .json(&json!({"token": token}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post("tokens/revoke", str_field(&a, "access_token").into()).await["found"],
        true
    );
    assert_eq!(
        post("tokens/expire", str_field(&b, "access_token").into()).await["found"],
        true
    );
    assert_eq!(
        post("tokens/revoke", "unknown".into()).await["found"],
        false
    );
    assert!(!sim.is_token_valid(str_field(&a, "access_token")));
    assert!(!sim.is_token_valid(str_field(&b, "access_token")));
}

#[tokio::test(flavor = "multi_thread")]
async fn all_refresh_tokens_are_revoked() {
    let sim = start().await;
    let t = token(&sim).await;
    let res = http()
        .post(admin(&sim, "refresh-tokens/revoke"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_and_subscribers_are_added_and_passwords_changed() {
    let sim = start().await;
    let res = http()
        .post(admin(&sim, "clients"))
        .json(&json!({"id": "c2", "secret": "s2"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let res = http()
        .post(admin(&sim, "subscribers"))
        .json(
            &json!({"username": "200@xyz", "password": "pw", "scope": "Basic User",
                      "territory": "t9", "uid": "200@xyz.t9"}),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let grant = |password: &'static str| {
        let url = format!("{}oauth2/token/", sim.base_url());
        async move {
            http()
                .post(url)
                .form(&[
                    ("grant_type", "password"),
                    ("client_id", "c2"),
                    ("client_secret", "s2"),
                    ("username", "200@xyz"),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let t: Value = grant("pw").await.json().await.unwrap();
    assert_eq!(t["scope"], "Basic User");
    assert_eq!(t["domain"], "xyz");
    assert_eq!(t["uid"], "200@xyz.t9");

    let res = http()
        .put(admin(&sim, "subscribers/200@xyz/password"))
        .json(&json!({"password": "pw2"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(grant("pw").await.status(), 401);
    assert_eq!(grant("pw2").await.status(), 200);

    let res = http()
        .put(admin(&sim, "subscribers/nobody/password"))
        .json(&json!({"password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_are_read_and_changed() {
    let sim = start().await;
    let settings: Value = http()
        .get(admin(&sim, "settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["token_ttl"], "3600s");
    assert_eq!(settings["refresh_mode"], "same");
    assert_eq!(settings["refresh_token_ttl"], "never");
    assert_eq!(settings["v2_enabled"], true);
    assert_eq!(settings["error_body"], "oauth");

    let res = http()
        .put(admin(&sim, "settings"))
        .json(
            &json!({"token_ttl": "5s", "refresh_mode": "rotate", "v2_enabled": false,
                      "refresh_token_ttl": 120, "bad_client_status": 403,
                      "error_body": "code_message"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let now: Value = res.json().await.unwrap();
    assert_eq!(now["refresh_token_ttl"], "120s");
    assert_eq!(token(&sim).await["expires_in"], 5);
    let v2 = http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 404);

    let res = http()
        .put(admin(&sim, "settings"))
        .json(&json!({"token_tll": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let res = http()
        .put(admin(&sim, "settings"))
        .json(&json!({"refresh_mode": "omit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["refresh_mode"], "omit");
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    let t: Value = refresh_by_get(&sim, &rt).await.json().await.unwrap();
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_absent_status_is_a_setting() {
    let sim = start().await;
    let settings: Value = http()
        .get(admin(&sim, "settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(settings["v2_absent_status"], 404);
    let res = http()
        .put(admin(&sim, "settings"))
        .json(&json!({"v2_enabled": false, "v2_absent_status": 502}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v2 = http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 502);
    assert!(content_type(&v2).starts_with("text/html"));
    let res = http()
        .put(admin(&sim, "settings"))
        .json(&json!({"v2_absent_status": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_last_handle_stops_the_server() {
    let sim = start().await;
    let clone = sim.clone();
    let addr = sim.addr();
    drop(sim);
    // A clone keeps it running.
    assert_eq!(password_grant(&clone).await.status(), 200);
    drop(clone);
    // The server stops soon after; poll (bounded) until connections are refused.
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the server still accepts connections");
}
