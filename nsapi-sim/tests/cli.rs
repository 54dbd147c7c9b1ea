//! The `nsapi-sim` binary: flags, config file, the base URL on the first stdout line, `--help`,
//! and no secret in its logs even at debug level.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_nsapi-sim");

/// Start the binary and return it with the base URL it printed first.
async fn spawn(args: &[&str]) -> (Child, String) {
    let (child, mut urls) = spawn_nodes(args, 1).await;
    (child, urls.remove(0))
}

/// Start the binary and return it with the first `n` lines it printed (one base URL a node).
async fn spawn_nodes(args: &[&str], n: usize) -> (Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nsapi-sim starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut urls = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stdout.read_line(&mut line),
        )
        .await
        .expect("a base URL within 30 s")
        .unwrap();
        urls.push(line.trim().to_owned());
    }
    (child, urls)
}

async fn stop(mut child: Child) -> String {
    child.start_kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let _ = child.wait().await;
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn prints_the_base_url_and_serves_the_guides_three_requests_without_logging_secrets() {
    let client = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let user = format!("{USER}:{PASSWORD}");
    let (child, base) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--client",
        &client,
        "--subscriber",
        &user,
        "--token-ttl",
        "60s",
        "--refresh-mode",
        "rotate",
        "--log",
        "debug",
    ])
    .await;
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/ns-api/"),
        "{base}"
    );

    let res = http()
        .post(format!("{base}oauth2/token/"))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["expires_in"], 60);
    let res = http()
        .get(format!("{base}oauth2/token/"))
        .query(&refresh_fields(str_field(&t, "refresh_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t2: Value = res.json().await.unwrap();
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    let res = http()
        .get(format!("{base}oauth2/read?format=json"))
        .bearer_auth(str_field(&t2, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let admin = base.replace("/ns-api/", "/_sim/");
    let stats: Value = http()
        .get(format!("{admin}stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["read_requests"], 1);

    let logs = stop(child).await;
    assert!(logs.contains("request"), "debug logs were written: {logs}");
    for secret in [
        CLIENT_SECRET,
        "s3cret",
        str_field(&t, "access_token"),
        str_field(&t, "refresh_token"),
        str_field(&t2, "access_token"),
        str_field(&t2, "refresh_token"),
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_a_config_file_and_flags_override_it() {
    let dir = std::env::temp_dir().join(format!("nsapi-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sim.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"listen": "127.0.0.1:0", "base_path": "/custom", "token_ttl": 30,
                "refresh_mode": "omit",
                "clients": [{{"id": "{CLIENT_ID}", "secret": "{CLIENT_SECRET}"}}],
                "subscribers": [{{"username": "{USER}", "password": "{PASSWORD}"}}],
                "faults": [{{"type": "status", "status": 503, "count": 1}}]}}"#
        ),
    )
    .unwrap();
    let (child, base) = spawn(&[
        "--config",
        path.to_str().unwrap(),
        "--token-ttl",
        "45s",
        "--no-v2",
        "--v2-absent-status",
        "503",
    ])
    .await;
    assert!(base.ends_with("/custom/"), "{base}");
    let grant = || async {
        http()
            .post(format!("{base}oauth2/token"))
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(grant().await.status(), 503);
    let t: Value = grant().await.json().await.unwrap();
    assert_eq!(t["expires_in"], 45);
    let refreshed: Value = http()
        .get(format!("{base}oauth2/token"))
        .query(&refresh_fields(str_field(&t, "refresh_token")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(refreshed.get("refresh_token").is_none(), "{refreshed}");
    let v2 = http()
        .post(format!("{base}v2/tokens"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 503);
    assert!(content_type(&v2).starts_with("text/html"));
    stop(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_print_one_base_url_each_and_share_tokens() {
    let client = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let user = format!("{USER}:{PASSWORD}");
    let (child, urls) = spawn_nodes(
        &[
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--client",
            &client,
            "--subscriber",
            &user,
            "--fault",
            r#"{"type":"status","status":502,"count":5,"times":1,"node":1}"#,
        ],
        2,
    )
    .await;
    assert_ne!(urls[0], urls[1]);
    // The fault is on node 1 only, once ("times" wins over "count").
    let grant = |base: String| async move {
        http()
            .post(format!("{base}oauth2/token/"))
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(grant(urls[0].clone()).await, 200);
    assert_eq!(grant(urls[1].clone()).await, 502);
    assert_eq!(grant(urls[1].clone()).await, 200);
    for url in &urls {
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/ns-api/"),
            "{url}"
        );
    }
    let t: Value = http()
        .post(format!("{}oauth2/token/", urls[0]))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = http()
        .get(format!("{}oauth2/token/", urls[1]))
        .query(&refresh_fields(str_field(&t, "refresh_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let admin1 = urls[1].replace("/ns-api/", "/_sim/");
    let stats: Value = http()
        .get(format!("{admin1}stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_node"][0]["password_grants_ok"], 2);
    assert_eq!(stats["by_node"][1]["password_grants_ok"], 1);
    assert_eq!(stats["by_node"][1]["refresh_grants_ok"], 1);
    stop(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_and_writes_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("nsapi-sim-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    let client = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let user = format!("{USER}:{PASSWORD}");
    let (child, base) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--tls",
        "--tls-ca-file",
        ca_file.to_str().unwrap(),
        "--client",
        &client,
        "--subscriber",
        &user,
    ])
    .await;
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let pem = std::fs::read(&ca_file).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let res = https
        .post(format!("{base}oauth2/token/"))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    stop(child).await;

    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tls-ca-file"])
        .arg(&ca_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_is_refused_with_a_message() {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--fault",
            r#"{"type":"status","status":42}"#,
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("status 42"));
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--fault",
            r#"{"type":"hang","node":1}"#,
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn help_documents_every_option_and_the_admin_api() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "--nodes",
        "--tls",
        "--tls-untrusted",
        "--tls-ca-file",
        "--config",
        "--base-path",
        "--token-ttl",
        "--refresh-mode",
        "--refresh-token-ttl",
        "--password-grant-revokes-previous",
        "--no-v2",
        "--v2-absent-status",
        "--bad-client-status",
        "--bad-refresh-status",
        "--error-body",
        "--api-version",
        "--client",
        "--subscriber",
        "--mfa-subscriber",
        "--totp-subscriber",
        "--numbers-as-strings",
        "--v1-answer",
        "--client-auth",
        "--mfa-token-ttl",
        "--jwt-ttl",
        "--jwt-refresh",
        "--jwt-cookie",
        "--jwt-cookie-required",
        "--fault",
        "--log",
        "/_sim/stats",
        "/_sim/faults",
        "/_sim/tokens/valid",
        "/_sim/tokens/revoke",
        "/_sim/subscribers",
        "/_sim/settings",
        "/_sim/nodes",
        "/_sim/tls/ca.pem",
        "firewall",
        "too_many_requests",
        "truncated_body",
        "huge_body",
        "expires_in",
        "no_token",
        "v2/jwt",
        "v2/version",
        "No Route Found [92]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_flags_play_basic_auth_totp_the_44_0_answer_and_jwt_cookies() {
    const SEED: &str = "JBSWY3DPEHPK3PXP";
    let client = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    let subscriber = format!("{USER}:{PASSWORD}");
    let totp_user = format!("totp@abc:{SEED}:{PASSWORD}");
    let (child, base) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--client",
        &client,
        "--subscriber",
        &subscriber,
        "--totp-subscriber",
        &totp_user,
        "--client-auth",
        "basic-only",
        "--v1-answer",
        "v44.0",
        "--numbers-as-strings",
        "--mfa-token-ttl",
        "30s",
        "--jwt-ttl",
        "2m",
        "--jwt-refresh",
        "--jwt-cookie",
        "PHPSESSID",
        "--jwt-cookie-required",
        "--log",
        "debug",
    ])
    .await;
    // basic-only: the fields alone are a bad client.
    let res = http()
        .post(format!("{base}oauth2/token/"))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let login = |user: &'static str| {
        http()
            .post(format!("{base}oauth2/token/"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", PASSWORD),
            ])
            .send()
    };
    let t: Value = login(USER).await.unwrap().json().await.unwrap();
    assert_eq!(t["expires_in"], "3600");
    assert_eq!(t["rate_limit"], "0");
    assert!(str_field(&t, "expires").parse::<u64>().is_ok(), "{t}");
    let t: Value = login("totp@abc").await.unwrap().json().await.unwrap();
    assert_eq!(t["mfa_type"], "authenticator");
    assert_eq!(t["expires_in"], "30");
    let res = http()
        .post(format!("{base}v2/jwt"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(
            &serde_json::json!({"grant_type": "password", "username": USER,
                                  "password": PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("PHPSESSID=")
    );
    let jwt: Value = res.json().await.unwrap();
    assert!(jwt["refresh_token"].is_string());
    let res = http()
        .get(format!("{base}v2/jwt"))
        .bearer_auth(str_field(&jwt, "token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the cookie is required");
    let stderr = stop(child).await;
    assert!(
        stderr.contains("jwt"),
        "debug logs name the endpoint: {stderr}"
    );
    for secret in [SEED, PASSWORD, CLIENT_SECRET, str_field(&jwt, "token")] {
        assert!(!stderr.contains(secret), "a secret in the logs");
    }
    assert!(!stderr.contains(str_field(&jwt, "refresh_token")));
}
