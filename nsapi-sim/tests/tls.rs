//! HTTPS: a CA made fresh at start signs a certificate for localhost, 127.0.0.1 and ::1; every
//! node serves it; and a certificate from another, unknown CA can be served instead.

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::{Sim, SimConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

/// A client that trusts exactly these CA certificates (PEM), nothing else.
fn trusting(pems: &[&str]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = pems
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate"));
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only(certs)
        .build()
        .expect("reqwest client")
}

async fn grant(client: &reqwest::Client, base_url: &str) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base_url}oauth2/token/"))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
}

/// The error and its sources, as one string.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("one certificate")
        .to_vec()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_a_certificate_from_a_fresh_test_ca() {
    let sim = start_with(config().tls()).await;
    assert_eq!(
        sim.base_url(),
        format!("https://{}/ns-api/", sim.addr()),
        "base URL"
    );
    assert!(sim.admin_url().starts_with("https://"));
    let ca = sim.ca_pem().expect("a CA with TLS");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert!(contains(&der(&ca), b"nsapi-sim test CA "));

    let client = trusting(&[&ca]);
    let res = grant(&client, &sim.base_url()).await.unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    // The certificate names localhost too.
    let localhost = format!("https://localhost:{}/ns-api/", sim.addr().port());
    let res = client
        .get(format!("{localhost}oauth2/read?format=json"))
        .bearer_auth(str_field(&t, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The admin API is served over HTTPS too, and hands out the CA.
    let pem = client
        .get(format!("{}tls/ca.pem", sim.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, ca);
    assert_eq!(sim.stats().password_grants_ok, 1);

    // Each simulator makes its own CA.
    let other = start_with(config().tls()).await;
    assert_ne!(other.ca_pem(), sim.ca_pem());
    let err = grant(&trusting(&[&ca]), &other.base_url())
        .await
        .expect_err("another simulator's CA is not this one");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_the_ca_or_speaking_plain_http_fails() {
    let sim = start_with(config().tls()).await;
    let err = grant(&http(), &sim.base_url())
        .await
        .expect_err("the test CA is trusted by no system store");
    assert!(err.is_connect(), "{}", chain(&err));
    let plain = sim.base_url().replacen("https://", "http://", 1);
    assert!(grant(&http(), &plain).await.is_err());
    // A plain-HTTP simulator has no CA.
    let sim = start().await;
    assert_eq!(sim.ca_pem(), None);
    let res = http()
        .get(format!("{}tls/ca.pem", sim.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_ca_can_be_served_from_the_start_or_at_run_time() {
    let sim = start_with(config().tls().tls_untrusted(true)).await;
    let (ca, unknown) = (sim.ca_pem().unwrap(), sim.untrusted_ca_pem().unwrap());
    assert_ne!(ca, unknown);
    assert!(contains(&der(&unknown), b"nsapi-sim untrusted CA "));
    let err = grant(&trusting(&[&ca]), &sim.base_url())
        .await
        .expect_err("served by the unknown CA");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
    // It is a real certificate for the same names, from the other CA.
    let res = grant(&trusting(&[&unknown]), &sim.base_url())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Switched at run time, for new connections (Rust and admin API).
    sim.set_tls_untrusted(false);
    assert_eq!(
        grant(&trusting(&[&ca]), &sim.base_url())
            .await
            .unwrap()
            .status(),
        200
    );
    let both = trusting(&[&ca, &unknown]);
    let res = both
        .put(format!("{}settings", sim.admin_url()))
        .json(&json!({"tls_untrusted": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["tls_untrusted"], true);
    assert!(grant(&trusting(&[&ca]), &sim.base_url()).await.is_err());
    let pem = both
        .get(format!("{}tls/untrusted-ca.pem", sim.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, unknown);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_serves_https_with_the_same_ca() {
    let sim = start_with(config().tls().nodes(2)).await;
    let client = trusting(&[&sim.ca_pem().unwrap()]);
    let n1 = sim.node(1);
    assert!(n1.base_url().starts_with("https://127.0.0.1:"));
    let t: Value = grant(&client, &sim.base_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .get(format!("{}oauth2/token/", n1.base_url()))
        .query(&refresh_fields(str_field(&t, "refresh_token")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    n1.down().await;
    n1.up().await.unwrap();
    // Going down cut the connection `client` keeps in its pool, and a TLS connection cut without
    // close_notify can still look idle to the pool for a moment. A new client trusting the same
    // CA asks what this test is about: whether the restarted node serves the same CA.
    let client = trusting(&[&sim.ca_pem().unwrap()]);
    assert_eq!(grant(&client, &n1.base_url()).await.unwrap().status(), 200);
    let added = sim.add_node().await.unwrap();
    assert_eq!(
        grant(&client, &added.base_url()).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_names_ipv6_loopback_too() {
    // Only where this machine has ::1.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    let listen = "[::1]:0".parse().unwrap();
    let sim = Sim::start(
        SimConfig::new()
            .listen(listen)
            .tls()
            .client(CLIENT_ID, CLIENT_SECRET)
            .subscriber(nsapi_sim::Subscriber::new(USER, PASSWORD)),
    )
    .await
    .unwrap();
    assert!(
        sim.base_url().starts_with("https://[::1]:"),
        "{}",
        sim.base_url()
    );
    let client = trusting(&[&sim.ca_pem().unwrap()]);
    assert_eq!(grant(&client, &sim.base_url()).await.unwrap().status(), 200);
}
