//! Access to the local control plane for integration tests
//! (`scripts/control-plane up`: real etcd + kube-apiserver + kube-controller-manager on loopback).
//!
//! The running instance is found from the environment that `scripts/control-plane env` prints
//! (`make test` exports it), falling back to the script's default run directory. If no control
//! plane is running, every helper here panics with a message saying how to start one: integration
//! tests fail loudly, they are never skipped silently.
//!
//! Each integration test file includes this module with `mod control_plane;` and uses only part of it,
//! so unused items are expected in any one test crate; hence the `allow(dead_code)`.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod private;
mod tcp_proxy;

#[allow(unused_imports)]
pub use private::PrivatePlane;
#[allow(unused_imports)]
pub use tcp_proxy::{ProxyMode, TcpProxy};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Kubernetes version of the cached binaries (kept in step with `scripts/control-plane`).
pub const K8S_VERSION: &str = "v1.37.2";

/// Label put on every namespace made by [`TestNamespace::create`].
pub const TEST_NAMESPACE_LABEL: &str = "nsapi-token-operator/test-namespace";

const HOW_TO_START: &str = "start the local control plane with `scripts/control-plane up` \
     (and `eval \"$(scripts/control-plane env)\"` if you changed its run directory), \
     or run the whole suite with `make test`, which starts one for you";

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The run directory of a [`PrivatePlane`] this test binary started, if any: it then takes the
/// place of the shared control plane for every helper here.
static PRIVATE_RUN_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn private_run_dir() -> Option<PathBuf> {
    PRIVATE_RUN_DIR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// The control plane's run directory: a [`PrivatePlane`]'s while one runs, else
/// `NSAPI_CP_RUN_DIR`, else the script's default
/// `${XDG_RUNTIME_DIR:-/tmp}/nsapi-token-operator-control-plane`.
pub fn run_dir() -> PathBuf {
    if let Some(dir) = private_run_dir() {
        return dir;
    }
    env_path("NSAPI_CP_RUN_DIR").unwrap_or_else(|| {
        env_path("XDG_RUNTIME_DIR")
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("nsapi-token-operator-control-plane")
    })
}

/// Kubeconfig of the admin identity (`system:masters`): `NSAPI_CP_ADMIN_KUBECONFIG`, else
/// `<run dir>/admin.kubeconfig`.
pub fn admin_kubeconfig() -> PathBuf {
    if let Some(dir) = private_run_dir() {
        return dir.join("admin.kubeconfig");
    }
    env_path("NSAPI_CP_ADMIN_KUBECONFIG").unwrap_or_else(|| run_dir().join("admin.kubeconfig"))
}

/// Kubeconfig of the operator identity
/// (`system:serviceaccount:nsapi-system:nsapi-token-operator`, which has no RBAC grants until a
/// test or the chart gives it some): `NSAPI_CP_OPERATOR_KUBECONFIG`, else
/// `<run dir>/operator.kubeconfig`.
pub fn operator_kubeconfig() -> PathBuf {
    if let Some(dir) = private_run_dir() {
        return dir.join("operator.kubeconfig");
    }
    env_path("NSAPI_CP_OPERATOR_KUBECONFIG")
        .unwrap_or_else(|| run_dir().join("operator.kubeconfig"))
}

/// The cached kubectl: `NSAPI_CP_KUBECTL`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/nsapi-token-operator/control-plane/<version>/kubectl`.
pub fn kubectl_path() -> PathBuf {
    env_path("NSAPI_CP_KUBECTL").unwrap_or_else(|| {
        let cache = env_path("XDG_CACHE_HOME")
            .unwrap_or_else(|| env_path("HOME").expect("HOME is not set").join(".cache"));
        let version = std::env::var("K8S_VERSION").unwrap_or_else(|_| K8S_VERSION.to_owned());
        cache
            .join("nsapi-token-operator/control-plane")
            .join(version)
            .join("kubectl")
    })
}

fn require_kubeconfig(kubeconfig: &Path) {
    if !kubeconfig.is_file() {
        panic!(
            "no local control plane: kubeconfig {} does not exist; {HOW_TO_START}",
            kubeconfig.display()
        );
    }
}

/// A client for the admin identity. Panics if the control plane is not running.
pub async fn admin_client() -> Client {
    client_for(&admin_kubeconfig()).await
}

/// A client for the identity in `kubeconfig` (e.g. [`operator_kubeconfig`]). Checks that the API
/// server answers `/readyz` with `ok`, and panics with instructions if it does not.
pub async fn client_for(kubeconfig: &Path) -> Client {
    // kube is built with rustls and the `ring` provider; install it as the process default
    // (an Err only means another test already did).
    nsapi_token_operator::nsapi::tls::install_crypto_provider();
    require_kubeconfig(kubeconfig);
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read kubeconfig {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid kubeconfig {}: {e}", kubeconfig.display()));
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", kubeconfig.display()));
    // `http` is not a direct dependency; axum re-exports the same crate.
    let readyz = axum::http::Request::get("/readyz")
        .body(Vec::new())
        .expect("a valid request");
    match tokio::time::timeout(Duration::from_secs(10), client.request_text(readyz)).await {
        Ok(Ok(body)) if body.trim() == "ok" => client,
        Ok(Ok(body)) => {
            panic!("control plane at {server} is not ready (/readyz: {body}); {HOW_TO_START}")
        }
        Ok(Err(e)) => panic!("control plane at {server} unreachable ({e}); {HOW_TO_START}"),
        Err(_) => {
            panic!("control plane at {server} did not answer /readyz within 10s; {HOW_TO_START}")
        }
    }
}

fn kubectl_command(args: &[&str]) -> Command {
    let kubectl = kubectl_path();
    let mut cmd = Command::new(&kubectl);
    cmd.arg("--kubeconfig")
        .arg(admin_kubeconfig())
        .arg("--request-timeout=30s")
        .args(args);
    cmd
}

fn require_kubectl() {
    let kubectl = kubectl_path();
    if !kubectl.is_file() {
        panic!(
            "kubectl not found at {} (run `scripts/control-plane build`); {HOW_TO_START}",
            kubectl.display()
        );
    }
    require_kubeconfig(&admin_kubeconfig());
}

/// Run the cached kubectl as the admin identity; returns its output whatever the exit status.
pub fn kubectl(args: &[&str]) -> Output {
    require_kubectl();
    kubectl_command(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl_path().display()))
}

/// Like [`kubectl`], with `stdin` fed to the process (e.g. `kubectl_stdin(&["apply", "-f", "-"], yaml)`).
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Output {
    require_kubectl();
    let mut child = kubectl_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl_path().display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write kubectl stdin");
    child.wait_with_output().expect("wait for kubectl")
}

/// A name that is unique across tests and concurrent test runs: `<prefix>-<8 hex digits>`,
/// lowercased and cut to fit a DNS label.
pub fn unique_name(prefix: &str) -> String {
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p.truncate(50);
    let p = p.trim_matches('-');
    let p = if p.is_empty() { "test" } else { p };
    format!("{p}-{:08x}", rand::random::<u32>())
}

/// Poll `check` every 200 ms until it returns `Some`, for at most `timeout`; panics with `what`
/// on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh namespace for one test, deleted (without waiting) when dropped. Set
/// `NSAPI_TEST_KEEP_NAMESPACES=1` to keep it for debugging.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Create a namespace named `<prefix>-<random suffix>`, labelled with
    /// [`TEST_NAMESPACE_LABEL`]`=true`.
    pub async fn create(client: &Client, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        TestNamespace { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("NSAPI_TEST_KEEP_NAMESPACES").is_some_and(|v| v == "1") {
            eprintln!("keeping test namespace {}", self.name);
            return;
        }
        // Best effort and never a panic (this may run while a failed test unwinds). A blocking
        // kubectl call is used because Drop cannot await; the namespace controller finishes the
        // deletion in the background.
        let result = kubectl_command(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not delete test namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("could not delete test namespace {}: {e}", self.name),
        }
    }
}
