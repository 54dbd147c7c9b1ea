//! Helpers shared by the simulator's integration tests: a started simulator with a known
//! client and users, an HTTP client, and short-hands for the guide's three requests.
#![allow(dead_code)]

use std::time::Duration;

use nsapi_sim::{Sim, SimConfig, Subscriber};
use serde_json::Value;

pub const CLIENT_ID: &str = "demo-client";
pub const CLIENT_SECRET: &str = "demo-secret";
pub const USER: &str = "111@abc-company";
pub const PASSWORD: &str = "s3cret pass+word";
pub const MFA_USER: &str = "mfa@abc-company";

/// The configuration every test starts from: one client, one ordinary and one MFA user.
pub fn config() -> SimConfig {
    SimConfig::new()
        .client(CLIENT_ID, CLIENT_SECRET)
        .subscriber(Subscriber::new(USER, PASSWORD))
        .subscriber(Subscriber::new(MFA_USER, PASSWORD).with_mfa(true))
}

pub async fn start() -> Sim {
    start_with(config()).await
}

pub async fn start_with(config: SimConfig) -> Sim {
    Sim::start(config).await.expect("simulator starts")
}

pub fn http() -> reqwest::Client {
    http_with_timeout(Duration::from_secs(10))
}

pub fn http_with_timeout(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

pub fn password_fields<'a>(username: &'a str, password: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("grant_type", "password"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("username", username),
        ("password", password),
    ]
}

pub fn refresh_fields(refresh_token: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("refresh_token", refresh_token),
    ]
}

/// The guide's password grant: POST a form body to `oauth2/token/`.
pub async fn password_grant(sim: &Sim) -> reqwest::Response {
    http()
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .expect("request sent")
}

/// The guide's refresh: GET `oauth2/token/` with the fields in the query string.
pub async fn refresh_by_get(sim: &Sim, refresh_token: &str) -> reqwest::Response {
    http()
        .get(format!("{}oauth2/token/", sim.base_url()))
        .query(&refresh_fields(refresh_token))
        .send()
        .await
        .expect("request sent")
}

/// The guide's token read: GET `oauth2/read?format=json` with a Bearer token.
pub async fn read(sim: &Sim, access_token: &str) -> reqwest::Response {
    http()
        .get(format!("{}oauth2/read?format=json", sim.base_url()))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("request sent")
}

/// A successful password grant's JSON.
pub async fn token(sim: &Sim) -> Value {
    let res = password_grant(sim).await;
    assert_eq!(res.status(), 200);
    res.json().await.expect("JSON token answer")
}

pub fn str_field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("field {k} in {v}"))
}

pub fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn is_hex_token(s: &str) -> bool {
    (32..=36).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// What a raw HTTP/1.1 exchange gave: the response head, the body bytes received before the
/// connection closed, and the `Content-Length` announced (if any).
#[derive(Debug)]
pub struct RawAnswer {
    pub head: String,
    pub body: Vec<u8>,
    pub content_length: Option<usize>,
}

/// Send a form POST over a fresh TCP connection with `Connection: close`, then read until the
/// server closes it (at most 10 s): for answers a client library would refuse to hand over.
pub async fn raw_form_post(addr: std::net::SocketAddr, path: &str, form: &str) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection within 10 s")
        .ok();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let content_length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    RawAnswer {
        head,
        body: raw[split + 4..].to_vec(),
        content_length,
    }
}

/// The guide's password grant as a form body, percent-encoded.
pub fn password_form() -> String {
    password_fields(USER, PASSWORD)
        .into_iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
