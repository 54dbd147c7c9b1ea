//! Test harness for the operator's integration tests: a namespace on the local control plane,
//! an in-process nsapi-sim, the input Secrets, and the operator binary run as a real process
//! watching only that namespace, with its logs kept for the secret-leak check.
#![allow(dead_code)] // each test file uses a different part of it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nsapi_sim::{Sim, SimConfig, Subscriber};
use nsapi_token_operator::crd::NsApiCredential;
use serde_json::{Value, json};

use crate::support::{self, TestNamespace};

pub const CLIENT_ID: &str = "nsapi-test-client";
pub const USERNAME: &str = "111@abc-company";
pub const CLIENT_SECRET_NAME: &str = "nsapi-client";
pub const SUBSCRIBER_SECRET_NAME: &str = "nsapi-subscriber";

/// One test's world.
pub struct Fixture {
    pub ns: TestNamespace,
    pub client: Client,
    pub sim: Sim,
    pub client_secret: String,
    pub password: String,
    pub operator: Option<Operator>,
    /// Every operator log file of this test, for the leak check.
    logs: Vec<PathBuf>,
    /// Every access token seen in an output Secret.
    seen_tokens: std::sync::Mutex<Vec<String>>,
    workdir: PathBuf,
}

impl Fixture {
    /// A namespace and a simulator that knows the test's client and subscriber.
    pub async fn new(prefix: &str, config: SimConfig) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        ensure_crd();
        let client = support::admin_client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let client_secret = format!("cs-{:016x}", rand::random::<u64>());
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let sim = Sim::start(
            config
                .client(CLIENT_ID, &client_secret)
                .subscriber(Subscriber::new(USERNAME, &password)),
        )
        .await
        .expect("start nsapi-sim");
        let workdir = std::env::temp_dir().join(format!("nsapi-test-{}", ns.name));
        std::fs::create_dir_all(&workdir).unwrap();
        Fixture {
            ns,
            client,
            sim,
            client_secret,
            password,
            operator: None,
            logs: Vec::new(),
            seen_tokens: Default::default(),
            workdir,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.namespace())
    }

    pub fn credentials(&self) -> Api<NsApiCredential> {
        Api::namespaced(self.client.clone(), self.namespace())
    }

    pub async fn put_secret(&self, name: &str, pairs: &[(&str, &str)]) {
        put_secret(&self.client, self.namespace(), name, pairs).await;
    }

    pub async fn create_client_secret(&self) {
        self.put_secret(
            CLIENT_SECRET_NAME,
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", &self.client_secret),
            ],
        )
        .await;
    }

    pub async fn create_subscriber_secret(&self, password: &str) {
        self.put_secret(
            SUBSCRIBER_SECRET_NAME,
            &[("username", USERNAME), ("password", password)],
        )
        .await;
    }

    pub async fn create_input_secrets(&self) {
        self.create_client_secret().await;
        self.create_subscriber_secret(&self.password.clone()).await;
    }

    /// The manifest of a credential pointing at the simulator; `tweak` edits its spec.
    pub fn credential_manifest(&self, name: &str, tweak: impl FnOnce(&mut Value)) -> Value {
        let mut spec = json!({
            "apiBaseUrl": self.sim.base_url(),
            "clientSecretRef": {"name": CLIENT_SECRET_NAME},
            "subscriberSecretRef": {"name": SUBSCRIBER_SECRET_NAME},
            "tokenSecret": {"name": format!("{name}-token")},
        });
        tweak(&mut spec);
        json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": name, "namespace": self.namespace()},
            "spec": spec,
        })
    }

    pub async fn create_credential(&self, name: &str, tweak: impl FnOnce(&mut Value)) {
        let manifest = self.credential_manifest(name, tweak);
        let cred: NsApiCredential = serde_json::from_value(manifest).unwrap();
        self.credentials()
            .create(&PostParams::default(), &cred)
            .await
            .unwrap_or_else(|e| panic!("cannot create NsApiCredential {name}: {e}"));
    }

    pub async fn delete_credential(&self, name: &str) {
        self.credentials()
            .delete(name, &DeleteParams::background())
            .await
            .unwrap();
    }

    /// Starts the operator binary, scoped to this namespace, as the admin identity.
    pub fn start_operator(&mut self) {
        self.start_operator_as(&support::admin_kubeconfig(), &[]);
    }

    pub fn start_operator_as(&mut self, kubeconfig: &Path, extra_args: &[&str]) {
        assert!(self.operator.is_none(), "an operator is already running");
        self.operator = Some(self.spawn_operator(kubeconfig, extra_args));
    }

    /// Starts one more operator process (e.g. a second replica), scoped to this namespace; its
    /// log is part of this test's leak check. The caller owns the process.
    pub fn spawn_operator(&mut self, kubeconfig: &Path, extra_args: &[&str]) -> Operator {
        let log = self
            .workdir
            .join(format!("operator-{}.log", self.logs.len()));
        let ns = self.namespace().to_owned();
        let mut args = vec![
            "run",
            "--namespace",
            &ns,
            "--allow-insecure-http",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--api-timeout",
            "3s",
        ];
        args.extend_from_slice(extra_args);
        let operator = Operator::start(kubeconfig, &args, &log);
        self.logs.push(log);
        operator
    }

    /// Stops the operator with SIGTERM, as Kubernetes would, and waits for it to exit.
    pub fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            assert!(
                op.stop(),
                "the operator did not exit within 10 s of SIGTERM"
            );
        }
    }

    pub async fn credential(&self, name: &str) -> NsApiCredential {
        self.credentials().get(name).await.unwrap()
    }

    /// The output Secret, if present; remembers its token for the leak check.
    pub async fn token_secret(&self, name: &str) -> Option<Secret> {
        let secret = self.secrets().get_opt(name).await.unwrap();
        if let Some(token) = secret.as_ref().and_then(|s| data(s, "access_token")) {
            let mut seen = self.seen_tokens.lock().unwrap();
            if !seen.contains(&token) {
                seen.push(token);
            }
        }
        secret
    }

    /// Waits until the credential's condition `type_` has `status`, returning the credential.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> NsApiCredential {
        let api = self.credentials();
        let what = format!("{name}: {type_}={status} {reason:?}");
        support::eventually(&what, timeout, || {
            let api = api.clone();
            async move {
                let cred = api.get(name).await.ok()?;
                let cond = cred.status.as_ref()?.condition(type_)?.clone();
                (cond.status == status && reason.is_none_or(|r| cond.reason == r)).then_some(cred)
            }
        })
        .await
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> NsApiCredential {
        self.wait_condition(name, "Ready", "True", None, timeout)
            .await
    }

    /// Waits until the output Secret holds a token other than `previous`.
    pub async fn wait_new_token(&self, secret: &str, previous: &str, timeout: Duration) -> String {
        support::eventually(&format!("a new token in {secret}"), timeout, || async {
            let s = self.token_secret(secret).await?;
            data(&s, "access_token").filter(|t| t != previous)
        })
        .await
    }

    /// Everything the operator logged in this test.
    pub fn operator_logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the current operator process has started its controller.
    pub async fn wait_operator_started(&self) {
        support::eventually(
            "the operator to start its controller",
            Duration::from_secs(30),
            || async {
                self.latest_operator_log()
                    .contains("controller started")
                    .then_some(())
            },
        )
        .await;
    }

    /// GETs a path (`/metrics`, `/readyz`, ...) from the current operator's HTTP server.
    pub async fn operator_http(&self, path: &str) -> (u16, String) {
        let log = self.latest_operator_log();
        let line = log
            .lines()
            .find(|l| l.contains("serving /healthz"))
            .expect("the operator logged its HTTP address");
        let value: Value = serde_json::from_str(line).unwrap();
        let addr = value["addr"].as_str().unwrap().to_owned();
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// What the current (latest started) operator process logged.
    pub fn latest_operator_log(&self) -> String {
        self.logs
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The events recorded in this namespace, as JSON text.
    pub fn events_json(&self) -> String {
        let out = support::kubectl(&["get", "events", "-n", self.namespace(), "-o", "json"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every secret value of this test: credentials and every token the simulator issued.
    fn secret_values(&self) -> Vec<String> {
        let mut secrets = vec![self.client_secret.clone(), self.password.clone()];
        secrets.extend(self.seen_tokens.lock().unwrap().iter().cloned());
        secrets.extend(self.sim.issued_tokens());
        secrets
    }

    /// Asserts that `text` (found in `place`) holds no secret value of this test.
    pub fn assert_no_secret_in(&self, text: &str, place: &str) {
        for secret in self.secret_values() {
            assert!(
                !text.contains(secret.as_str()),
                "a secret value ({}...) leaked into {place}",
                &secret[..4.min(secret.len())]
            );
        }
    }

    /// Asserts that no secret value of this test appears in the operator's logs, in events or in
    /// any credential's status.
    pub async fn assert_no_secret_leaked(&self) {
        let statuses: Vec<String> = self
            .credentials()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| serde_json::to_string(&c.status).unwrap())
            .collect();
        let places = [
            ("operator logs", self.operator_logs()),
            ("events", self.events_json()),
            ("status", statuses.join("\n")),
        ];
        for (place, text) in &places {
            self.assert_no_secret_in(text, place);
        }
        assert!(
            self.operator_logs().contains("\"level\":\"DEBUG\""),
            "the operator did not log at debug level; the leak check would prove nothing"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop();
        }
        let keep = std::env::var_os("NSAPI_TEST_KEEP_LOGS").is_some_and(|v| v == "1");
        if std::thread::panicking() || keep {
            eprintln!("operator logs kept in {}", self.workdir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

/// Applies the checked-in CRD once per test process and waits until it is served.
pub fn ensure_crd() {
    static APPLIED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    APPLIED.get_or_init(|| {
        let crd = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/crds/nsapi.io_nsapicredentials.yaml"
        );
        let out = support::kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd]);
        assert!(
            out.status.success(),
            "cannot apply the CRD: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = support::kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/nsapicredentials.nsapi.io",
        ]);
        assert!(
            out.status.success(),
            "the CRD is not established: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Creates or replaces (server-side apply) an Opaque Secret with these keys and values.
pub async fn put_secret(client: &Client, namespace: &str, name: &str, pairs: &[(&str, &str)]) {
    let data: BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": data,
    });
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("nsapi-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot write Secret {namespace}/{name}: {e}"));
}

/// The value of a Secret key as text.
pub fn data(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The operator binary running as a child process.
pub struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    pub fn start(kubeconfig: &Path, args: &[&str], log: &Path) -> Operator {
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nsapi-token-operator"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start the operator binary");
        Operator {
            child,
            log: log.to_owned(),
        }
    }

    /// What this process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to 10 s; true when the process exited by itself.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Secret's resourceVersion, to prove it was not rewritten.
pub fn version(secret: &Secret) -> String {
    secret.resource_version().unwrap_or_default()
}
