//! Protected metrics (issue 17, finding 10), against the real local control plane: the operator
//! binary runs as its own identity (`system:serviceaccount:nsapi-system:nsapi-token-operator`)
//! with the chart's rules for one namespace plus `create` on tokenreviews and
//! subjectaccessreviews, serves `/metrics` over HTTPS with a certificate made here, and lets in
//! only Bearer tokens that the API server authenticates (TokenReview) and authorises for
//! `get /metrics` (SubjectAccessReview). The plain port keeps the probes only.

mod control_plane;
mod fixture;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use nsapi_sim::SimConfig;
use serde_json::{Value, json};

use fixture::Fixture;

/// The operator's identity in the test bed (control_plane::operator_kubeconfig).
const OPERATOR_SA: (&str, &str) = ("nsapi-system", "nsapi-token-operator");

/// The tests bind that one identity cluster-wide, one with the review rights and one without:
/// they take turns, or one would see the other's grant.
static OPERATOR_IDENTITY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Cluster-wide objects of this test, deleted when it ends (even on failure).
struct ClusterObjects(Vec<(&'static str, String)>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for (kind, name) in &self.0 {
            let _ = control_plane::kubectl(&["delete", kind, name, "--ignore-not-found"]);
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// The chart's rules for one watched namespace (scope=namespace), and cluster-wide what
/// metrics.secure.auth=kubernetes adds (with `reviews`): create on tokenreviews and
/// subjectaccessreviews.
async fn grant_operator(f: &Fixture, cluster: &mut ClusterObjects, reviews: bool) {
    let ns = f.namespace().to_owned();
    let subject =
        json!([{"kind": "ServiceAccount", "name": OPERATOR_SA.1, "namespace": OPERATOR_SA.0}]);
    let role: Role = from_json(json!({
        "metadata": {"name": "operator"},
        "rules": [
            {"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        ],
    }));
    let binding: RoleBinding = from_json(json!({
        "metadata": {"name": "operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
        "subjects": subject,
    }));
    let pp = PostParams::default();
    Api::<Role>::namespaced(f.client.clone(), &ns)
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(f.client.clone(), &ns)
        .create(&pp, &binding)
        .await
        .unwrap();
    let name = format!("{ns}-operator");
    cluster.0.push(("clusterrole", name.clone()));
    cluster.0.push(("clusterrolebinding", name.clone()));
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [ns], "verbs": ["get"]}),
    ];
    if reviews {
        rules.push(json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}));
        rules.push(json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}));
    }
    let cluster_role: ClusterRole = from_json(json!({"metadata": {"name": name}, "rules": rules}));
    let cluster_binding: ClusterRoleBinding = from_json(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subject,
    }));
    Api::<ClusterRole>::all(f.client.clone())
        .create(&pp, &cluster_role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(f.client.clone())
        .create(&pp, &cluster_binding)
        .await
        .unwrap();
}

/// A self-signed serving certificate for 127.0.0.1 and localhost, written as PEM files into
/// `dir`: (certificate PEM, cert file, key file).
fn serving_certificate(dir: &std::path::Path) -> (String, PathBuf, PathBuf) {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert_pem, cert, key)
}

/// The address the operator logged for `message`.
fn logged_addr(log: &str, message: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == message || v["message"] == message)
        .and_then(|v| {
            v["fields"]["addr"]
                .as_str()
                .or(v["addr"].as_str())
                .map(str::to_owned)
        })
}

/// A ServiceAccount's token from the TokenRequest API (what a Prometheus pod mounts).
async fn service_account_token(f: &Fixture, name: &str) -> String {
    let accounts = Api::<ServiceAccount>::namespaced(f.client.clone(), f.namespace());
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token from the TokenRequest API")
}

async fn scrape(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Starts the operator as `kubeconfig` with HTTPS metrics (a fresh certificate in `dir`) and
/// `--metrics-auth=auth`; returns the HTTPS /metrics URL and a client trusting the certificate.
async fn start_with_https_metrics(
    f: &mut Fixture,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    auth: &str,
) -> (String, reqwest::Client) {
    let (cert_pem, cert, key) = serving_certificate(dir);
    let cert_arg = format!("--metrics-tls-cert-file={}", cert.display());
    let key_arg = format!("--metrics-tls-key-file={}", key.display());
    let auth_arg = format!("--metrics-auth={auth}");
    f.start_operator_as(
        kubeconfig,
        &["--metrics-addr=127.0.0.1:0", &cert_arg, &key_arg, &auth_arg],
    );
    f.wait_operator_started().await;
    let log = f.latest_operator_log();
    let addr = logged_addr(&log, "serving /metrics over HTTPS")
        .unwrap_or_else(|| panic!("no HTTPS metrics address logged: {log}"));
    let port = addr.rsplit(':').next().unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    (format!("https://127.0.0.1:{port}/metrics"), client)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_metrics_need_a_token_the_api_server_authorises_for_get_metrics() {
    let _turn = OPERATOR_IDENTITY.lock().await;
    let mut f = Fixture::new("secure-metrics", SimConfig::new()).await;
    let mut cluster = ClusterObjects(Vec::new());
    grant_operator(&f, &mut cluster, true).await;

    let dir = std::env::temp_dir().join(control_plane::unique_name("metrics-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, client) = start_with_https_metrics(
        &mut f,
        &control_plane::operator_kubeconfig(),
        &dir,
        "kubernetes",
    )
    .await;

    // A credential, so that the metrics have series of their own.
    f.create_input_secrets().await;
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", Duration::from_secs(60)).await;

    // No token, or one the API server does not know: 401.
    assert_eq!(scrape(&client, &url, None).await.0, 401);
    assert_eq!(scrape(&client, &url, Some("not-a-token")).await.0, 401);

    // A real ServiceAccount token without any grant: 403.
    let token = service_account_token(&f, "scraper").await;
    let (status, body) = scrape(&client, &url, Some(&token)).await;
    assert_eq!(status, 403, "{body}");

    // Bound to a metrics-reader role: 200 with the Prometheus text (a refusal is cached for at
    // most 10 s).
    let reader = format!("{}-metrics-reader", f.namespace());
    cluster.0.push(("clusterrole", reader.clone()));
    cluster.0.push(("clusterrolebinding", reader.clone()));
    let pp = PostParams::default();
    Api::<ClusterRole>::all(f.client.clone())
        .create(
            &pp,
            &from_json(json!({
                "metadata": {"name": reader},
                "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
            })),
        )
        .await
        .unwrap();
    let bindings = Api::<ClusterRoleBinding>::all(f.client.clone());
    bindings
        .create(
            &pp,
            &from_json(json!({
                "metadata": {"name": reader},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader},
                "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": f.namespace()}],
            })),
        )
        .await
        .unwrap();
    let body = control_plane::eventually(
        "the bound scraper to be let in",
        Duration::from_secs(30),
        || async {
            let (status, body) = scrape(&client, &url, Some(&token)).await;
            (status == 200).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains("nsapi_token_operator_token_expiry_timestamp_seconds{")
            && body.ends_with("# EOF\n"),
        "{body}"
    );

    // The decision is cached: with the binding gone, the next scrape is still let in without
    // asking the API server again (an allowed token is trusted for a minute).
    bindings
        .delete(&reader, &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(scrape(&client, &url, Some(&token)).await.0, 200);

    // Plain http on the HTTPS port is refused; the plain port has the probes but no /metrics.
    let plain_on_tls = reqwest::get(url.replace("https://", "http://")).await;
    assert!(
        plain_on_tls.is_err() || !plain_on_tls.unwrap().status().is_success(),
        "plain http was served on the HTTPS port"
    );
    assert_eq!(f.operator_http("/healthz").await.0, 200);
    assert_eq!(f.operator_http("/readyz").await.0, 200);
    assert_eq!(f.operator_http("/metrics").await.0, 404);

    let logs = f.operator_logs();
    assert!(!logs.contains(&token), "the scraper's token was logged");
    f.stop_operator();
    f.assert_no_secret_leaked().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_serving_certificate_stops_the_operator_at_start() {
    let mut f = Fixture::new("secure-metrics-bad", SimConfig::new()).await;
    let dir = std::env::temp_dir().join(control_plane::unique_name("metrics-tls-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let cert_arg = format!("--metrics-tls-cert-file={}", cert.display());
    let key_arg = format!("--metrics-tls-key-file={}", key.display());
    f.start_operator_as(
        &control_plane::admin_kubeconfig(),
        &["--metrics-addr=127.0.0.1:0", &cert_arg, &key_arg],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f.operator.as_mut().unwrap().exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the operator still runs with a bad certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(f.operator.take());
    let log = f.latest_operator_log();
    assert!(log.contains("--metrics-tls-cert-file"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_the_api_server_refuses_is_a_503_never_a_200_and_auth_none_is_tls_only() {
    let _turn = OPERATOR_IDENTITY.lock().await;
    let mut f = Fixture::new("secure-metrics-norbac", SimConfig::new()).await;
    let mut cluster = ClusterObjects(Vec::new());
    // The operator may do its work but not create TokenReviews.
    grant_operator(&f, &mut cluster, false).await;
    let dir = std::env::temp_dir().join(control_plane::unique_name("metrics-tls-norbac"));
    std::fs::create_dir_all(&dir).unwrap();
    let (url, client) = start_with_https_metrics(
        &mut f,
        &control_plane::operator_kubeconfig(),
        &dir,
        "kubernetes",
    )
    .await;
    let token = service_account_token(&f, "scraper").await;
    for _ in 0..2 {
        // Not cached: each scrape asks again, and fails the same way.
        let (status, body) = scrape(&client, &url, Some(&token)).await;
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(scrape(&client, &url, None).await.0, 401);
    assert!(
        f.latest_operator_log()
            .contains("could not review the token of a /metrics request"),
        "the failed review was not logged"
    );
    f.stop_operator();

    // --metrics-auth=none: TLS only, no token needed, still not on the plain port.
    let (url, client) =
        start_with_https_metrics(&mut f, &control_plane::admin_kubeconfig(), &dir, "none").await;
    let (status, body) = scrape(&client, &url, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(f.operator_http("/metrics").await.0, 404);
    assert_eq!(f.operator_http("/healthz").await.0, 200);

    let logs = f.operator_logs();
    assert!(!logs.contains(&token), "the scraper's token was logged");
    f.stop_operator();
    f.assert_no_secret_leaked().await;
    let _ = std::fs::remove_dir_all(&dir);
}
