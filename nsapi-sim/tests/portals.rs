//! What public clients have recorded of real portals (issue 19), played over real HTTP: a 200
//! without a token, numbers as strings, the 44.0.x v1 answer, v2's answer and JSON 404s,
//! `v2/version`, HTTP Basic client authentication, MFA's second step and `v2/jwt`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use nsapi_sim::{ClientAuth, Fault, NoTokenBody, Sim, SimConfig, Subscriber, V1Answer, totp};
use serde_json::{Value, json};

const SEED: &str = "JBSWY3DPEHPK3PXP";
const TOTP_USER: &str = "totp@abc-company";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post_v2(sim: &Sim, path: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn v2_password(user: &str) -> Value {
    json!({"grant_type": "password", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
           "username": user, "password": PASSWORD})
}

// ---- a 200 without a token ----

#[tokio::test(flavor = "multi_thread")]
async fn no_token_fault_answers_200_without_an_access_token() {
    let sim = start().await;
    for (body, expected) in [
        (NoTokenBody::EmptyObject, json!({})),
        (
            NoTokenBody::OauthError,
            json!({"error": "invalid_grant",
                   "error_description": "Invalid username and password combination"}),
        ),
        (
            NoTokenBody::CodeMessage,
            json!({"code": 401, "message": "Invalid username and password combination"}),
        ),
    ] {
        sim.inject_times(Fault::NoToken { body }, 1);
        let res = password_grant(&sim).await;
        assert_eq!(res.status(), 200);
        assert!(content_type(&res).starts_with("application/json"));
        let v: Value = res.json().await.unwrap();
        assert_eq!(v, expected);
        assert!(v.get("access_token").is_none());
    }
    // On v2 too, and then it wears off.
    sim.inject_times(
        Fault::NoToken {
            body: NoTokenBody::EmptyObject,
        },
        1,
    );
    let res = post_v2(&sim, "v2/tokens", v2_password(USER)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({}));
    assert_eq!(password_grant(&sim).await.status(), 200);
    let stats = sim.stats();
    assert_eq!(
        stats.count("token/password/fault_no_token_empty_object_ok"),
        1
    );
    assert_eq!(
        stats.count("token/password/fault_no_token_oauth_error_ok"),
        1
    );
    assert_eq!(
        stats.count("token/password/fault_no_token_code_message_ok"),
        1
    );
    assert_eq!(stats.count("v2/password/fault_no_token_empty_object_ok"), 1);
    assert_eq!(stats.password_grants_ok, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_fault_reads_from_json_and_the_admin_api() {
    let sim = start().await;
    let res = http()
        .post(format!("{}faults", sim.admin_url()))
        .json(&json!({"type": "no_token", "body": "code_message", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], 401);
}

// ---- numbers as strings, the 44.0.x v1 answer, the 44.1.x v2 answer ----

#[tokio::test(flavor = "multi_thread")]
async fn numbers_as_strings_on_v1_and_v2() {
    let sim = start_with(config().numbers_as_strings(true)).await;
    let t = token(&sim).await;
    assert_eq!(t["expires_in"], json!("3600"));
    let t: Value = post_v2(&sim, "v2/tokens", v2_password(USER))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["expires_in"], json!("3600"));
    sim.set_numbers_as_strings(false);
    assert_eq!(token(&sim).await["expires_in"], json!(3600));
}

#[tokio::test(flavor = "multi_thread")]
async fn v44_0_v1_answer_carries_an_epoch_string_expires_and_the_extra_fields() {
    let sim = start_with(
        config()
            .v1_answer(V1Answer::V44_0)
            .token_ttl(Duration::from_secs(120)),
    )
    .await;
    let before = unix_now();
    let t = token(&sim).await;
    let after = unix_now();
    for field in [
        "client_id",
        "expires",
        "rate_limit",
        "login",
        "user_email",
        "displayName",
    ] {
        assert!(t.get(field).is_some(), "{field} in {t}");
    }
    assert_eq!(t["client_id"], CLIENT_ID);
    assert_eq!(t["rate_limit"], json!("0"));
    assert_eq!(t["login"], USER);
    assert_eq!(t["legacy"], json!(false));
    assert_eq!(t["expires_in"], json!(120));
    let expires: u64 = str_field(&t, "expires").parse().expect("an epoch string");
    assert!(
        (before + 120..=after + 121).contains(&expires),
        "{expires} vs {before}"
    );
    // v2 is not affected by the v1 shape; numbers as strings combine with it.
    sim.set_numbers_as_strings(true);
    assert_eq!(token(&sim).await["expires_in"], json!("120"));
    sim.set_v1_answer(V1Answer::Standard);
    let t = token(&sim).await;
    assert!(
        t.get("expires").is_none() && t.get("rate_limit").is_none(),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_answers_carry_no_legacy_and_the_44_1_fields_while_v1_keeps_legacy() {
    let sim = start().await;
    let t: Value = post_v2(&sim, "v2/tokens", v2_password(USER))
        .await
        .json()
        .await
        .unwrap();
    assert!(t.get("legacy").is_none(), "{t}");
    for field in [
        "username",
        "user",
        "territory",
        "domain",
        "department",
        "uid",
        "login",
        "scope",
        "user_email",
        "displayName",
        "access_token",
        "expires_in",
        "token_type",
        "refresh_token",
        "client_id",
        "apiversion",
    ] {
        assert!(t.get(field).is_some(), "{field} in {t}");
    }
    let v1 = token(&sim).await;
    assert_eq!(v1["legacy"], json!(false));
    assert!(v1.get("client_id").is_none(), "{v1}");
}

// ---- unknown routes and v2/version ----

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_answer_json_404_with_v2_and_html_without() {
    let sim = start().await;
    let res = http()
        .get(format!("{}v2/no-such-thing", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(content_type(&res).starts_with("application/json"));
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"code": 404, "message": "No Route Found [92]"})
    );
    // Outside the API base: the web server's page.
    let res = http()
        .get(format!("http://{}/elsewhere", sim.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(content_type(&res).starts_with("text/html"));

    let res = http()
        .get(format!("{}v2/version", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"apiversion": "Version: 44.1.0"})
    );

    sim.set_v2_enabled(false);
    for path in ["v2/no-such-thing", "v2/version"] {
        let res = http()
            .get(format!("{}{path}", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert!(content_type(&res).starts_with("text/html"), "{path}");
    }
    let stats = sim.stats();
    assert_eq!(stats.count("route/-/no_route"), 1);
    assert_eq!(stats.count("version/-/ok"), 1);
    assert_eq!(stats.count("version/-/not_found"), 1);
}

// ---- HTTP Basic client authentication ----

fn user_fields() -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "password"),
        ("username", USER),
        ("password", PASSWORD),
    ]
}

async fn basic_grant(sim: &Sim, id: &str, secret: &str, with_body_client: bool) -> u16 {
    let mut fields = user_fields();
    if with_body_client {
        fields.push(("client_id", CLIENT_ID));
        fields.push(("client_secret", CLIENT_SECRET));
    }
    http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .basic_auth(id, Some(secret))
        .form(&fields)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_client_auth_by_setting() {
    // body_only (the default): a Basic header is ignored.
    let sim = start().await;
    assert_eq!(
        basic_grant(&sim, CLIENT_ID, CLIENT_SECRET, false).await,
        401
    );
    assert_eq!(password_grant(&sim).await.status(), 200);

    // basic_or_body: either; a Basic header wins over the fields.
    sim.set_client_auth(ClientAuth::BasicOrBody);
    assert_eq!(
        basic_grant(&sim, CLIENT_ID, CLIENT_SECRET, false).await,
        200
    );
    assert_eq!(password_grant(&sim).await.status(), 200);
    assert_eq!(basic_grant(&sim, CLIENT_ID, "wrong", true).await, 401);

    // basic_only: the fields alone look like a bad client (its configured status).
    sim.set_errors(403, 400, nsapi_sim::ErrorBody::OAuth);
    sim.set_client_auth(ClientAuth::BasicOnly);
    assert_eq!(
        basic_grant(&sim, CLIENT_ID, CLIENT_SECRET, false).await,
        200
    );
    let res = password_grant(&sim).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // On v2 too.
    let res = http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({"grant_type": "password", "username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stats = sim.stats();
    assert_eq!(stats.count("token/password/invalid_client"), 3);
}

// ---- MFA, second step ----

fn mfa_config() -> SimConfig {
    config()
        .subscriber(Subscriber::new(TOTP_USER, PASSWORD).with_totp_seed(SEED))
        .subscriber(Subscriber::new("totp2@abc-company", PASSWORD).with_totp_seed(SEED))
}

fn mfa_fields(user: &str, intermediate: &str, passcode: &str) -> Value {
    json!({"grant_type": "mfa", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
           "username": user, "password": PASSWORD, "mfa_vendor": "google",
           "mfa_type": "authenticator", "passcode": passcode, "ns_id_type": "subscriber",
           "access_token": intermediate})
}

/// A 6-digit code that is none of the three the simulator accepts now.
fn wrong_code() -> String {
    let now = unix_now();
    let accepted: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|t| totp::passcode(SEED, *t).unwrap())
        .collect();
    ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !accepted.iter().any(|a| a == c))
        .unwrap()
        .to_owned()
}

async fn v1_intermediate(sim: &Sim, user: &str) -> String {
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(user, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["scope"], "mfa_required");
    assert_eq!(t["mfa_type"], "authenticator");
    assert_eq!(t["mfa_vendor"], "google");
    assert!(t.get("refresh_token").is_none());
    str_field(&t, "access_token").to_owned()
}

async fn v1_mfa(sim: &Sim, fields: &Value) -> reqwest::Response {
    let form: Vec<(String, String)> = fields
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mfa_second_step_on_v1_gives_a_usable_token_once_per_passcode() {
    let sim = start_with(mfa_config()).await;
    let intermediate = v1_intermediate(&sim, TOTP_USER).await;
    assert!(!sim.is_token_valid(&intermediate));

    // A wrong passcode is refused like a bad password, and leaves the MFA token usable.
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &intermediate, &wrong_code())).await;
    assert_eq!(res.status(), 401);
    // A passcode that is not 6 digits is a bad request.
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &intermediate, "12345")).await;
    assert_eq!(res.status(), 400);

    let code = totp::passcode(SEED, unix_now()).unwrap();
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &intermediate, &code)).await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["scope"], "Office Manager");
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    assert_eq!(
        read(&sim, str_field(&t, "access_token")).await.status(),
        200
    );
    // The refresh token works without MFA.
    assert_eq!(
        refresh_by_get(&sim, str_field(&t, "refresh_token"))
            .await
            .status(),
        200
    );

    // The MFA token is single-use.
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &intermediate, &code)).await;
    assert_eq!(res.status(), 403);
    // The same passcode with a new MFA token: a replay, refused.
    let again = v1_intermediate(&sim, TOTP_USER).await;
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &again, &code)).await;
    assert_eq!(res.status(), 401);
    assert!(
        res.text().await.unwrap().contains("already used"),
        "the replay is named"
    );
    // An MFA token belongs to its user.
    let other = v1_intermediate(&sim, "totp2@abc-company").await;
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &other, &code)).await;
    assert_eq!(res.status(), 403);

    let stats = sim.stats();
    assert_eq!(stats.mfa_attempts, 6);
    assert_eq!(stats.mfa_refusals, 5);
    assert_eq!(stats.count("token/mfa/ok"), 1);
    assert_eq!(stats.count("token/mfa/mfa_passcode"), 1);
    assert_eq!(stats.count("token/mfa/mfa_passcode_reused"), 1);
    assert_eq!(stats.count("token/mfa/mfa_token_used"), 1);
    assert_eq!(stats.count("token/mfa/mfa_token_mismatch"), 1);
    assert_eq!(stats.count("token/mfa/invalid_request"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mfa_second_step_on_v2_and_the_mfa_token_is_short_lived() {
    let sim = start_with(mfa_config().mfa_token_ttl(Duration::from_secs(60))).await;
    let res = post_v2(&sim, "v2/tokens", v2_password(TOTP_USER)).await;
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["mfa_type"], "authenticator");
    assert_eq!(t["expires_in"], json!(60));
    let intermediate = str_field(&t, "access_token").to_owned();

    // Expired: refused with v2's JSON.
    sim.expire_token(&intermediate);
    let code = totp::passcode(SEED, unix_now()).unwrap();
    let res = post_v2(
        &sim,
        "v2/tokens",
        mfa_fields(TOTP_USER, &intermediate, &code),
    )
    .await;
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["code"], 403);
    assert!(err["message"].is_string());

    let t: Value = post_v2(&sim, "v2/tokens", v2_password(TOTP_USER))
        .await
        .json()
        .await
        .unwrap();
    let intermediate = str_field(&t, "access_token");
    let res = post_v2(
        &sim,
        "v2/tokens",
        mfa_fields(TOTP_USER, intermediate, &code),
    )
    .await;
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    assert_eq!(sim.stats().count("v2/mfa/ok"), 1);
    assert_eq!(sim.stats().count("v2/mfa/mfa_token_expired"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mfa_user_without_a_seed_keeps_totp_and_cannot_pass() {
    let sim = start().await;
    let res = http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(MFA_USER, PASSWORD))
        .send()
        .await
        .unwrap();
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["mfa_type"], "totp");
    let code = totp::passcode(SEED, unix_now()).unwrap();
    let res = v1_mfa(
        &sim,
        &mfa_fields(MFA_USER, str_field(&t, "access_token"), &code),
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(sim.stats().count("token/mfa/mfa_not_enrolled"), 1);
}

// ---- v2/jwt ----

fn claims_of(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "header.payload.signature");
    let payload = data_encoding::BASE64URL_NOPAD
        .decode(parts[1].as_bytes())
        .expect("base64url");
    serde_json::from_slice(&payload).expect("JSON claims")
}

async fn jwt_get(sim: &Sim, jwt: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = http()
        .get(format!("{}v2/jwt", sim.base_url()))
        .bearer_auth(jwt);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_is_issued_read_and_revoked() {
    let sim = start_with(config().jwt_ttl(Duration::from_secs(90))).await;
    let res = post_v2(&sim, "v2/jwt", v2_password(USER)).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let body: Value = res.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let jwt = str_field(&body, "token").to_owned();
    let claims = claims_of(&jwt);
    assert_eq!(claims["sub"], USER);
    assert_eq!(claims["domain"], "abc-company");
    assert_eq!(claims["scope"], "Office Manager");
    assert!(claims["jti"].is_string());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 90);
    assert!(sim.is_token_valid(&jwt));

    let res = jwt_get(&sim, &jwt, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), claims);

    // DELETE /jwt/{jti} revokes that one; DELETE /jwt the current one.
    let second = str_field(
        &post_v2(&sim, "v2/jwt", v2_password(USER))
            .await
            .json::<Value>()
            .await
            .unwrap(),
        "token",
    )
    .to_owned();
    let res = http()
        .delete(format!(
            "{}v2/jwt/{}",
            sim.base_url(),
            claims["jti"].as_str().unwrap()
        ))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(jwt_get(&sim, &jwt, None).await.status(), 401);
    assert!(!sim.is_token_valid(&jwt));
    assert!(sim.issued_tokens().contains(&jwt));
    let res = http()
        .delete(format!("{}v2/jwt", sim.base_url()))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = jwt_get(&sim, &second, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], 401);
    // The test handles revoke and expire JWTs too.
    let third = str_field(
        &post_v2(&sim, "v2/jwt", v2_password(USER))
            .await
            .json::<Value>()
            .await
            .unwrap(),
        "token",
    )
    .to_owned();
    sim.expire_token(&third);
    assert_eq!(jwt_get(&sim, &third, None).await.status(), 401);

    // Bad credentials: v2's JSON errors.
    let mut bad = v2_password(USER);
    bad["password"] = json!("wrong");
    assert_eq!(post_v2(&sim, "v2/jwt", bad).await.status(), 401);
    // A tampered JWT is refused.
    let mut tampered = jwt.clone();
    tampered.push('x');
    assert_eq!(jwt_get(&sim, &tampered, None).await.status(), 401);

    let stats = sim.stats();
    assert_eq!((stats.jwt_issued, stats.jwt_revoked), (3, 2));
    assert_eq!(stats.count("jwt/password/ok"), 3);
    assert_eq!(stats.count("jwt_read/-/expired"), 1);
    assert_eq!(stats.count("jwt/password/invalid_credentials"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_refresh_is_single_use() {
    let sim = start_with(config().jwt_refresh(true)).await;
    let body: Value = post_v2(&sim, "v2/jwt", v2_password(USER))
        .await
        .json()
        .await
        .unwrap();
    let refresh = str_field(&body, "refresh_token").to_owned();
    assert_eq!(claims_of(&refresh)["token_use"], "refresh");
    // Its default lifetime is 24 h.
    let claims = claims_of(str_field(&body, "token"));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        86_400
    );
    // A refresh JWT is not an access JWT.
    assert_eq!(jwt_get(&sim, &refresh, None).await.status(), 401);

    let grant = |r: &str| json!({"grant_type": "refresh_token", "refresh_token": r});
    let res = post_v2(&sim, "v2/jwt", grant(&refresh)).await;
    assert_eq!(res.status(), 200);
    let next: Value = res.json().await.unwrap();
    assert_ne!(next["token"], body["token"]);
    assert_ne!(next["refresh_token"], body["refresh_token"]);
    assert!(sim.is_token_valid(str_field(&next, "token")));
    // The old access JWT stays valid until it expires; the refresh JWT used is spent.
    assert!(sim.is_token_valid(str_field(&body, "token")));
    assert_eq!(post_v2(&sim, "v2/jwt", grant(&refresh)).await.status(), 400);
    assert_eq!(
        post_v2(&sim, "v2/jwt", grant(str_field(&next, "refresh_token")))
            .await
            .status(),
        200
    );
    let stats = sim.stats();
    assert_eq!((stats.jwt_issued, stats.jwt_refreshed), (3, 2));
    assert_eq!(stats.count("jwt/refresh_token/refresh_reused"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_session_cookie_set_and_required() {
    let sim = start_with(config().jwt_refresh(true).jwt_cookie("PHPSESSID", true)).await;
    let res = post_v2(&sim, "v2/jwt", v2_password(USER)).await;
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.starts_with("PHPSESSID="), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let jwt = str_field(&body, "token");

    assert_eq!(jwt_get(&sim, jwt, None).await.status(), 401);
    assert_eq!(
        jwt_get(&sim, jwt, Some("PHPSESSID=other")).await.status(),
        401
    );
    assert_eq!(jwt_get(&sim, jwt, Some(&cookie)).await.status(), 200);

    // A refresh needs the cookie too, and keeps the session.
    let grant = json!({"grant_type": "refresh_token", "refresh_token": body["refresh_token"]});
    let res = post_v2(&sim, "v2/jwt", grant.clone()).await;
    assert_eq!(res.status(), 401);
    let res = http()
        .post(format!("{}v2/jwt", sim.base_url()))
        .header("Cookie", &cookie)
        .json(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some(cookie.as_str())
    );
    assert_eq!(sim.stats().count("jwt_read/-/cookie_missing"), 2);

    // Not required: the cookie is set but not checked.
    sim.set_jwt_cookie("PHPSESSID", false);
    assert_eq!(jwt_get(&sim, jwt, None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_for_an_mfa_user_takes_the_second_step() {
    let sim = start_with(mfa_config()).await;
    let t: Value = post_v2(&sim, "v2/jwt", v2_password(TOTP_USER))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["scope"], "mfa_required");
    let code = totp::passcode(SEED, unix_now()).unwrap();
    let res = post_v2(
        &sim,
        "v2/jwt",
        mfa_fields(TOTP_USER, str_field(&t, "access_token"), &code),
    )
    .await;
    assert_eq!(res.status(), 200);
    let jwt = str_field(&res.json::<Value>().await.unwrap(), "token").to_owned();
    assert_eq!(claims_of(&jwt)["sub"], TOTP_USER);
    assert_eq!(sim.stats().count("jwt/mfa/ok"), 1);
    assert_eq!(sim.stats().mfa_attempts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_answers_like_a_server_without_v2_when_v2_is_off() {
    let sim = start_with(config().v2_enabled(false)).await;
    let res = post_v2(&sim, "v2/jwt", v2_password(USER)).await;
    assert_eq!(res.status(), 404);
    assert!(content_type(&res).starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_changes_the_portal_settings() {
    let sim = start().await;
    let put = |body: Value| {
        http()
            .put(format!("{}settings", sim.admin_url()))
            .json(&body)
            .send()
    };
    let res = put(
        json!({"client_auth": "basic_only", "numbers_as_strings": true,
                         "v1_answer": "v44_0", "mfa_token_ttl": "45s", "jwt_ttl": "1h",
                         "jwt_refresh": true, "jwt_cookie": "SID", "jwt_cookie_required": true}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let s: Value = res.json().await.unwrap();
    assert_eq!(s["client_auth"], "basic_only");
    assert_eq!(s["v1_answer"], "v44_0");
    assert_eq!(s["mfa_token_ttl"], "45s");
    assert_eq!(s["jwt_ttl"], "3600s");
    assert_eq!(s["jwt_cookie"], "SID");
    assert_eq!(password_grant(&sim).await.status(), 401);
    assert_eq!(
        put(json!({"jwt_cookie": "a=b"})).await.unwrap().status(),
        400
    );
    assert_eq!(
        put(json!({"client_auth": "basic"})).await.unwrap().status(),
        400
    );
    // A subscriber with a seed, added at run time, is an MFA user who can pass.
    let res = http()
        .post(format!("{}subscribers", sim.admin_url()))
        .json(&json!({"username": TOTP_USER, "password": PASSWORD, "totp_seed": SEED}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    sim.set_client_auth(ClientAuth::BodyOnly);
    let intermediate = v1_intermediate(&sim, TOTP_USER).await;
    let code = totp::passcode(SEED, unix_now()).unwrap();
    let res = v1_mfa(&sim, &mfa_fields(TOTP_USER, &intermediate, &code)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_fields_in_a_post_query_and_format_json_are_accepted() {
    let sim = start().await;
    let res = http()
        .post(format!("{}v2/tokens", sim.base_url()))
        .query(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http()
        .post(format!("{}oauth2/token/?format=json", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http()
        .get(format!("{}oauth2/token", sim.base_url()))
        .query(&password_fields(USER, PASSWORD))
        .query(&[("format", "json")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(sim.stats().password_grants_ok, 3);
}
