//! API v2 `tokens` (JSON in and out, `{"code","message"}` errors, the 404 switch) and v1
//! `oauth2/read` (JSON with `format=json`, XML without, Bearer required).

mod common;

use common::*;
use nsapi_sim::Fault;
use serde_json::{Value, json};

async fn v2(sim: &nsapi_sim::Sim, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn v2_password() -> Value {
    json!({"grant_type": "password", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
           "username": USER, "password": PASSWORD})
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_password_and_refresh_grants() {
    let sim = start().await;
    let res = v2(&sim, v2_password()).await;
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("application/json"));
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["username"], USER);
    assert_eq!(t["territory"], "sim-territory");
    assert_eq!(t["client_id"], CLIENT_ID);
    assert!(sim.is_token_valid(str_field(&t, "access_token")));

    let res = v2(
        &sim,
        json!({"grant_type": "refresh_token", "client_id": CLIENT_ID,
               "client_secret": CLIENT_SECRET, "refresh_token": t["refresh_token"]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.v2_requests, stats.token_requests), (2, 2));
    assert_eq!((stats.password_grants_ok, stats.refresh_grants_ok), (1, 1));
    assert_eq!(stats.count("v2/password/ok"), 1);
    assert_eq!(stats.count("v2/refresh_token/ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_omit_mode_refresh_has_no_refresh_token() {
    let sim = start_with(config().refresh_mode(nsapi_sim::RefreshMode::Omit)).await;
    let t: Value = v2(&sim, v2_password()).await.json().await.unwrap();
    let refresh = json!({"grant_type": "refresh_token", "client_id": CLIENT_ID,
                         "client_secret": CLIENT_SECRET, "refresh_token": t["refresh_token"]});
    for _ in 0..2 {
        let res = v2(&sim, refresh.clone()).await;
        assert_eq!(res.status(), 200);
        let again: Value = res.json().await.unwrap();
        assert!(again.get("refresh_token").is_none(), "{again}");
        assert!(sim.is_token_valid(str_field(&again, "access_token")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_errors_are_code_and_message() {
    let sim = start().await;
    let mut body = v2_password();
    body["password"] = json!("wrong");
    let res = v2(&sim, body).await;
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["code"], 401);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Invalid username")
    );

    let res = v2(
        &sim,
        json!({"grant_type": "refresh_token", "client_id": CLIENT_ID,
               "client_secret": CLIENT_SECRET, "refresh_token": "0123abcd"}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_can_answer_404_with_html_like_an_older_server() {
    let sim = start_with(config().v2_enabled(false)).await;
    let res = v2(&sim, v2_password()).await;
    assert_eq!(res.status(), 404);
    assert!(content_type(&res).starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("<html>"));
    sim.set_v2_enabled(true);
    assert_eq!(v2(&sim, v2_password()).await.status(), 200);
    let stats = sim.stats();
    assert_eq!(stats.v2_requests, 2);
    assert_eq!(stats.count("v2/-/not_found"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_absent_status_plays_a_front_end_that_answers_unknown_paths_its_own_way() {
    let sim = start_with(config().v2_enabled(false).v2_absent_status(503)).await;
    let res = v2(&sim, v2_password()).await;
    assert_eq!(res.status(), 503);
    assert!(content_type(&res).starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("<html>"));
    for status in [403, 500, 502, 404] {
        sim.set_v2_absent_status(status);
        let res = v2(&sim, v2_password()).await;
        assert_eq!(res.status(), status);
        assert!(content_type(&res).starts_with("text/html"));
        assert!(res.text().await.unwrap().contains(&status.to_string()));
    }
    // v1 is untouched, and v2 comes back when enabled.
    assert_eq!(password_grant(&sim).await.status(), 200);
    sim.set_v2_enabled(true);
    assert_eq!(v2(&sim, v2_password()).await.status(), 200);
    let stats = sim.stats();
    assert_eq!(stats.count("v2/-/absent_503"), 1);
    assert_eq!(stats.count("v2/-/absent_403"), 1);
    assert_eq!(stats.count("v2/-/not_found"), 1);
    assert_eq!(stats.count("v2/password/ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_invalid_scope_fault() {
    let sim = start().await;
    sim.inject(Fault::InvalidScope);
    let res = v2(&sim, v2_password()).await;
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(
        err,
        json!({"code": 401, "message": "Invalid Scope [APP001]"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_status_fault_answers_code_and_message_json_while_v1_keeps_html() {
    let sim = start().await;
    for status in [500, 502, 503] {
        sim.inject(Fault::Status { status, count: 1 });
        let res = v2(&sim, v2_password()).await;
        assert_eq!(res.status(), status);
        assert!(content_type(&res).starts_with("application/json"));
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["code"], status);
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    sim.inject(Fault::StatusFraction {
        status: 503,
        fraction: 1.0,
    });
    let res = v2(&sim, v2_password()).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"code": 503, "message": "Service Unavailable"})
    );
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 503);
    assert!(content_type(&res).starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("<html>"));
    let stats = sim.stats();
    assert_eq!(stats.count("v2/password/fault_503"), 2);
    assert_eq!(stats.count("token/password/fault_503"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_answers_the_documented_fields_as_json() {
    let sim = start().await;
    let t = token(&sim).await;
    let res = read(&sim, str_field(&t, "access_token")).await;
    assert_eq!(res.status(), 200);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["token"], t["access_token"]);
    assert_eq!(info["client_id"], CLIENT_ID);
    assert_eq!(info["territory"], "sim-territory");
    assert_eq!(info["domain"], "abc-company");
    assert_eq!(info["uid"], USER);
    assert_eq!(info["scope"], "Office Manager");
    assert_eq!(info["apiversion"], "Version: 44.1.0");
    let expires = str_field(&info, "expires");
    assert_eq!(expires.len(), "YYYY-MM-DD HH:MM:SS".len(), "{expires}");
    assert_eq!(&expires[10..11], " ");
    assert_eq!(sim.stats().count("read/-/ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_without_format_answers_xml() {
    let sim = start().await;
    let t = token(&sim).await;
    let res = http()
        .get(format!("{}oauth2/read", sim.base_url()))
        .bearer_auth(str_field(&t, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(content_type(&res).starts_with("text/xml"));
    let xml = res.text().await.unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains(&format!("<token>{}</token>", str_field(&t, "access_token"))));
    assert!(xml.contains("<scope>Office Manager</scope>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn read_rejects_missing_unknown_and_revoked_tokens() {
    let sim = start().await;
    let res = http()
        .get(format!("{}oauth2/read?format=json", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        read(&sim, "0123456789abcdef0123456789abcdef")
            .await
            .status(),
        401
    );
    let t = token(&sim).await;
    sim.revoke_token(str_field(&t, "access_token"));
    assert_eq!(
        read(&sim, str_field(&t, "access_token")).await.status(),
        401
    );
    let stats = sim.stats();
    assert_eq!(stats.read_requests, 3);
    assert_eq!(stats.count("read/-/missing_token"), 1);
    assert_eq!(stats.count("read/-/invalid_token"), 1);
    assert_eq!(stats.count("read/-/revoked"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_status_fault_hits_only_read() {
    let sim = start().await;
    sim.inject(Fault::ReadStatus {
        status: 502,
        count: 1,
    });
    let t = token(&sim).await;
    let access = str_field(&t, "access_token");
    assert_eq!(read(&sim, access).await.status(), 502);
    assert_eq!(read(&sim, access).await.status(), 200);
}
