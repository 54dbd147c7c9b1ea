//! The loopback proxy: CONNECT tunnels to an HTTPS simulator, absolute-form plain HTTP, and
//! targets off loopback refused (never contacted: only TEST-NET addresses and `.invalid` names
//! are asked for).

mod common;

use std::time::Duration;

use common::*;
use nsapi_sim::proxy::ConnectProxy;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn via_proxy(proxy: &ConnectProxy, ca_pem: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .proxy(reqwest::Proxy::all(proxy.proxy_url()).unwrap());
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()]);
    }
    builder.build().unwrap()
}

/// Send a raw request head to the proxy and return the status line of its answer.
async fn raw(proxy: &ConnectProxy, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers and closes within 10 s")
        .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_goes_through_a_connect_tunnel() {
    let sim = start_with(config().tls()).await;
    let proxy = ConnectProxy::start().await.unwrap();
    assert_eq!(proxy.proxy_url(), format!("http://{}", proxy.addr()));
    let ca = sim.ca_pem().unwrap();
    let client = via_proxy(&proxy, Some(&ca));
    let res = client
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert!(sim.is_token_valid(str_field(&t, "access_token")));
    assert_eq!(proxy.tunnels(), 1);
    assert_eq!(proxy.forwarded(), 0);
    assert_eq!(proxy.targets(), vec![sim.addr().to_string()]);
    assert_eq!(sim.stats().password_grants_ok, 1);

    // By name too: the tunnel goes to localhost, whose certificate names it.
    let by_name = format!("https://localhost:{}/ns-api/", sim.addr().port());
    let res = client
        .get(format!("{by_name}oauth2/read?format=json"))
        .bearer_auth(str_field(&t, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(proxy.tunnels(), 2);
    assert_eq!(
        proxy.targets().last().unwrap(),
        &format!("localhost:{}", sim.addr().port())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_forwarded_in_absolute_form() {
    let sim = start().await;
    let proxy = ConnectProxy::start().await.unwrap();
    let client = via_proxy(&proxy, None);
    for _ in 0..2 {
        let res = client
            .post(format!("{}oauth2/token/", sim.base_url()))
            .form(&password_fields(USER, PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap();
    }
    assert_eq!(proxy.forwarded(), 2);
    assert_eq!(proxy.tunnels(), 0);
    assert_eq!(proxy.targets(), vec![sim.addr().to_string(); 2]);
    assert_eq!(sim.stats().password_grants_ok, 2);
    proxy.reset();
    assert_eq!((proxy.forwarded(), proxy.targets().len()), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_off_loopback_are_refused_and_counted() {
    let proxy = ConnectProxy::start().await.unwrap();
    for head in [
        "CONNECT 203.0.113.7:443 HTTP/1.1\r\nHost: 203.0.113.7:443\r\n\r\n",
        "CONNECT nsapi.example.invalid:443 HTTP/1.1\r\nHost: nsapi.example.invalid:443\r\n\r\n",
        "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
        "GET http://203.0.113.7/ns-api/oauth2/token HTTP/1.1\r\nHost: 203.0.113.7\r\n\r\n",
    ] {
        assert_eq!(raw(&proxy, head).await, "HTTP/1.1 403 Forbidden", "{head}");
    }
    assert_eq!(proxy.refused(), 4);
    assert_eq!(proxy.tunnels() + proxy.forwarded(), 0);
    assert_eq!(
        proxy.targets(),
        vec![
            "203.0.113.7:443",
            "nsapi.example.invalid:443",
            "[2001:db8::1]:443",
            "203.0.113.7:80"
        ]
    );
    // Malformed requests are 400 and not counted as targets.
    for head in [
        "GET /relative HTTP/1.1\r\n\r\n",
        "CONNECT nohost HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(
            raw(&proxy, head).await,
            "HTTP/1.1 400 Bad Request",
            "{head}"
        );
    }
    assert_eq!(proxy.targets().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_target_that_is_down_is_a_502() {
    let sim = start_with(config().tls().nodes(2)).await;
    let proxy = ConnectProxy::start().await.unwrap();
    let down = sim.node(1);
    down.down().await;
    let head = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", down.addr());
    assert_eq!(raw(&proxy, &head).await, "HTTP/1.1 502 Bad Gateway");
    assert_eq!(proxy.failed(), 1);
    // Through the proxy, a client sees the failure and can fail over to the other node.
    let client = via_proxy(&proxy, Some(&sim.ca_pem().unwrap()));
    let failed = client
        .post(format!("{}oauth2/token/", down.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await;
    assert!(failed.is_err());
    let res = client
        .post(format!("{}oauth2/token/", sim.base_url()))
        .form(&password_fields(USER, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(proxy.tunnels(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_listening() {
    let proxy = ConnectProxy::start().await.unwrap();
    let addr = proxy.addr();
    proxy.shutdown().await;
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .unwrap()
            .is_err();
    assert!(refused);
}
