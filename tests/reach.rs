//! Every kind of NetSapiens deployment: geo-redundant API nodes (failover to
//! `fallbackApiBaseUrls` and back), portals with a private CA (`spec.caBundle`, `--ca-file`,
//! and a named condition when the certificate is not trusted), and an HTTPS proxy. The
//! operator runs as a real process against the local control plane; nsapi-sim serves two
//! nodes over one account store, HTTPS with a test CA, and a loopback CONNECT proxy.

mod control_plane;
mod fixture;

use std::time::Duration;

use fixture::{Fixture, data};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use nsapi_sim::SimConfig;
use nsapi_sim::proxy::ConnectProxy;
use nsapi_token_operator::core::crd::NsApiCredential;
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn status(cred: &NsApiCredential) -> &nsapi_token_operator::core::crd::NsApiCredentialStatus {
    cred.status.as_ref().expect("a status")
}

/// Token requests (both grants) a node received.
fn token_requests(f: &Fixture, node: usize) -> u64 {
    f.sim.node_stats(node).token_requests
}

/// Waits until the credential's current token was served by `url`.
async fn wait_served_by(f: &Fixture, name: &str, url: &str, timeout: Duration) -> NsApiCredential {
    control_plane::eventually(&format!("{name} served by {url}"), timeout, || async {
        let cred = f.credential(name).await;
        (cred.status.as_ref()?.served_by.as_deref() == Some(url)).then_some(cred)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_primary_fails_over_and_the_token_returns_to_it() {
    // Tokens of 20 s rotate every 10 to 15 s.
    let mut f = Fixture::new("failover", SimConfig::new().nodes(2).token_ttl(secs(20))).await;
    let (primary, fallback) = (f.sim.node(0), f.sim.node(1));
    let (primary_url, fallback_url) = (primary.base_url(), fallback.base_url());
    f.create_input_secrets().await;
    f.start_operator();
    primary.down().await;
    f.create_credential("abc", |spec| {
        spec["apiBaseUrl"] = json!(primary_url);
        spec["fallbackApiBaseUrls"] = json!([fallback_url]);
    })
    .await;
    // The primary refuses connections: the token comes from the fallback.
    let cred = f.wait_ready("abc", READY_TIMEOUT).await;
    assert_eq!(
        status(&cred).served_by.as_deref(),
        Some(fallback_url.as_str())
    );
    let secret = f.token_secret("abc-token").await.unwrap();
    assert_eq!(data(&secret, "api_base_url").unwrap(), fallback_url);
    let token = data(&secret, "access_token").unwrap();
    assert!(f.sim.is_token_valid(&token));
    // Rotations while the primary is down go to the fallback first (no connection attempt
    // to the primary on every request).
    f.wait_new_token("abc-token", &token, secs(30)).await;
    let down_phase = (token_requests(&f, 0), token_requests(&f, 1));
    // Connections the primary refused: each logged as a failed node.
    let refused = f.operator_logs().matches("API node failed").count();
    eprintln!(
        "measure: primary down: token requests primary {} ({refused} connection(s) refused), fallback {}",
        down_phase.0, down_phase.1
    );
    assert_eq!(down_phase.0, 0, "a node that is down answers nothing");
    assert!(down_phase.1 >= 2);
    assert!(
        refused <= 2,
        "the primary is not tried on every request: {refused}"
    );

    // The primary comes back: within a probe interval (60 s), tokens come from it again.
    primary.up().await.unwrap();
    let cred = wait_served_by(&f, "abc", &primary_url, secs(100)).await;
    assert_eq!(status(&cred).condition("Ready").unwrap().status, "True");
    let secret = f.token_secret("abc-token").await.unwrap();
    assert_eq!(data(&secret, "api_base_url").unwrap(), primary_url);
    let back = (token_requests(&f, 0), token_requests(&f, 1));
    eprintln!(
        "measure: after the primary's return: token requests primary {}, fallback {} (in total)",
        back.0, back.1
    );
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_hanging_primary_fails_over_and_a_refused_login_does_not() {
    let mut f = Fixture::new("failover-kinds", SimConfig::new().nodes(2)).await;
    let (primary, fallback) = (f.sim.node(0), f.sim.node(1));
    let (primary_url, fallback_url) = (primary.base_url(), fallback.base_url());
    f.create_input_secrets().await;
    f.create_wrong_subscriber_secret().await;
    f.start_operator();
    let nodes = |spec: &mut serde_json::Value| {
        spec["apiBaseUrl"] = json!(primary_url);
        spec["fallbackApiBaseUrls"] = json!([fallback_url]);
    };

    // A load balancer answering 503 (an HTML page): one request to each node.
    primary.status(503).await.unwrap();
    f.create_credential("lb", nodes).await;
    let cred = f.wait_ready("lb", READY_TIMEOUT).await;
    assert_eq!(
        status(&cred).served_by.as_deref(),
        Some(fallback_url.as_str())
    );
    // The node's load balancer answers before the API sees the request: the operator's log
    // counts the attempts that failed there.
    let failed_on_primary = f.operator_logs().matches("API node failed").count();
    let fallback_requests = token_requests(&f, 1);
    eprintln!(
        "measure: primary answering 503: requests to the primary {failed_on_primary} (503), to the fallback {fallback_requests}"
    );
    assert_eq!((failed_on_primary, fallback_requests), (1, 1));

    // A refused login on a node is never tried on another: it would only lock the account.
    primary.up().await.unwrap();
    f.sim.reset_stats();
    // The primary answered 503 a moment ago: it is passed over for a minute, so this first
    // attempt goes to the fallback; the refusal is not repeated on the primary.
    f.create_credential("refused", |spec| {
        nodes(spec);
        spec["subscriberSecretRef"] = json!({"name": "wrong-subscriber"});
    })
    .await;
    f.wait_condition(
        "refused",
        "Ready",
        "False",
        Some("AuthenticationFailed"),
        READY_TIMEOUT,
    )
    .await;
    tokio::time::sleep(secs(3)).await;
    let refused = (token_requests(&f, 0), token_requests(&f, 1));
    eprintln!(
        "measure: refused login: token requests primary {}, fallback {}",
        refused.0, refused.1
    );
    assert_eq!(refused.0 + refused.1, 1, "one refused request in all");

    // A primary that accepts connections and never answers: the request times out
    // (--api-timeout 3s) and goes to the fallback.
    let mut g = Fixture::new("failover-hang", SimConfig::new().nodes(2)).await;
    let (primary, fallback) = (g.sim.node(0), g.sim.node(1));
    let (primary_url, fallback_url) = (primary.base_url(), fallback.base_url());
    g.create_input_secrets().await;
    g.start_operator();
    primary.hang().await.unwrap();
    let started = std::time::Instant::now();
    g.create_credential("slow", |spec| {
        spec["apiBaseUrl"] = json!(primary_url);
        spec["fallbackApiBaseUrls"] = json!([fallback_url]);
    })
    .await;
    let cred = g.wait_ready("slow", READY_TIMEOUT).await;
    assert_eq!(
        status(&cred).served_by.as_deref(),
        Some(fallback_url.as_str())
    );
    let hang = (token_requests(&g, 0), token_requests(&g, 1));
    eprintln!(
        "measure: hanging primary: token requests primary {} (unanswered), fallback {}; Ready after {:?}",
        hang.0,
        hang.1,
        started.elapsed()
    );
    assert!(hang.0 <= 1 && hang.1 == 1, "{hang:?}");
    primary.up().await.unwrap();
    f.assert_no_secret_leaked().await;
    g.assert_no_secret_leaked().await;
}

/// A ConfigMap with a CA bundle.
async fn put_ca(f: &Fixture, name: &str, pem: &str) {
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"ca.crt": pem},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &map)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_through_the_ca_bundle_and_an_unknown_one_is_named() {
    let mut f = Fixture::new("private-ca", SimConfig::new().tls()).await;
    let url = f.sim.base_url();
    assert!(url.starts_with("https://"));
    f.create_input_secrets().await;
    f.start_operator_as(&control_plane::admin_kubeconfig(), &["--no-insecure-http"]);

    // Without the CA: a named condition, and not a single token request (the handshake
    // fails before anything is sent; nothing falls back to http).
    f.create_credential("plain", |_| {}).await;
    let cred = f
        .wait_condition(
            "plain",
            "Ready",
            "False",
            Some("TlsUntrusted"),
            READY_TIMEOUT,
        )
        .await;
    let message = &status(&cred).condition("Ready").unwrap().message;
    assert!(message.contains("subject \"CN=localhost\""), "{message}");
    assert!(message.contains("nsapi-sim test CA"), "{message}");
    assert!(message.contains("spec.caBundle"), "{message}");
    assert_eq!(f.sim.stats().token_requests, 0);

    // With the CA in a ConfigMap: Ready.
    put_ca(&f, "portal-ca", &f.sim.ca_pem().unwrap()).await;
    f.create_credential("trusting", |spec| {
        spec["caBundle"] = json!({"name": "portal-ca"})
    })
    .await;
    let cred = f.wait_ready("trusting", READY_TIMEOUT).await;
    assert_eq!(status(&cred).served_by.as_deref(), Some(url.as_str()));

    // A bundle that names nothing: a condition, then Ready once the ConfigMap exists (it is
    // read again within 30 s).
    f.create_credential("later", |spec| {
        spec["caBundle"] = json!({"name": "later-ca", "key": "bundle.pem"})
    })
    .await;
    let cred = f
        .wait_condition(
            "later",
            "Ready",
            "False",
            Some("CaBundleInvalid"),
            READY_TIMEOUT,
        )
        .await;
    let message = &status(&cred).condition("Ready").unwrap().message;
    assert!(
        message.contains("ConfigMap \"later-ca\", key \"bundle.pem\""),
        "{message}"
    );
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "later-ca"},
        "data": {"bundle.pem": f.sim.ca_pem().unwrap()},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(f.client.clone(), f.namespace())
        .create(&PostParams::default(), &map)
        .await
        .unwrap();
    f.wait_ready("later", secs(60)).await;

    // The portal's certificate changes to one from an unknown CA: the next attempt (on a new
    // connection: the operator restarts, as pooled connections would otherwise carry on) says
    // so, and the token in place stays.
    f.sim.set_tls_untrusted(true);
    f.stop_operator();
    f.start_operator_as(&control_plane::admin_kubeconfig(), &["--no-insecure-http"]);
    let requests = f.sim.stats().token_requests;
    let patch = json!({"metadata": {"annotations": {"nsapi.io/renew-requested-at": "now"}}});
    f.credentials()
        .patch(
            "trusting",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let cred = f
        .wait_condition(
            "trusting",
            "Degraded",
            "True",
            Some("TlsUntrusted"),
            READY_TIMEOUT,
        )
        .await;
    let message = &status(&cred).condition("Degraded").unwrap().message;
    assert!(message.contains("nsapi-sim untrusted CA"), "{message}");
    assert_eq!(status(&cred).condition("Ready").unwrap().status, "True");
    assert_eq!(
        f.sim.stats().token_requests,
        requests,
        "no request got through"
    );
    f.sim.set_tls_untrusted(false);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_ca_file_is_trusted_for_every_credential() {
    let mut f = Fixture::new("ca-file", SimConfig::new().tls()).await;
    f.create_input_secrets().await;
    let file = std::env::temp_dir().join(format!("{}-ca.pem", f.namespace()));
    std::fs::write(&file, f.sim.ca_pem().unwrap()).unwrap();
    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &["--no-insecure-http", "--ca-file", file.to_str().unwrap()],
    );
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let _ = std::fs::remove_file(&file);
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn https_goes_through_the_proxy_unless_no_proxy_says_otherwise() {
    let mut f = Fixture::new("proxy", SimConfig::new().tls()).await;
    let sim_addr = f.sim.addr().to_string();
    f.create_input_secrets().await;
    let proxy = ConnectProxy::start().await.unwrap();
    let proxy_url = proxy.proxy_url();
    let file = std::env::temp_dir().join(format!("{}-ca.pem", f.namespace()));
    std::fs::write(&file, f.sim.ca_pem().unwrap()).unwrap();
    let ca = file.to_str().unwrap().to_owned();
    f.start_operator_env(
        &["--no-insecure-http", "--ca-file", &ca],
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    let (tunnels, targets) = (proxy.tunnels(), proxy.targets());
    eprintln!("measure: through the proxy: {tunnels} tunnel(s) to {targets:?}");
    assert!(tunnels >= 1, "no tunnel");
    // Only the NetSapiens API goes through it, never the Kubernetes API.
    assert!(targets.iter().all(|t| *t == sim_addr), "{targets:?}");
    assert_eq!(proxy.refused(), 0);
    f.stop_operator();

    // NO_PROXY names the host: direct, no tunnel.
    proxy.reset();
    f.start_operator_env(
        &["--no-insecure-http", "--ca-file", &ca],
        &[
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    f.create_credential("direct", |_| {}).await;
    f.wait_ready("direct", READY_TIMEOUT).await;
    assert_eq!(proxy.tunnels(), 0, "{:?}", proxy.targets());
    let _ = std::fs::remove_file(&file);
    proxy.shutdown().await;
    f.assert_no_secret_leaked().await;
}
