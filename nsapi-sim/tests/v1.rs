//! The v1 token endpoint: request encodings, the answer's shape, refresh modes, lifetimes,
//! revocation and the configurable error statuses and bodies.

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::{ErrorBody, RefreshMode, SimConfig};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_by_form_post_answers_the_guides_shape() {
    let sim = start().await;
    let t = token(&sim).await;
    assert!(is_hex_token(str_field(&t, "access_token")), "{t}");
    assert!(is_hex_token(str_field(&t, "refresh_token")), "{t}");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], "Office Manager");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["legacy"], false);
    assert_eq!(t["domain"], "abc-company");
    assert_eq!(t["apiversion"], "Version: 44.1.0");
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    let stats = sim.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.password_grants,
            stats.password_grants_ok
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.count("token/password/ok"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_answers_with_and_without_trailing_slash() {
    let sim = start().await;
    for path in ["oauth2/token/", "oauth2/token"] {
        let res = http()
            .post(format!("{}{path}", sim.base_url()))
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    assert_eq!(sim.stats().password_grants_ok, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_by_get_query_string() {
    let sim = start().await;
    let res = http()
        .get(format!("{}oauth2/token/", sim.base_url()))
        .query(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_by_json_body() {
    let sim = start().await;
    let body: serde_json::Map<String, Value> = password_fields(USER, PASSWORD)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_grant_by_multipart_body() {
    let sim = start().await;
    let boundary = "sim-test-boundary";
    let mut body = String::new();
    for (k, v) in password_fields(USER, PASSWORD) {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_password_and_unknown_user_are_401() {
    let sim = start().await;
    for (user, password) in [(USER, "wrong"), ("nobody@abc-company", PASSWORD)] {
        let res = http()
            .post(format!("{}oauth2/token/", sim.base_url()))
            .form(&password_fields(user, password))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
    let stats = sim.stats();
    assert_eq!((stats.password_grants, stats.password_grants_ok), (2, 0));
    assert_eq!(stats.count("token/password/invalid_credentials"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn username_matches_exactly_after_decoding() {
    let sim = start().await;
    // A client that encodes `@` twice sends `111%2540abc-company`: the server sees `111%40...`.
    let body = format!(
        "grant_type=password&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}\
         &username=111%2540abc-company&password=s3cret+pass%2Bword"
    );
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.replace("%2540", "%40"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_unknown_grant_type_is_400() {
    let sim = start().await;
    for fields in [
        vec![("client_id", CLIENT_ID)],
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
        ],
    ] {
        let res = http()
            .post(format!("{}oauth2/token/", sim.base_url()))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    }
    let stats = sim.stats();
    assert_eq!(stats.count("token/-/invalid_request"), 1);
    assert_eq!(stats.count("token/other/unsupported_grant_type"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_status_and_error_body_shapes_are_configurable() {
    let sim = start().await;
    let bad_client = || async {
        let mut fields = password_fields(USER, PASSWORD);
        fields[2].1 = "not-the-secret";
        http()
            .post(format!("{}oauth2/token/", sim.base_url()))
            .form(&fields)
            .send()
            .await
            .unwrap()
    };
    let res = bad_client().await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let cases = [
        (
            400,
            ErrorBody::CodeMessage,
            "application/json",
            "\"code\":400",
        ),
        (
            403,
            ErrorBody::Text,
            "text/plain",
            "client credentials are invalid",
        ),
        (401, ErrorBody::Html, "text/html", "<html>"),
        (
            400,
            ErrorBody::JsonAsHtml,
            "text/html",
            "\"error\":\"invalid_client\"",
        ),
    ];
    for (status, style, ct, needle) in cases {
        sim.set_errors(status, 400, style);
        let res = bad_client().await;
        assert_eq!(res.status(), status, "{style:?}");
        assert!(
            content_type(&res).starts_with(ct),
            "{style:?}: {}",
            content_type(&res)
        );
        let text = res.text().await.unwrap();
        assert!(text.contains(needle), "{style:?}: {text}");
    }
    sim.set_errors(403, 400, ErrorBody::Empty);
    let res = bad_client().await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().is_empty());
    assert_eq!(sim.stats().count("token/password/invalid_client"), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_mode_refresh_by_get_returns_the_same_refresh_token() {
    let sim = start().await;
    let first = token(&sim).await;
    let rt = str_field(&first, "refresh_token");
    for _ in 0..2 {
        let res = refresh_by_get(&sim, rt).await;
        assert_eq!(res.status(), 200);
        let t: Value = res.json().await.unwrap();
        assert_eq!(str_field(&t, "refresh_token"), rt);
        assert_ne!(t["access_token"], first["access_token"]);
        assert!(sim.is_token_valid(str_field(&t, "access_token")));
    }
    let stats = sim.stats();
    assert_eq!((stats.refresh_grants, stats.refresh_grants_ok), (2, 2));
    // One refresh token and three access tokens were handed out.
    let issued = sim.issued_tokens();
    assert_eq!(issued.len(), 4);
    assert!(issued.iter().any(|t| t == rt));
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_by_post_form_works_too() {
    let sim = start().await;
    let first = token(&sim).await;
    let res = http()
        .post(format!("{}oauth2/token", sim.base_url()))
        .form(&refresh_fields(str_field(&first, "refresh_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_needs_the_client_secret() {
    let sim = start().await;
    let first = token(&sim).await;
    let mut fields = refresh_fields(str_field(&first, "refresh_token"));
    fields.remove(2);
    let res = http()
        .get(format!("{}oauth2/token/", sim.base_url()))
        .query(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_mode_accepts_each_refresh_token_once_and_counts_reuse() {
    let sim = start_with(config().refresh_mode(RefreshMode::Rotate)).await;
    let first = token(&sim).await;
    let rt1 = str_field(&first, "refresh_token");
    let res = refresh_by_get(&sim, rt1).await;
    assert_eq!(res.status(), 200);
    let second: Value = res.json().await.unwrap();
    let rt2 = str_field(&second, "refresh_token");
    assert_ne!(rt1, rt2);

    let reuse = refresh_by_get(&sim, rt1).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(refresh_by_get(&sim, rt2).await.status(), 200);

    let stats = sim.stats();
    assert_eq!(stats.refresh_token_reuse, 1);
    assert_eq!((stats.refresh_grants, stats.refresh_grants_ok), (3, 2));
    assert_eq!(stats.count("token/refresh_token/refresh_reused"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn omit_mode_answers_refreshes_without_a_refresh_token_and_keeps_the_old_one() {
    let sim = start_with(config().refresh_mode(RefreshMode::Omit)).await;
    let first = token(&sim).await;
    let rt = str_field(&first, "refresh_token").to_owned();
    assert!(is_hex_token(&rt));
    for _ in 0..3 {
        let res = refresh_by_get(&sim, &rt).await;
        assert_eq!(res.status(), 200);
        let t: Value = res.json().await.unwrap();
        assert!(t.get("refresh_token").is_none(), "{t}");
        assert!(sim.is_token_valid(str_field(&t, "access_token")));
    }
    // By POST too, and a password grant still returns a refresh token.
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&refresh_fields(&rt))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.json::<Value>()
            .await
            .unwrap()
            .get("refresh_token")
            .is_none()
    );
    assert!(token(&sim).await["refresh_token"].is_string());
    let stats = sim.stats();
    assert_eq!((stats.refresh_grants, stats.refresh_grants_ok), (4, 4));
    assert_eq!(stats.refresh_token_reuse, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn omit_mode_refresh_token_can_still_be_revoked_and_expired() {
    let sim = start_with(config().refresh_mode(RefreshMode::Omit)).await;
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    let t: Value = refresh_by_get(&sim, &rt).await.json().await.unwrap();
    // Revoking the access token issued by the refresh revokes the refresh token it came from.
    sim.revoke_token(str_field(&t, "access_token"));
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 400);
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    sim.expire_token(&rt);
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_mode_can_change_at_run_time() {
    let sim = start().await;
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    sim.set_refresh_mode(RefreshMode::Omit);
    let t: Value = refresh_by_get(&sim, &rt).await.json().await.unwrap();
    assert!(t.get("refresh_token").is_none(), "{t}");
    sim.set_refresh_mode(RefreshMode::Rotate);
    let t: Value = refresh_by_get(&sim, &rt).await.json().await.unwrap();
    assert_ne!(str_field(&t, "refresh_token"), rt);
    assert_eq!(refresh_by_get(&sim, &rt).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_expire_after_their_lifetime() {
    let sim = start_with(config().refresh_token_ttl(Some(Duration::from_millis(1)))).await;
    let rt = str_field(&token(&sim).await, "refresh_token").to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let res = refresh_by_get(&sim, &rt).await;
    assert_eq!(res.status(), 400);
    assert_eq!(sim.stats().count("token/refresh_token/refresh_expired"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expire_token_works_on_refresh_tokens_and_statuses_follow_config() {
    let sim = start_with(config().errors(401, 403, ErrorBody::OAuth)).await;
    let t = token(&sim).await;
    sim.expire_token(str_field(&t, "refresh_token"));
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_password_grant_can_revoke_earlier_tokens() {
    let sim = start_with(config().password_grant_revokes_previous(true)).await;
    let first = token(&sim).await;
    let second = token(&sim).await;
    assert!(!sim.is_token_valid(str_field(&first, "access_token")));
    assert!(sim.is_token_valid(str_field(&second, "access_token")));
    assert_eq!(
        refresh_by_get(&sim, str_field(&first, "refresh_token"))
            .await
            .status(),
        400
    );
    assert_eq!(sim.stats().count("token/refresh_token/refresh_revoked"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn earlier_tokens_stay_valid_by_default() {
    let sim = start().await;
    let first = token(&sim).await;
    let _second = token(&sim).await;
    assert!(sim.is_token_valid(str_field(&first, "access_token")));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_ttl_is_configurable_down_to_one_second() {
    let sim = start_with(config().token_ttl(Duration::from_secs(60))).await;
    assert_eq!(token(&sim).await["expires_in"], 60);
    sim.set_token_ttl(Duration::from_millis(10));
    assert_eq!(token(&sim).await["expires_in"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_is_no_longer_valid() {
    let sim = start().await;
    let t = token(&sim).await;
    let access = str_field(&t, "access_token");
    sim.expire_token(access);
    assert!(!sim.is_token_valid(access));
    assert_eq!(read(&sim, access).await.status(), 401);
    assert_eq!(sim.stats().count("read/-/expired"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_access_token_revokes_its_refresh_token_and_vice_versa() {
    let sim = start().await;
    let a = token(&sim).await;
    sim.revoke_token(str_field(&a, "access_token"));
    assert!(!sim.is_token_valid(str_field(&a, "access_token")));
    assert_eq!(
        refresh_by_get(&sim, str_field(&a, "refresh_token"))
            .await
            .status(),
        400
    );

    let b = token(&sim).await;
    sim.revoke_token(str_field(&b, "refresh_token"));
    assert!(!sim.is_token_valid(str_field(&b, "access_token")));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_refresh_tokens_forces_a_new_password_grant() {
    let sim = start().await;
    let t = token(&sim).await;
    sim.revoke_refresh_tokens();
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        400
    );
    // The access token itself stays valid, and a new password grant brings a working refresh.
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    let fresh = token(&sim).await;
    assert_eq!(
        refresh_by_get(&sim, str_field(&fresh, "refresh_token"))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_is_bound_to_its_client() {
    let sim = start().await;
    sim.add_client("other-client", "other-secret");
    let t = token(&sim).await;
    let res = http()
        .get(format!("{}oauth2/token/", sim.base_url()))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", "other-client"),
            ("client_secret", "other-secret"),
            ("refresh_token", str_field(&t, "refresh_token")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn mfa_user_gets_an_intermediate_token_that_is_not_valid() {
    let sim = start().await;
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(MFA_USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["scope"], "mfa_required");
    assert_eq!(t["mfa_type"], "totp");
    assert_eq!(t["mfa_vendor"], "google");
    assert!(t.get("refresh_token").is_none());
    let access = str_field(&t, "access_token");
    assert!(!sim.is_token_valid(access));
    assert_eq!(read(&sim, access).await.status(), 401);
    let stats = sim.stats();
    assert_eq!((stats.password_grants, stats.password_grants_ok), (1, 0));
    assert_eq!(stats.count("token/password/mfa_required"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_changes_take_effect_for_new_grants() {
    let sim = start().await;
    sim.set_password(USER, "new-password");
    assert_eq!(password_grant(&sim).await.status(), 401);
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, "new-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn base_path_is_configurable() {
    for (base, suffix) in [("/", "/"), ("/api/ns-api/", "/api/ns-api/")] {
        let sim = start_with(config().base_path(base)).await;
        assert_eq!(sim.base_url(), format!("http://{}{suffix}", sim.addr()));
        assert_eq!(token(&sim).await["token_type"], "Bearer");
        let wrong = http()
            .post(format!("http://{}/ns-api/oauth2/token/", sim.addr()))
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 404, "{base}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_doubled_slash_is_not_found() {
    let sim = start().await;
    let res = http()
        .post(format!("{}/oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_from_json_starts_a_working_simulator() {
    let config = SimConfig::from_json(
        r#"{"token_ttl": "90s", "refresh_mode": "rotate",
            "clients": [{"id": "demo-client", "secret": "demo-secret"}],
            "subscribers": [{"username": "111@abc-company", "password": "s3cret pass+word",
                             "scope": "Basic User", "domain": "abc-company.12345.service"}]}"#,
    )
    .unwrap();
    let sim = start_with(config).await;
    let t = token(&sim).await;
    assert_eq!(t["expires_in"], 90);
    assert_eq!(t["scope"], "Basic User");
    assert_eq!(t["domain"], "abc-company.12345.service");
}
