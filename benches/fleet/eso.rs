//! External Secrets Operator (ESO) side by side with the operator, for the fleet benchmark.
//!
//! For each size N, each side runs the same phases on a private control plane of its own,
//! whose API server audits the writes of that side's identity only (the fleet benchmark's
//! mechanism: `measure::writes`), against an in-process nsapi-sim:
//!
//! 1. hour-long tokens: N created 32 at a time; time until every output Secret is written;
//!    NetSapiens requests and Kubernetes writes to create N; RSS and CPU while creating and
//!    steady afterwards;
//! 2. short tokens (60 s, 600 s at N = 10,000): a soak of `--soak-minutes`: requests per token
//!    lifetime by grant, writes per rotation, seconds in which any output Secret held a token
//!    the simulator no longer accepts, RSS and CPU while rotating;
//! 3. a NetSapiens outage (503 to every token request) for `--fault-minutes`: the requests sent,
//!    then the time until every Secret holds a valid token again;
//! 4. a refused password (changed in the simulator, and every refresh token revoked so that
//!    the operator has to log in too) for `--fault-minutes`: the requests sent.
//!
//! ESO is the controller binary `scripts/eso` builds, run as a process with its own identity
//! (`system:serviceaccount:external-secrets:external-secrets`, bound to `cluster-admin`),
//! watching the fixture's namespace, leader election, webhook and cert-controller off. Each
//! credential is an ExternalSecret whose `dataFrom` names one Webhook generator that POSTs the
//! password grant; the output Secret holds every key of the answer JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use nsapi_sim::{Fault, SimConfig, Stats};
use serde_json::json;

use crate::control_plane::{self, PrivatePlane};
use crate::fixture::{self, CLIENT_SECRET_NAME, Fixture, SUBSCRIBER_SECRET_NAME, USERNAME};
use crate::{MIB, Options, measure, secs};

/// The identity ESO runs as (a static token added to the private control plane).
const ESO_USER: &str = "system:serviceaccount:external-secrets:external-secrets";
/// ESO's `--concurrent`: reconciles in parallel (its default is 1).
const ESO_CONCURRENT: usize = 8;
/// The one Webhook generator every ExternalSecret of a namespace uses.
const GENERATOR: &str = "nsapi-password-grant";
/// A token request's timeout, ESO's Webhook `timeout` (the operator's `--api-timeout` default).
const ESO_TIMEOUT: &str = "15s";
/// Settle, then measure the steady state for this long (as the fleet benchmark does).
const SETTLE: Duration = Duration::from_secs(15);
const STEADY: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Ours,
    Eso,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Ours => "operator",
            Side::Eso => "ESO",
        }
    }

    /// The label selector of the output Secrets this side writes.
    fn selector(self) -> &'static str {
        match self {
            Side::Ours => "app.kubernetes.io/managed-by=nsapi-token-operator",
            Side::Eso => "reconcile.external-secrets.io/managed=true",
        }
    }
}

/// Token lifetime of the rotation part: the fleet benchmark's rotation lifetime, at least 60 s
/// (60 s at N = 100 and 1,000, 600 s at 10,000).
fn short_ttl(n: usize) -> Duration {
    crate::rotation_ttl(n).max(secs(60))
}

/// ESO's refreshInterval for a token lifetime: its docs' 50 minutes for an hour, scaled.
fn refresh_interval(ttl: Duration) -> Duration {
    ttl * 5 / 6
}

/// How the NetSapiens requests of a window split by grant.
#[derive(Clone, Copy, Default, Debug)]
pub struct Grants {
    pub password: u64,
    pub password_ok: u64,
    pub refresh: u64,
    pub refresh_ok: u64,
    /// Token requests of another grant, and `oauth2/read` requests.
    pub other: u64,
}

impl Grants {
    pub fn between(a: &Stats, b: &Stats) -> Grants {
        let password = b.password_grants - a.password_grants;
        let refresh = b.refresh_grants - a.refresh_grants;
        Grants {
            password,
            password_ok: b.password_grants_ok - a.password_grants_ok,
            refresh,
            refresh_ok: b.refresh_grants_ok - a.refresh_grants_ok,
            other: (b.token_requests - a.token_requests) - password - refresh
                + (b.read_requests - a.read_requests),
        }
    }

    pub fn total(&self) -> u64 {
        self.password + self.refresh + self.other
    }

    /// `total (password P, refresh R[, other O])`, each divided by `per`.
    pub fn per(&self, per: f64, digits: usize) -> String {
        let f = |v: u64| format!("{:.digits$}", v as f64 / per);
        // The successful ones too, where some failed.
        let g = |v: u64, ok: u64| {
            if ok == v {
                f(v)
            } else {
                format!("{} of which {} ok", f(v), f(ok))
            }
        };
        let mut s = format!(
            "{} (password {}, refresh {}",
            f(self.total()),
            g(self.password, self.password_ok),
            g(self.refresh, self.refresh_ok)
        );
        if self.other > 0 {
            let _ = write!(s, ", other {}", f(self.other));
        }
        s.push(')');
        s
    }
}

/// One side's figures at one N.
#[derive(Default)]
pub struct PeerReport {
    pub n: usize,
    pub side: Option<Side>,
    /// How the side ran (flags, settings), for the report.
    pub config: Vec<String>,
    // 1. Hour-long tokens.
    pub create_s: f64,
    pub all_written_s: f64,
    /// How many were written within `write_limit_s` (N unless the side was too slow).
    pub written: usize,
    pub write_limit_s: f64,
    pub creation: Grants,
    pub creation_writes: BTreeMap<String, u64>,
    pub rss_creation_peak_kib: u64,
    pub cpu_creation_s: f64,
    pub rss_steady_kib: u64,
    pub cpu_steady_s: f64,
    // 2. Short tokens.
    pub ttl_s: u64,
    pub soak_s: f64,
    pub soak: Grants,
    pub soak_writes: BTreeMap<String, u64>,
    pub soak_refused_writes: u64,
    pub expired_s: f64,
    pub tokens_seen: usize,
    pub rss_rotation_peak_kib: u64,
    pub cpu_rotation_s: f64,
    // 3. and 4. Faults.
    pub fault_s: f64,
    pub outage: Grants,
    pub recovered_s: Option<f64>,
    pub recovery_limit_s: f64,
    pub refused: Grants,
}

/// The side by side for every size: the operator, then ESO.
pub async fn side_by_side(o: &Options, done: impl Fn(&[PeerReport])) -> Vec<PeerReport> {
    let mut reports = Vec::new();
    for &n in &o.sizes {
        for &side in &o.sides {
            reports.push(run(side, n, o).await);
            done(&reports);
        }
    }
    reports
}

/// Where `scripts/eso` keeps the ESO build (it builds it first if needed).
fn eso_dir() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/eso");
    let out = Command::new(&script)
        .arg("--path")
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/eso --path");
    assert!(out.status.success(), "scripts/eso --path failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// ESO's version, from its directory's name (`eso-v0.16.2`).
fn eso_version(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    name.strip_prefix("eso-").unwrap_or(&name).to_owned()
}

/// A private control plane with an identity for ESO, whose API server audits ESO's writes
/// (and nobody else's) in `audit.log`, where `measure::writes` reads them. Returns ESO's
/// kubeconfig.
async fn eso_plane() -> (PrivatePlane, PathBuf) {
    let plane = PrivatePlane::start().await;
    let tokens_path = plane.run_dir.join("pki/tokens.csv");
    let tokens = std::fs::read_to_string(&tokens_path).expect("the control plane's tokens.csv");
    let operator_token = tokens
        .lines()
        .find(|l| l.contains(",system:serviceaccount:nsapi-system:nsapi-token-operator,"))
        .and_then(|l| l.split(',').next())
        .expect("the operator's token")
        .to_owned();
    let token = format!(
        "{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let line = format!(
        "{token},{ESO_USER},external-secrets,\"system:serviceaccounts,system:serviceaccounts:external-secrets,system:authenticated\"\n"
    );
    let mut tokens = tokens;
    if !tokens.ends_with('\n') {
        tokens.push('\n');
    }
    tokens.push_str(&line);
    std::fs::write(&tokens_path, tokens).unwrap();
    // ESO's kubeconfig: the operator's, with ESO's token.
    let kubeconfig = plane.run_dir.join("eso.kubeconfig");
    let text = std::fs::read_to_string(plane.run_dir.join("operator.kubeconfig")).unwrap();
    assert!(text.contains(&operator_token));
    std::fs::write(&kubeconfig, text.replace(&operator_token, &token)).unwrap();
    // The token file is read at start, with the audit policy.
    measure::audit_writes_of(&plane, ESO_USER).await;
    (plane, kubeconfig)
}

/// ESO's CRDs (server-side: they are large) and its identity's RBAC.
fn install_eso(dir: &Path) {
    let mut args = vec![
        "apply".to_owned(),
        "--server-side".to_owned(),
        "--force-conflicts".to_owned(),
    ];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    for file in &files {
        args.push("-f".to_owned());
        args.push(file.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = control_plane::kubectl(&args);
    assert!(
        out.status.success(),
        "cannot apply ESO's CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = control_plane::kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=120s",
        "crd",
        "--all",
    ]);
    assert!(
        out.status.success(),
        "ESO's CRDs are not established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "external-secrets-bench"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": ESO_USER}],
    });
    let out = control_plane::kubectl_stdin(&["apply", "-f", "-"], &binding.to_string());
    assert!(
        out.status.success(),
        "cannot bind ESO's identity: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ESO's controller as a child process.
struct EsoProcess {
    child: Child,
}

impl EsoProcess {
    fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for EsoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Controller {
    Ours(fixture::Operator),
    Eso(EsoProcess),
}

impl Controller {
    fn pid(&self) -> u32 {
        match self {
            Controller::Ours(op) => op.pid(),
            Controller::Eso(p) => p.child.id(),
        }
    }

    fn stop(self) -> bool {
        match self {
            Controller::Ours(op) => op.stop(),
            Controller::Eso(p) => p.stop(),
        }
    }

    /// The operator's `sweep_retriggered_total` series: credentials it found owed a pass that
    /// nothing had started (anything but 0 is a bug). Nothing for ESO.
    async fn sweep_counts(&self) -> Option<String> {
        let Controller::Ours(op) = self else {
            return None;
        };
        let metrics = measure::operator_http(op, "/metrics").await?;
        let counts: Vec<&str> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("nsapi_token_operator_sweep_retriggered_total"))
            .collect();
        Some(counts.join(", "))
    }
}

/// One side's world for one N: its control plane, and for ESO its build and kubeconfig.
struct World {
    side: Side,
    plane: PrivatePlane,
    eso: Option<(PathBuf, PathBuf)>,
    rate: String,
}

impl World {
    async fn new(side: Side, o: &Options) -> World {
        let rate = format!("{}", o.rate);
        match side {
            Side::Ours => World {
                side,
                plane: measure::audited_plane().await,
                eso: None,
                rate,
            },
            Side::Eso => {
                let dir = eso_dir();
                let (plane, kubeconfig) = eso_plane().await;
                install_eso(&dir);
                World {
                    side,
                    plane,
                    eso: Some((dir, kubeconfig)),
                    rate,
                }
            }
        }
    }

    /// The input Secrets, and what the side needs to read them.
    async fn prepare(&self, f: &Fixture) {
        f.create_input_secrets().await;
        match self.side {
            Side::Ours => fixture::grant_operator(f, &[]).await,
            Side::Eso => {
                // A Webhook generator reads only Secrets with this label.
                let label =
                    json!({"metadata": {"labels": {"external-secrets.io/type": "webhook"}}});
                for name in [CLIENT_SECRET_NAME, SUBSCRIBER_SECRET_NAME] {
                    f.secrets()
                        .patch(name, &PatchParams::default(), &Patch::Merge(&label))
                        .await
                        .unwrap();
                }
                let generator = generator_manifest(f);
                let out =
                    control_plane::kubectl_stdin(&["apply", "-f", "-"], &generator.to_string());
                assert!(
                    out.status.success(),
                    "cannot create the Webhook generator: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// The arguments the side's controller runs with.
    fn args(&self, f: &Fixture) -> Vec<String> {
        match self.side {
            // As `measure::start_operator` (with cluster_wide false) completes them.
            Side::Ours => [
                "run",
                "--namespace",
                f.namespace(),
                "--allow-insecure-http",
                "--http-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--api-rate-limit",
                &self.rate,
            ]
            .map(str::to_owned)
            .to_vec(),
            Side::Eso => [
                "--concurrent",
                &ESO_CONCURRENT.to_string(),
                "--namespace",
                f.namespace(),
                "--metrics-addr",
                "127.0.0.1:0",
                "--loglevel",
                "info",
                "--zap-time-encoding",
                "iso8601",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }

    fn start(&self, f: &Fixture, phase: &str) -> Controller {
        match &self.eso {
            None => Controller::Ours(measure::start_operator(
                f,
                &self.plane,
                phase,
                false,
                &["--api-rate-limit", &self.rate],
            )),
            Some((dir, kubeconfig)) => {
                let log = self.plane.run_dir.join(format!("eso-{phase}.log"));
                let log = std::fs::File::create(log).unwrap();
                let child = Command::new(dir.join("bin/external-secrets"))
                    .args(self.args(f))
                    .env("KUBECONFIG", kubeconfig)
                    // The token endpoint is plain http on 127.0.0.1: no proxy in between (Go
                    // bypasses a proxy for `localhost` only).
                    .env_remove("HTTP_PROXY")
                    .env_remove("HTTPS_PROXY")
                    .env_remove("http_proxy")
                    .env_remove("https_proxy")
                    .env("NO_PROXY", "127.0.0.1,localhost")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start ESO's controller");
                Controller::Eso(EsoProcess { child })
            }
        }
    }

    /// Creates N credentials (ours) or ExternalSecrets (ESO), 32 at a time; returns when the
    /// first create returned.
    async fn create(&self, f: &Fixture, n: usize, refresh: Duration) -> jiff::Timestamp {
        let created = match self.side {
            Side::Ours => measure::create_credentials(f, 0..n, 32).await,
            Side::Eso => {
                let gvk = GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret");
                let resource = ApiResource::from_gvk_with_plural(&gvk, "externalsecrets");
                let api: Api<DynamicObject> =
                    Api::namespaced_with(f.client.clone(), f.namespace(), &resource);
                futures::stream::iter(0..n)
                    .map(|i| {
                        let api = api.clone();
                        let name = measure::name(i);
                        let object: DynamicObject =
                            serde_json::from_value(external_secret(f, &name, refresh)).unwrap();
                        async move {
                            api.create(&PostParams::default(), &object)
                                .await
                                .unwrap_or_else(|e| panic!("create ExternalSecret {name}: {e}"));
                            (name, jiff::Timestamp::now())
                        }
                    })
                    .buffer_unordered(32)
                    .collect::<HashMap<_, _>>()
                    .await
            }
        };
        *created.values().min().expect("at least one")
    }

    async fn finish(&self, f: &Fixture) {
        if self.side == Side::Ours {
            fixture::revoke_operator(f).await;
        }
    }
}

/// The Webhook generator: the password grant as a form POST, the fields from the two input
/// Secrets (each `secrets` entry loads every key of its Secret).
fn generator_manifest(f: &Fixture) -> serde_json::Value {
    let field = |name: &str, value: &str| format!("{name}={{{{ {value} | urlquery }}}}");
    let body = [
        "grant_type=password".to_owned(),
        field("client_id", ".client.client_id"),
        field("client_secret", ".client.client_secret"),
        field("username", ".subscriber.username"),
        field("password", ".subscriber.password"),
    ]
    .join("&");
    json!({
        "apiVersion": "generators.external-secrets.io/v1alpha1", "kind": "Webhook",
        "metadata": {"name": GENERATOR, "namespace": f.namespace()},
        "spec": {
            "url": format!("{}oauth2/token/", f.sim.base_url()),
            "method": "POST",
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            "body": body,
            "timeout": ESO_TIMEOUT,
            "result": {},
            "secrets": [
                {"name": "client", "secretRef": {"name": CLIENT_SECRET_NAME}},
                {"name": "subscriber", "secretRef": {"name": SUBSCRIBER_SECRET_NAME}},
            ],
        },
    })
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// One credential as an ExternalSecret: the Webhook generator's answer into `<name>-token`.
fn external_secret(f: &Fixture, name: &str, refresh: Duration) -> serde_json::Value {
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": f.namespace()},
        "spec": {
            "refreshInterval": go_duration(refresh),
            "target": {"name": format!("{name}-token"), "creationPolicy": "Owner"},
            "dataFrom": [{"sourceRef": {"generatorRef": {
                "apiVersion": "generators.external-secrets.io/v1alpha1",
                "kind": "Webhook",
                "name": GENERATOR,
            }}}],
        },
    })
}

/// Watches the output Secrets until `count` hold an access token, for at most `limit`; returns
/// how many did, and when the last of them first did (a side that is too slow is reported as
/// such rather than ending the benchmark).
async fn wait_written(
    f: &Fixture,
    selector: &str,
    count: usize,
    limit: Duration,
) -> (usize, jiff::Timestamp) {
    let written: Arc<Mutex<HashMap<String, jiff::Timestamp>>> = Arc::default();
    let watch = {
        let written = written.clone();
        watcher(f.secrets(), watcher::Config::default().labels(selector))
            .applied_objects()
            .try_for_each(move |s: Secret| {
                let written = written.clone();
                async move {
                    if fixture::data(&s, "access_token").is_some() {
                        let name = s.metadata.name.clone().unwrap_or_default();
                        written
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(jiff::Timestamp::now);
                    }
                    Ok(())
                }
            })
    };
    let done = async {
        while written.lock().unwrap().len() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = done => {}
        _ = watch => panic!("the Secret watch ended"),
        _ = tokio::time::sleep(limit) => eprintln!(
            "only {} of {count} Secrets written within {limit:?}",
            written.lock().unwrap().len()
        ),
    }
    let written = written.lock().unwrap();
    let last = written.values().max().copied();
    (written.len(), last.unwrap_or_else(jiff::Timestamp::now))
}

/// The output Secrets' tokens the simulator does not accept now (expired, or revoked), of
/// those it lists; `None` if the list failed.
async fn invalid_tokens(f: &Fixture, selector: &str, tokens: &mut Vec<String>) -> Option<usize> {
    let list = f
        .secrets()
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    let mut invalid = 0;
    for s in &list.items {
        let token = fixture::data(s, "access_token");
        match token {
            Some(t) if f.sim.is_token_valid(&t) => {
                tokens.push(t);
            }
            _ => invalid += 1,
        }
    }
    Some(invalid)
}

/// Polls every `every` for `duration`: the seconds (sampling instants scaled by `every`) in
/// which at least one output Secret held a token the simulator did not accept (it knows the
/// expiry of every token it issued, so this is exact for both sides), and the distinct tokens.
async fn invalid_seconds(
    f: &Fixture,
    selector: &str,
    duration: Duration,
    every: Duration,
) -> (f64, usize) {
    let end = Instant::now() + duration;
    let mut bad = 0u32;
    let mut tokens = Vec::new();
    while Instant::now() < end {
        let tick = Instant::now();
        if invalid_tokens(f, selector, &mut tokens).await.unwrap_or(0) > 0 {
            bad += 1;
        }
        tokens.sort_unstable();
        tokens.dedup();
        tokio::time::sleep(every.saturating_sub(tick.elapsed())).await;
    }
    (f64::from(bad) * every.as_secs_f64(), tokens.len())
}

/// One side at one N.
async fn run(side: Side, n: usize, o: &Options) -> PeerReport {
    let world = World::new(side, o).await;
    let mut r = PeerReport {
        n,
        side: Some(side),
        ..PeerReport::default()
    };
    let tag = format!("peer {} {n}", side.name());
    let write_limit = secs(180 + n as u64 / 5);

    // 1. Hour-long tokens: creation and the steady state.
    let hour = secs(3600);
    let f = Fixture::new(
        &format!("peer-{}", side.name().to_lowercase()),
        SimConfig::new().token_ttl(hour),
    )
    .await;
    world.prepare(&f).await;
    let controller = world.start(&f, "peer-creation");
    let sampler = measure::Sampler::start(controller.pid());
    tokio::time::sleep(secs(3)).await;
    let cpu0 = sampler.now().1;
    let stats0 = f.sim.stats();
    let started = Instant::now();
    let first = world.create(&f, n, refresh_interval(hour)).await;
    r.create_s = started.elapsed().as_secs_f64();
    let (written, last) = wait_written(&f, side.selector(), n, write_limit).await;
    r.all_written_s = last.duration_since(first).as_secs_f64();
    r.written = written;
    r.write_limit_s = write_limit.as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let (_, cpu1) = sampler.now();
    r.cpu_creation_s = cpu1 - cpu0;
    r.rss_creation_peak_kib = sampler.peak();
    tokio::time::sleep(STEADY).await;
    let (rss, cpu2) = sampler.now();
    r.rss_steady_kib = rss;
    r.cpu_steady_s = cpu2 - cpu1;
    r.creation = Grants::between(&stats0, &f.sim.stats());
    r.creation_writes = measure::writes(&world.plane).ok;
    eprintln!(
        "bench {tag}: all {n} Secrets written {:.1}s after the first create; {} requests",
        r.all_written_s,
        r.creation.total()
    );
    if let Some(counts) = controller.sweep_counts().await {
        eprintln!("bench {tag}: the sweep started {counts}");
    }
    assert!(controller.stop(), "{tag}: the controller did not stop");
    drop(sampler);
    world.finish(&f).await;
    drop(f);

    // 2. Short tokens: a soak.
    let ttl = short_ttl(n);
    r.ttl_s = ttl.as_secs();
    let f = Fixture::new(
        &format!("peer-{}", side.name().to_lowercase()),
        SimConfig::new().token_ttl(ttl),
    )
    .await;
    world.prepare(&f).await;
    let controller = world.start(&f, "peer-rotation");
    r.config = config(&world, &f);
    let sampler = measure::Sampler::start(controller.pid());
    tokio::time::sleep(secs(3)).await;
    world.create(&f, n, refresh_interval(ttl)).await;
    wait_written(&f, side.selector(), n, write_limit).await;
    let soak = secs(o.soak_minutes * 60);
    let every = secs((n / 500).clamp(1, 5) as u64);
    sampler.reset_peak();
    let start = (
        f.sim.stats(),
        measure::writes(&world.plane),
        sampler.now().1,
    );
    let began = Instant::now();
    let (invalid, tokens) = invalid_seconds(&f, side.selector(), soak, every).await;
    r.soak_s = began.elapsed().as_secs_f64();
    let writes = measure::writes(&world.plane).since(&start.1);
    r.soak = Grants::between(&start.0, &f.sim.stats());
    r.soak_writes = writes.ok;
    r.soak_refused_writes = writes.refused;
    r.expired_s = invalid;
    r.tokens_seen = tokens;
    r.rss_rotation_peak_kib = sampler.peak();
    r.cpu_rotation_s = sampler.now().1 - start.2;
    eprintln!(
        "bench {tag}: soak of {:.0}s with {} s tokens: {} requests, {:.0} s with an expired token",
        r.soak_s,
        r.ttl_s,
        r.soak.total(),
        r.expired_s
    );

    // 3. A NetSapiens outage: 503 to every token request.
    let window = secs(o.fault_minutes * 60);
    r.fault_s = window.as_secs_f64();
    let before = f.sim.stats();
    f.sim.inject(Fault::Status {
        status: 503,
        count: u32::MAX,
    });
    tokio::time::sleep(window).await;
    r.outage = Grants::between(&before, &f.sim.stats());
    f.sim.clear_faults();
    let cleared = Instant::now();
    // Long enough to see the operator's slowest recovery: a credential waits out the backoff
    // it reached during the outage, at most the cap for transient failures.
    let backoff_cap = nsapi_token_operator::core::schedule::TRANSIENT_BACKOFF_CAP.unsigned_abs();
    let limit = window.max(ttl * 2).max(backoff_cap + secs(60));
    r.recovery_limit_s = limit.as_secs_f64();
    let mut scratch = Vec::new();
    while cleared.elapsed() < limit {
        if invalid_tokens(&f, side.selector(), &mut scratch).await == Some(0) {
            r.recovered_s = Some(cleared.elapsed().as_secs_f64());
            break;
        }
        scratch.clear();
        tokio::time::sleep(secs(1)).await;
    }
    eprintln!(
        "bench {tag}: outage: {} requests in {:.0}s; all valid again after {:?}",
        r.outage.total(),
        r.fault_s,
        r.recovered_s
    );

    // 4. A refused password: changed at NetSapiens, and no refresh token left to fall back on.
    let before = f.sim.stats();
    f.sim.set_password(USERNAME, "changed-at-the-portal");
    f.sim.revoke_refresh_tokens();
    tokio::time::sleep(window).await;
    r.refused = Grants::between(&before, &f.sim.stats());
    eprintln!(
        "bench {tag}: refused password: {} requests in {:.0}s",
        r.refused.total(),
        r.fault_s
    );
    if let Some(counts) = controller.sweep_counts().await {
        eprintln!("bench {tag}: the sweep started {counts}");
    }
    assert!(controller.stop(), "{tag}: the controller did not stop");
    drop(sampler);
    world.finish(&f).await;
    drop(f);
    r
}

/// How the side ran, in words, for the report.
fn config(world: &World, f: &Fixture) -> Vec<String> {
    let args = world
        .args(f)
        .join(" ")
        .replace(f.namespace(), "<namespace>");
    match world.side {
        Side::Ours => vec![
            format!(
                "`nsapi-token-operator {args}` (release build; `RUST_LOG=info`, `MALLOC_ARENA_MAX=2`), as the operator identity with the chart's RBAC; everything else at its default (`refreshBefore` 10 minutes, half the lifetime for shorter tokens, minus a jitter; `--concurrency 64`; `--api-timeout 15s`); one NsApiCredential per credential"
            ),
            format!(
                "`--api-rate-limit {}`: at most {} NetSapiens requests a second",
                world.rate, world.rate
            ),
        ],
        Side::Eso => {
            let (dir, _) = world.eso.as_ref().unwrap();
            vec![
                format!(
                    "External Secrets Operator {} built by `scripts/eso` from its Go module (`CGO_ENABLED=0 go build -trimpath`)",
                    eso_version(dir)
                ),
                format!(
                    "`external-secrets {args}` (the controller only: leader election off (the default), no webhook, no cert-controller; its other flags at their defaults, e.g. `--client-qps 50 --client-burst 100`), as `{ESO_USER}`, bound to `cluster-admin`"
                ),
                format!(
                    "one ExternalSecret per credential: `dataFrom: [{{sourceRef: {{generatorRef: {{kind: Webhook, name: {GENERATOR}}}}}}}]`, `target: {{name: <name>-token, creationPolicy: Owner}}`, `refreshInterval` 5/6 of the token lifetime (its docs' 50m for 60m, scaled): `{}` for the 3600 s tokens of part 1, `{}` for 60 s tokens, `{}` for 600 s tokens",
                    go_duration(refresh_interval(secs(3600))),
                    go_duration(refresh_interval(secs(60))),
                    go_duration(refresh_interval(secs(600)))
                ),
                format!(
                    "one Webhook generator (generators.external-secrets.io/v1alpha1) per namespace: `POST {{base}}oauth2/token/`, `Content-Type: application/x-www-form-urlencoded`, body `grant_type=password&client_id={{{{ .client.client_id | urlquery }}}}&client_secret=...&username={{{{ .subscriber.username | urlquery }}}}&password=...`, `timeout: {ESO_TIMEOUT}`, `result: {{}}` (every key of the answer goes into the Secret), `secrets` = the two input Secrets (labelled `external-secrets.io/type: webhook`)"
                ),
            ]
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / MIB)
}

/// The side-by-side table, a column per side and N.
pub fn report(reports: &[PeerReport], o: &Options) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n## External Secrets Operator, side by side\n");
    let _ = writeln!(
        out,
        "Soak {} min, fault windows {} min each. Part 1: hour-long tokens. Part 2: short tokens (row \"token lifetime\").\n",
        o.soak_minutes, o.fault_minutes
    );
    let header: Vec<String> = reports
        .iter()
        .map(|r| format!("N = {} {}", r.n, r.side.unwrap().name()))
        .collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|---|{}|",
        reports.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    let row = |out: &mut String, label: &str, f: &dyn Fn(&PeerReport) -> String| {
        let _ = writeln!(
            out,
            "| {label} | {} |",
            reports.iter().map(f).collect::<Vec<_>>().join(" | ")
        );
    };
    let writes = |w: &BTreeMap<String, u64>, per: f64| -> String {
        let total: u64 = w.values().sum();
        let parts: Vec<String> = w
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", *v as f64 / per))
            .collect();
        format!("{:.2} ({})", total as f64 / per, parts.join(", "))
    };
    row(&mut out, "1. creates took (s), 32 at a time", &|r| {
        format!("{:.1}", r.create_s)
    });
    row(
        &mut out,
        "1. all Secrets written, after the first create (s)",
        &|r| {
            if r.written == r.n {
                format!("{:.1}", r.all_written_s)
            } else {
                format!("only {} within {:.0}", r.written, r.write_limit_s)
            }
        },
    );
    row(
        &mut out,
        "1. NetSapiens requests to create N, per credential",
        &|r| r.creation.per(r.n as f64, 2),
    );
    row(
        &mut out,
        "1. Kubernetes writes to create N, per credential",
        &|r| writes(&r.creation_writes, r.n as f64),
    );
    row(
        &mut out,
        "1. RSS peak while creating (MiB); CPU-seconds until settled",
        &|r| format!("{}; {:.1}", mib(r.rss_creation_peak_kib), r.cpu_creation_s),
    );
    row(
        &mut out,
        &format!(
            "1. RSS steady (MiB); CPU-seconds in {} s steady",
            STEADY.as_secs()
        ),
        &|r| format!("{}; {:.2}", mib(r.rss_steady_kib), r.cpu_steady_s),
    );
    row(&mut out, "2. token lifetime (s); soak (s)", &|r| {
        format!("{}; {:.0}", r.ttl_s, r.soak_s)
    });
    row(
        &mut out,
        "2. NetSapiens requests per token lifetime, per credential",
        &|r| {
            let lifetimes = r.n as f64 * r.soak_s / r.ttl_s as f64;
            r.soak.per(lifetimes, 2)
        },
    );
    row(
        &mut out,
        "2. Secret writes (rotations); NetSapiens requests per rotation",
        &|r| {
            let rotations = r.soak_writes.get("secrets").copied().unwrap_or(0);
            format!(
                "{rotations}; {:.2}",
                r.soak.total() as f64 / rotations.max(1) as f64
            )
        },
    );
    row(&mut out, "2. Kubernetes writes per rotation", &|r| {
        let rotations = r.soak_writes.get("secrets").copied().unwrap_or(0);
        let mut s = writes(&r.soak_writes, rotations.max(1) as f64);
        if r.soak_refused_writes > 0 {
            let _ = write!(s, "; {} refused", r.soak_refused_writes);
        }
        s
    });
    row(
        &mut out,
        "2. seconds with an expired token in any Secret",
        &|r| format!("{:.0} of {:.0}", r.expired_s, r.soak_s),
    );
    row(
        &mut out,
        "2. RSS peak while rotating (MiB); CPU-seconds (% of a core)",
        &|r| {
            format!(
                "{}; {:.1} ({:.1} %)",
                mib(r.rss_rotation_peak_kib),
                r.cpu_rotation_s,
                r.cpu_rotation_s / r.soak_s * 100.0
            )
        },
    );
    row(
        &mut out,
        "3. NetSapiens outage (503): requests in the window",
        &|r| r.outage.per(1.0, 0),
    );
    row(
        &mut out,
        "3. every Secret valid again, after the outage (s)",
        &|r| match r.recovered_s {
            Some(s) => format!("{s:.0}"),
            None => format!("not within {:.0}", r.recovery_limit_s),
        },
    );
    row(
        &mut out,
        "4. refused password: requests in the window",
        &|r| r.refused.per(1.0, 0),
    );
    let mut seen = Vec::new();
    for r in reports {
        let side = r.side.unwrap();
        if seen.contains(&side) {
            continue;
        }
        seen.push(side);
        let _ = writeln!(out, "\nHow the {} ran:", side.name());
        for line in &r.config {
            let _ = writeln!(out, "- {line}");
        }
    }
    out
}
