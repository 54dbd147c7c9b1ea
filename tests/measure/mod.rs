//! Measuring a fleet of credentials (the `measure` module), shared by the scale benchmark (`benches/fleet.rs`) and its
//! CI-sized test (`tests/fleet.rs`): a private control plane whose API server keeps an audit
//! log of the operator identity's writes, the operator binary run as that identity, many
//! credentials created at once, the moment each becomes Ready, the operator's memory and CPU,
//! and the output Secrets polled for expired tokens.
#![allow(dead_code)] // the test and the benchmark use different parts

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use nsapi_token_operator::core::crd::NsApiCredential;
use serde_json::Value;

use crate::control_plane::{self, PrivatePlane};
use crate::fixture::{Fixture, Operator, data};

/// The identity the operator runs as on a private control plane.
const OPERATOR_USER: &str = "system:serviceaccount:nsapi-system:nsapi-token-operator";

/// A private control plane whose API server writes an audit log of the operator's writes.
pub async fn audited_plane() -> PrivatePlane {
    let plane = PrivatePlane::start().await;
    audit_writes_of(&plane, OPERATOR_USER).await;
    plane
}

/// Restarts the plane's API server with an audit log of the writes (create, update, patch,
/// delete) of `user` only, at metadata level; the log is what `writes` reads. Token files and
/// other flags read at start are read again.
pub async fn audit_writes_of(plane: &PrivatePlane, user: &str) {
    let policy = plane.run_dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  \
             - level: Metadata\n    users: [\"{user}\"]\n    verbs: [\"create\", \"update\", \"patch\", \"delete\"]\n  \
             - level: None\n"
        ),
    )
    .unwrap();
    let log = plane.run_dir.join("audit.log");
    plane
        .restart_apiserver(
            Duration::ZERO,
            &[
                &format!("--audit-policy-file={}", policy.display()),
                &format!("--audit-log-path={}", log.display()),
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                // Never rotated (the default rotates at 100 MB, which 10,000 credentials pass).
                "--audit-log-maxsize=100000",
            ],
        )
        .await;
}

/// The operator's writes, as the API server's audit log recorded them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes {
    /// Successful writes by resource (`secrets`, `nsapicredentials/status`, `events`, ...).
    pub ok: BTreeMap<String, u64>,
    /// Writes the API server refused (conflicts, validation).
    pub refused: u64,
    /// When each successful patch of a Secret happened (a rotation writes one), and which.
    pub secret_patches: Vec<Timestamp>,
    pub patched_secrets: Vec<String>,
}

impl Writes {
    pub fn total(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn of(&self, resource: &str) -> u64 {
        self.ok.get(resource).copied().unwrap_or(0)
    }

    /// How many distinct Secrets were patched.
    pub fn secrets_patched(&self) -> usize {
        self.patched_secrets
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &Writes) -> Writes {
        let mut ok = self.ok.clone();
        for (k, v) in &earlier.ok {
            *ok.entry(k.clone()).or_default() -= v;
        }
        ok.retain(|_, v| *v > 0);
        Writes {
            ok,
            refused: self.refused - earlier.refused,
            secret_patches: self.secret_patches[earlier.secret_patches.len()..].to_vec(),
            patched_secrets: self.patched_secrets[earlier.patched_secrets.len()..].to_vec(),
        }
    }
}

/// What was read of an audit log so far: its path, the offset read up to, and the writes.
static AUDIT_READ: std::sync::Mutex<Option<(PathBuf, u64, Writes)>> = std::sync::Mutex::new(None);

/// The writes in the audit log of `plane` since it started (only the lines added since the last
/// call are read: the log of a fleet of 10,000 grows to hundreds of MB).
pub fn writes(plane: &PrivatePlane) -> Writes {
    use std::io::{Read, Seek, SeekFrom};
    let path = plane.run_dir.join("audit.log");
    let mut read = AUDIT_READ.lock().unwrap_or_else(|p| p.into_inner());
    if read.as_ref().is_none_or(|(p, _, _)| *p != path) {
        *read = Some((path.clone(), 0, Writes::default()));
    }
    let (_, offset, writes) = read.as_mut().unwrap();
    let mut added = Vec::new();
    if let Ok(mut file) = std::fs::File::open(&path) {
        let _ = file.seek(SeekFrom::Start(*offset));
        let _ = file.read_to_end(&mut added);
    }
    // Only whole lines: the API server may be writing the last one.
    let whole = added.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *offset += whole as u64;
    let text = String::from_utf8_lossy(&added[..whole]);
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["stage"] != "ResponseComplete" {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or("?").to_owned();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        if code >= 400 {
            writes.refused += 1;
            continue;
        }
        if resource == "secrets"
            && event["verb"] == "patch"
            && let Some(at) = event["stageTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
        {
            writes.secret_patches.push(at);
            let name = object["name"].as_str().unwrap_or_default();
            writes.patched_secrets.push(name.to_owned());
        }
        *writes.ok.entry(resource).or_default() += 1;
    }
    writes.clone()
}

/// The operator binary, run as the operator identity on the fixture's namespace (or, with
/// `cluster_wide`, on every namespace, as the chart's default does), logging at info (or at
/// `NSAPI_OPERATOR_LOG`, a `RUST_LOG` filter), with the allocator setting the chart gives it.
pub fn start_operator(
    f: &Fixture,
    plane: &PrivatePlane,
    name: &str,
    cluster_wide: bool,
    extra: &[&str],
) -> Operator {
    let log = plane.run_dir.join(format!("{name}.log"));
    let mut args = vec!["run"];
    if !cluster_wide {
        args.extend(["--namespace", f.namespace()]);
    }
    args.extend([
        "--allow-insecure-http",
        "--http-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    args.extend_from_slice(extra);
    let mut env = vec![("MALLOC_ARENA_MAX".to_owned(), "2".to_owned())];
    env.extend(heaptrack(name));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let level = std::env::var("NSAPI_OPERATOR_LOG").unwrap_or_else(|_| "info".to_owned());
    Operator::start_with(
        &control_plane::operator_kubeconfig(),
        &args,
        &log,
        &level,
        &env,
    )
}

/// With `NSAPI_HEAPTRACK_DIR` set, the operator process runs under heaptrack's preload library
/// (Debian's `heaptrack` package), which records every allocation to `<dir>/<name>.raw`.
fn heaptrack(name: &str) -> Vec<(String, String)> {
    let Some(dir) = std::env::var_os("NSAPI_HEAPTRACK_DIR") else {
        return Vec::new();
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let preload = "/usr/lib/heaptrack/libheaptrack_preload.so";
    assert!(
        std::path::Path::new(preload).exists(),
        "NSAPI_HEAPTRACK_DIR needs heaptrack (apt-get install heaptrack)"
    );
    vec![
        ("LD_PRELOAD".to_owned(), preload.to_owned()),
        (
            "DUMP_HEAPTRACK_OUTPUT".to_owned(),
            dir.join(format!("{name}.raw")).display().to_string(),
        ),
    ]
}

/// GETs a path of an operator's HTTP server.
pub async fn operator_http(operator: &Operator, path: &str) -> Option<String> {
    let log = operator.log();
    let line = log.lines().find(|l| l.contains("serving /healthz"))?;
    let value: Value = serde_json::from_str(line).ok()?;
    let addr = value["addr"].as_str()?.to_owned();
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of a metric without labels in the Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resident memory (KiB) and CPU time used so far (seconds) of a process.
pub fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces): utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks as f64 / 100.0))
}

/// Samples a process's memory every 250 ms in the background.
pub struct Sampler {
    peak: Arc<Mutex<u64>>,
    last: Arc<Mutex<(u64, f64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let peak = Arc::new(Mutex::new(0));
        let last = Arc::new(Mutex::new((0, 0.0)));
        let (p, l) = (peak.clone(), last.clone());
        let task = tokio::spawn(async move {
            while let Some((rss, cpu)) = usage(pid) {
                {
                    let mut peak = p.lock().unwrap();
                    *peak = (*peak).max(rss);
                }
                *l.lock().unwrap() = (rss, cpu);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Sampler { peak, last, task }
    }

    /// The highest RSS seen since the last reset (KiB).
    pub fn peak(&self) -> u64 {
        *self.peak.lock().unwrap()
    }

    pub fn reset_peak(&self) {
        *self.peak.lock().unwrap() = self.last.lock().unwrap().0;
    }

    /// The last RSS (KiB) and CPU seconds seen.
    pub fn now(&self) -> (u64, f64) {
        *self.last.lock().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name of credential `i`.
pub fn name(i: usize) -> String {
    format!("c{i:05}")
}

/// Creates credentials `range`, `parallel` at a time; returns when each create returned.
pub async fn create_credentials(
    f: &Fixture,
    range: std::ops::Range<usize>,
    parallel: usize,
) -> HashMap<String, Timestamp> {
    let api = f.credentials();
    let manifests: Vec<(String, NsApiCredential)> = range
        .map(|i| {
            let n = name(i);
            let manifest = f.credential_manifest(&n, |_| {});
            (n, serde_json::from_value(manifest).unwrap())
        })
        .collect();
    futures::stream::iter(manifests)
        .map(|(n, cred)| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cred)
                    .await
                    .unwrap_or_else(|e| panic!("create {n}: {e}"));
                (n, Timestamp::now())
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Watches credentials until `count` are Ready; returns when each first was.
pub async fn wait_ready(f: &Fixture, count: usize, limit: Duration) -> HashMap<String, Timestamp> {
    let ready: Arc<Mutex<HashMap<String, Timestamp>>> = Arc::default();
    let watch = {
        let ready = ready.clone();
        watcher(f.credentials(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |c: NsApiCredential| {
                let ready = ready.clone();
                async move {
                    let is_ready = c
                        .status
                        .as_ref()
                        .and_then(|s| s.condition("Ready"))
                        .is_some_and(|c| c.status == "True");
                    if is_ready {
                        let name = c.metadata.name.clone().unwrap_or_default();
                        ready
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(Timestamp::now);
                    }
                    Ok(())
                }
            })
    };
    let done = async {
        loop {
            if ready.lock().unwrap().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = done => {}
        _ = watch => panic!("the credential watch ended"),
        _ = tokio::time::sleep(limit) => {
            panic!("only {} of {count} credentials Ready within {limit:?}", ready.lock().unwrap().len())
        }
    }
    ready.lock().unwrap().clone()
}

/// Percentile `p` (0..=100) of `values`, which it sorts.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let at = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[at]
}

/// Polls the Secrets of the namespace with `selector` every `every` for `duration`; returns
/// the seconds (sampling instants, scaled by `every`) in which at least one held an expired
/// token (its `expires_at` key), and how many distinct tokens were seen.
pub async fn expired_seconds(
    f: &Fixture,
    selector: &str,
    duration: Duration,
    every: Duration,
) -> (f64, usize) {
    let secrets: Api<Secret> = f.secrets();
    let end = Instant::now() + duration;
    let mut expired = 0u32;
    let mut tokens = std::collections::HashSet::new();
    let params = ListParams::default().labels(selector);
    while Instant::now() < end {
        let tick = Instant::now();
        if let Ok(list) = secrets.list(&params).await {
            let now = Timestamp::now();
            let any_expired = list.items.iter().any(|s| {
                data(s, "expires_at")
                    .and_then(|e| e.parse::<Timestamp>().ok())
                    .is_some_and(|at| at <= now)
            });
            if any_expired {
                expired += 1;
            }
            for s in &list.items {
                if let Some(t) = data(s, "access_token") {
                    tokens.insert(t);
                }
            }
        }
        tokio::time::sleep(every.saturating_sub(tick.elapsed())).await;
    }
    (f64::from(expired) * every.as_secs_f64(), tokens.len())
}

/// A histogram of times by `bucket` seconds, as text rows `offset  count  bar`.
pub fn histogram(times: &[Timestamp], bucket: i64) -> String {
    let Some(first) = times.iter().min() else {
        return String::new();
    };
    let mut counts = BTreeMap::new();
    for t in times {
        *counts
            .entry(t.duration_since(*first).as_secs() / bucket)
            .or_insert(0u64) += 1;
    }
    let max = counts.values().copied().max().unwrap_or(1);
    counts
        .iter()
        .map(|(b, n)| {
            let bar = "#".repeat(((n * 40).div_ceil(max)) as usize);
            format!("  +{:>5}s {:>6}  {bar}\n", b * bucket, n)
        })
        .collect()
}

/// Where the benchmark writes its report.
pub fn report_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fleet-report.md")
}
