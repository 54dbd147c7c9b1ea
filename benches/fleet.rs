//! The scale benchmark: the operator binary (release build) with fleets of credentials on a
//! private control plane (an audit log counts the operator's writes) and nsapi-sim.
//!
//!   eval "$(scripts/control-plane env)"
//!   cargo bench --bench fleet -- [--sizes 100,1000,10000] [--rate 100] [--foreign 5000]
//!                                 (`--sizes ''`: the soak only)
//!                                 [--soak-size 1000] [--soak-minutes 10] [--no-soak]
//!                                 [--no-rotation]
//!                                 [--fault-minutes 10] [--no-eso] [--eso-only]
//!                                 [--sides operator,eso]
//!                                 [--routine-events false]
//!                                 [--growth-from REPORT[,REPORT...]] [--growth-only]
//!
//! For each size N: apply -> Ready (no rate limit); a restart with every token fresh; N more
//! with the rate limit (time until all Ready); three rotations of every credential (NetSapiens
//! requests and Kubernetes writes per rotation, memory and CPU, the spread of rotation times);
//! with `--foreign`, memory with that many foreign 100 KiB Secrets in another namespace. Then a
//! soak of 60 s tokens (seconds with an expired token in any Secret) next to the CronJob way
//! (`benches/cronjob-baseline`). Then, for each size, External Secrets Operator side by side
//! with the operator (`fleet/eso.rs`; `--no-eso` leaves it out, `--eso-only` runs only it,
//! `--sides eso` runs only ESO's side of it, for a size too slow to run both in one sitting), and
//! how each side's cost grows with N (`fleet/growth.rs`: a table, and a plot written to
//! target/fleet-growth.png; `--growth-from` adds the growth tables of earlier reports, for sizes
//! measured in other runs, and `--growth-only` only draws those). It prints a report and writes
//! it to target/fleet-report.md.

#[path = "../tests/control_plane/mod.rs"]
mod control_plane;
#[path = "fleet/eso.rs"]
mod eso;
#[path = "../tests/fixture/mod.rs"]
mod fixture;
#[path = "fleet/growth.rs"]
mod growth;
#[path = "../tests/measure/mod.rs"]
mod measure;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use fixture::{CLIENT_ID, Fixture, USERNAME};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use nsapi_sim::SimConfig;

const MIB: f64 = 1024.0;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Options {
    sizes: Vec<usize>,
    rate: f64,
    foreign: usize,
    soak_size: usize,
    soak_minutes: u64,
    soak: bool,
    /// Whether each size ends with the rate-limited creation and three rotations.
    rotation: bool,
    /// The side by side with External Secrets Operator: its fault windows, and whether it runs
    /// (`None`), runs alone (`Some(true)`) or not at all (`Some(false)`).
    fault_minutes: u64,
    eso: Option<bool>,
    /// The sides of the side by side that run, in this order.
    sides: Vec<eso::Side>,
    /// The operator's `--routine-events` (its default, `true`, unless asked).
    routine_events: bool,
    /// Earlier reports whose growth tables join this run's.
    growth_from: Vec<String>,
    /// Run nothing: only the growth table and plot of `growth_from`.
    growth_only: bool,
}

impl Options {
    /// The operator's flags for a phase: `--api-rate-limit rate` and what the options ask.
    fn operator_args(&self, rate: &str) -> Vec<String> {
        vec![
            "--api-rate-limit".to_owned(),
            rate.to_owned(),
            format!("--routine-events={}", self.routine_events),
        ]
    }
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![100, 1000, 10_000],
        rate: 100.0,
        foreign: 5000,
        soak_size: 1000,
        soak_minutes: 10,
        soak: true,
        rotation: true,
        fault_minutes: 10,
        eso: None,
        sides: vec![eso::Side::Ours, eso::Side::Eso],
        routine_events: true,
        growth_from: Vec::new(),
        growth_only: false,
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value").clone();
        match arg.as_str() {
            "--sizes" => {
                o.sizes = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--rate" => o.rate = value().parse().unwrap(),
            "--foreign" => o.foreign = value().parse().unwrap(),
            "--soak-size" => o.soak_size = value().parse().unwrap(),
            "--soak-minutes" => o.soak_minutes = value().parse().unwrap(),
            "--no-soak" => o.soak = false,
            "--no-rotation" => o.rotation = false,
            "--fault-minutes" => o.fault_minutes = value().parse().unwrap(),
            "--no-eso" => o.eso = Some(false),
            "--eso-only" => o.eso = Some(true),
            "--sides" => {
                o.sides = value()
                    .split(',')
                    .map(|side| match side {
                        "operator" => eso::Side::Ours,
                        "eso" => eso::Side::Eso,
                        other => panic!("unknown side {other}: operator or eso"),
                    })
                    .collect()
            }
            "--routine-events" => o.routine_events = value().parse().unwrap(),
            "--growth-from" => {
                o.growth_from = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--growth-only" => o.growth_only = true,
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Token lifetime for the rotation phase: short enough for three rotations in a bearable
/// time, long enough for the machine to rotate N of them comfortably.
fn rotation_ttl(n: usize) -> Duration {
    secs((n as u64 * 60 / 1000).clamp(30, 600))
}

#[derive(Default)]
struct SizeReport {
    n: usize,
    ready_p50_ms: f64,
    ready_p99_ms: f64,
    all_ready_s: f64,
    create_s: f64,
    creation_requests: u64,
    creation_writes: BTreeMap<String, u64>,
    rss_steady_kib: u64,
    rss_creation_peak_kib: u64,
    cpu_idle_pct: f64,
    restart_requests: u64,
    restart_writes: u64,
    rss_restart_peak_kib: u64,
    rss_after_restart_kib: u64,
    foreign: Option<(u64, u64, u64)>,
    rate: f64,
    rate_limited_all_ready_s: f64,
    ttl_s: u64,
    rotations: usize,
    requests_per_rotation: f64,
    /// The rotation phase's NetSapiens requests by grant (the simulator's count), and the
    /// operator's own count of its failed ones by grant and result (its metrics).
    rotation_grants: eso::Grants,
    rotation_failures: BTreeMap<String, f64>,
    core_writes_per_rotation: f64,
    events_per_rotation: f64,
    refused_writes: u64,
    expired_s: f64,
    rss_rotation_peak_kib: u64,
    cpu_rotation_pct: f64,
    spread_first: String,
    spread_last: String,
}

async fn run_size(n: usize, o: &Options) -> SizeReport {
    let mut r = SizeReport {
        n,
        rate: o.rate,
        ..SizeReport::default()
    };
    let plane = measure::audited_plane().await;

    // 1. Apply -> Ready, no rate limit, hour-long tokens.
    let f = Fixture::new("fleet", SimConfig::new().token_ttl(secs(3600))).await;
    f.create_input_secrets().await;
    fixture::grant_operator(&f, &[]).await;
    let operator =
        measure::start_operator(&f, &plane, "creation", true, &args(&o.operator_args("0")));
    let sampler = measure::Sampler::start(operator.pid());
    tokio::time::sleep(secs(2)).await;
    let started = Instant::now();
    let created = measure::create_credentials(&f, 0..n, 32).await;
    r.create_s = started.elapsed().as_secs_f64();
    let ready = measure::wait_ready(&f, n, secs(120 + n as u64 / 10)).await;
    let first_create = created.values().min().unwrap();
    let last_ready = ready.values().max().unwrap();
    r.all_ready_s = last_ready.duration_since(*first_create).as_secs_f64();
    let mut latencies: Vec<f64> = created
        .iter()
        .map(|(name, at)| ready[name].duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    r.ready_p50_ms = measure::percentile(&mut latencies, 50.0);
    r.ready_p99_ms = measure::percentile(&mut latencies, 99.0);
    r.creation_requests = f.sim.stats().token_requests + f.sim.stats().read_requests;
    r.creation_writes = measure::writes(&plane).ok;
    r.rss_creation_peak_kib = sampler.peak();
    tokio::time::sleep(secs(15)).await;
    let (_, cpu0) = sampler.now();
    tokio::time::sleep(secs(20)).await;
    let (rss, cpu1) = sampler.now();
    r.rss_steady_kib = rss;
    r.cpu_idle_pct = (cpu1 - cpu0) / 20.0 * 100.0;
    eprintln!(
        "bench {n}: all Ready {:.1}s after the first create, p99 {:.0} ms",
        r.all_ready_s, r.ready_p99_ms
    );

    // 2. A restart with every token fresh.
    let before = (f.sim.stats(), measure::writes(&plane));
    assert!(operator.stop(), "the operator did not stop");
    drop(sampler);
    let operator =
        measure::start_operator(&f, &plane, "restart", true, &args(&o.operator_args("0")));
    let sampler = measure::Sampler::start(operator.pid());
    control_plane::eventually(
        "the restart to look at every credential",
        secs(60 + n as u64 / 20),
        || async {
            let metrics = measure::operator_http(&operator, "/metrics").await?;
            (measure::metric(&metrics, "nsapi_token_operator_reconciles_total")? >= n as f64)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(secs(10)).await;
    let after = (f.sim.stats(), measure::writes(&plane));
    r.restart_requests = after.0.token_requests + after.0.read_requests
        - before.0.token_requests
        - before.0.read_requests;
    r.restart_writes = after.1.since(&before.1).total();
    r.rss_restart_peak_kib = sampler.peak();
    tokio::time::sleep(secs(10)).await;
    r.rss_after_restart_kib = sampler.now().0;
    eprintln!(
        "bench {n}: restart: {} requests, {} writes, peak RSS {:.1} MiB",
        r.restart_requests,
        r.restart_writes,
        r.rss_restart_peak_kib as f64 / MIB
    );

    // 3. Foreign Secrets: the metadata watch sees them, the operator keeps none of their data.
    let mut operator = operator;
    if o.foreign > 0 && n == *o.sizes.iter().max().unwrap() {
        let without = r.rss_after_restart_kib;
        let foreign = control_plane::TestNamespace::create(&f.client, "foreign").await;
        let api: Api<Secret> = Api::namespaced(f.client.clone(), &foreign.name);
        let payload = ByteString(vec![b'x'; 100 * 1024]);
        use futures::StreamExt;
        futures::stream::iter(0..o.foreign)
            .map(|i| {
                let api = api.clone();
                let payload = payload.clone();
                async move {
                    let secret = Secret {
                        metadata: kube::api::ObjectMeta {
                            name: Some(format!("foreign-{i}")),
                            ..Default::default()
                        },
                        data: Some([("blob".to_owned(), payload)].into()),
                        ..Secret::default()
                    };
                    api.create(&PostParams::default(), &secret).await.unwrap();
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        tokio::time::sleep(secs(20)).await;
        let with_running = sampler.now().0;
        assert!(operator.stop());
        drop(sampler);
        operator =
            measure::start_operator(&f, &plane, "foreign", true, &args(&o.operator_args("0")));
        let sampler = measure::Sampler::start(operator.pid());
        tokio::time::sleep(secs(60)).await;
        r.foreign = Some((without, with_running.max(sampler.now().0), sampler.peak()));
        eprintln!(
            "bench {n}: with {} foreign Secrets: RSS {:.1} MiB (peak {:.1})",
            o.foreign,
            sampler.now().0 as f64 / MIB,
            sampler.peak() as f64 / MIB
        );
        drop(foreign);
    }
    assert!(operator.stop());
    fixture::revoke_operator(&f).await;
    drop(f);

    if !o.rotation {
        return r;
    }
    // 4. With the rate limit, short tokens: all Ready, then three rotations of every one.
    let ttl = rotation_ttl(n);
    r.ttl_s = ttl.as_secs();
    let f = Fixture::new("rotation", SimConfig::new().token_ttl(ttl)).await;
    f.create_input_secrets().await;
    fixture::grant_operator(&f, &[]).await;
    let rate = format!("{}", o.rate);
    let operator = measure::start_operator(
        &f,
        &plane,
        "rotation",
        false,
        &args(&o.operator_args(&rate)),
    );
    let sampler = measure::Sampler::start(operator.pid());
    tokio::time::sleep(secs(2)).await;
    let created = measure::create_credentials(&f, 0..n, 32).await;
    let ready = measure::wait_ready(&f, n, secs(120 + (n as f64 / o.rate * 2.0) as u64)).await;
    r.rate_limited_all_ready_s = ready
        .values()
        .max()
        .unwrap()
        .duration_since(*created.values().min().unwrap())
        .as_secs_f64();
    let start = (f.sim.stats(), measure::writes(&plane));
    sampler.reset_peak();
    let cpu0 = sampler.now().1;
    let rotating = Instant::now();
    let poll = (n / 500).clamp(1, 5) as u64;
    let watch = measure::expired_seconds(
        &f,
        "app.kubernetes.io/managed-by=nsapi-token-operator",
        ttl * 2,
        secs(poll),
    );
    let wait = async {
        control_plane::eventually(
            "three rotations of every credential",
            ttl * 4 + secs(120),
            || async {
                let rotated = measure::writes(&plane).since(&start.1).secret_patches.len();
                (rotated >= 3 * n).then_some(())
            },
        )
        .await;
    };
    let failures_before = failed_requests(&operator).await;
    let ((expired, _), ()) = tokio::join!(watch, wait);
    r.expired_s = expired;
    r.rotation_failures = failed_requests(&operator).await;
    for (key, before) in failures_before {
        *r.rotation_failures.entry(key).or_default() -= before;
    }
    r.rotation_failures.retain(|_, v| *v > 0.0);
    let elapsed = rotating.elapsed().as_secs_f64();
    let end = (f.sim.stats(), measure::writes(&plane).since(&start.1));
    r.rotations = end.1.secret_patches.len();
    r.rotation_grants = eso::Grants::between(&start.0, &end.0);
    let rotations = r.rotations as f64;
    r.requests_per_rotation = (end.0.token_requests + end.0.read_requests
        - start.0.token_requests
        - start.0.read_requests) as f64
        / rotations;
    r.core_writes_per_rotation =
        (end.1.of("secrets") + end.1.of("nsapicredentials/status")) as f64 / rotations;
    r.events_per_rotation = end.1.of("events") as f64 / rotations;
    r.refused_writes = end.1.refused;
    r.rss_rotation_peak_kib = sampler.peak();
    r.cpu_rotation_pct = (sampler.now().1 - cpu0) / elapsed * 100.0;
    let patches = &end.1.secret_patches;
    let bucket = (ttl.as_secs() as i64 / 30).max(1);
    let per = patches.len() / 3;
    r.spread_first = measure::histogram(&patches[..per], bucket);
    r.spread_last = measure::histogram(&patches[patches.len() - per..], bucket);
    eprintln!(
        "bench {n}: {} rotations, {:.2} requests and {:.2} writes per rotation",
        r.rotations, r.requests_per_rotation, r.core_writes_per_rotation
    );
    assert!(operator.stop());
    fixture::revoke_operator(&f).await;
    r
}

struct Soak {
    n: usize,
    minutes: u64,
    operator_expired_s: f64,
    operator_requests: u64,
    operator_tokens: usize,
    baseline_expired_s: f64,
    baseline_requests: u64,
    baseline_period_s: u64,
}

async fn soak(o: &Options) -> Soak {
    let plane = measure::audited_plane().await;
    let n = o.soak_size;
    let duration = secs(o.soak_minutes * 60);
    let f = Fixture::new("soak", SimConfig::new().token_ttl(secs(60))).await;
    f.create_input_secrets().await;
    fixture::grant_operator(&f, &[]).await;
    // 1,000 tokens of 60 s need about 25 requests a second: the default 10/s cannot keep up.
    let rate = format!("{}", o.rate);
    let operator =
        measure::start_operator(&f, &plane, "soak", false, &args(&o.operator_args(&rate)));
    measure::create_credentials(&f, 0..n, 32).await;
    measure::wait_ready(&f, n, secs(300)).await;
    let before = f.sim.stats().token_requests;
    let (expired, tokens) = measure::expired_seconds(
        &f,
        "app.kubernetes.io/managed-by=nsapi-token-operator",
        duration,
        secs(1),
    )
    .await;
    let requests = f.sim.stats().token_requests - before;
    assert!(operator.stop());
    fixture::revoke_operator(&f).await;
    drop(f);

    // The CronJob way, with the same tokens: every 50 s (the habit of refreshing 10 minutes
    // before an hour runs out, at this scale), 16 at a time.
    let period = 50;
    let f = Fixture::new("baseline", SimConfig::new().token_ttl(secs(60))).await;
    let base = f.sim.base_url();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/cronjob-baseline");
    let mut baseline = tokio::process::Command::new(script)
        .args([
            n.to_string(),
            period.to_string(),
            duration.as_secs().to_string(),
            "16".to_owned(),
        ])
        .env("BASE", &base)
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", &f.client_secret)
        .env("USERNAME", USERNAME)
        .env("PASSWORD", &f.password)
        .env("NAMESPACE", f.namespace())
        .env("KUBECONFIG", control_plane::admin_kubeconfig())
        .env(
            "PATH",
            format!(
                "{}:{}",
                control_plane::kubectl_path().parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start benches/cronjob-baseline");
    // The baseline's first round has to finish before there is anything to measure.
    control_plane::eventually("the baseline's first round", secs(600), || async {
        let list = f
            .secrets()
            .list(&kube::api::ListParams::default().labels("nsapi.io/baseline=true"))
            .await
            .ok()?;
        (list.items.len() >= n).then_some(())
    })
    .await;
    let before = f.sim.stats().token_requests;
    let (baseline_expired, _) =
        measure::expired_seconds(&f, "nsapi.io/baseline=true", duration, secs(1)).await;
    let baseline_requests = f.sim.stats().token_requests - before;
    let _ = baseline.kill().await;
    drop(plane);
    Soak {
        n,
        minutes: o.soak_minutes,
        operator_expired_s: expired,
        operator_requests: requests,
        operator_tokens: tokens,
        baseline_expired_s: baseline_expired,
        baseline_requests,
        baseline_period_s: period,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / MIB)
}

/// The operator's failed NetSapiens requests so far, `grant/result` → count (from
/// `nsapi_token_operator_token_requests_total`).
async fn failed_requests(operator: &fixture::Operator) -> BTreeMap<String, f64> {
    let text = measure::operator_http(operator, "/metrics")
        .await
        .unwrap_or_default();
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_owned())
    };
    text.lines()
        .filter(|l| l.starts_with("nsapi_token_operator_token_requests_total{"))
        .filter_map(|l| {
            let (grant, result) = (label(l, "grant")?, label(l, "result")?);
            let value: f64 = l.rsplit(' ').next()?.parse().ok()?;
            (result != "ok").then(|| (format!("{grant}/{result}"), value))
        })
        .collect()
}

/// `&[String]` as `&[&str]`.
fn args(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "MISS" }
}

fn report(sizes: &[SizeReport], soak: Option<&Soak>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Fleet results\n");
    let _ = writeln!(
        out,
        "| | {} |",
        sizes
            .iter()
            .map(|r| format!("N = {}", r.n))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        out,
        "|---|{}|",
        sizes.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    let row = |out: &mut String, label: &str, f: &dyn Fn(&SizeReport) -> String| {
        let _ = writeln!(
            out,
            "| {label} | {} |",
            sizes.iter().map(f).collect::<Vec<_>>().join(" | ")
        );
    };
    row(&mut out, "creates took (s), 32 at a time", &|r| {
        format!("{:.1}", r.create_s)
    });
    row(
        &mut out,
        "apply → Ready p50 / p99 (ms), no rate limit",
        &|r| format!("{:.0} / {:.0}", r.ready_p50_ms, r.ready_p99_ms),
    );
    row(
        &mut out,
        "all Ready after the first create (s), no rate limit",
        &|r| format!("{:.1}", r.all_ready_s),
    );
    row(&mut out, "NetSapiens requests to create N", &|r| {
        format!(
            "{} ({:.2} each)",
            r.creation_requests,
            r.creation_requests as f64 / r.n as f64
        )
    });
    row(&mut out, "Kubernetes writes to create N", &|r| {
        r.creation_writes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let rotated = sizes.iter().any(|r| r.rotations > 0);
    if rotated {
        row(
            &mut out,
            "all Ready with the rate limit (s) [target ≤ 1.1 × N / rate]",
            &|r| {
                let target = 1.1 * r.n as f64 / r.rate;
                format!(
                    "{:.1} at {}/s (≤ {:.1}: {})",
                    r.rate_limited_all_ready_s,
                    r.rate,
                    target,
                    pass(r.rate_limited_all_ready_s <= target)
                )
            },
        );
    }
    row(&mut out, "RSS idle, steady (MiB) [target < 64]", &|r| {
        format!(
            "{} ({})",
            mib(r.rss_steady_kib),
            pass(r.rss_steady_kib < 64 * 1024)
        )
    });
    row(&mut out, "RSS peak while creating (MiB)", &|r| {
        mib(r.rss_creation_peak_kib)
    });
    row(&mut out, "CPU idle (% of a core)", &|r| {
        format!("{:.2}", r.cpu_idle_pct)
    });
    row(
        &mut out,
        "restart with fresh tokens: NetSapiens requests / writes [target 0 / 0]",
        &|r| {
            format!(
                "{} / {} ({})",
                r.restart_requests,
                r.restart_writes,
                pass(r.restart_requests == 0 && r.restart_writes == 0)
            )
        },
    );
    row(
        &mut out,
        "RSS peak during the restart / after (MiB) [target < 64]",
        &|r| {
            format!(
                "{} / {} ({})",
                mib(r.rss_restart_peak_kib),
                mib(r.rss_after_restart_kib),
                pass(r.rss_restart_peak_kib < 64 * 1024)
            )
        },
    );
    if rotated {
        row(&mut out, "token lifetime in the rotation phase (s)", &|r| {
            r.ttl_s.to_string()
        });
        row(&mut out, "rotations observed", &|r| r.rotations.to_string());
        row(
            &mut out,
            "NetSapiens requests per rotation [target 1.00]",
            &|r| {
                format!(
                    "{:.2} ({})",
                    r.requests_per_rotation,
                    pass(format!("{:.2}", r.requests_per_rotation) == "1.00")
                )
            },
        );
        row(
            &mut out,
            "Kubernetes writes per rotation, Secret + status [target ≤ 2]",
            &|r| {
                format!(
                    "{:.2} ({})",
                    r.core_writes_per_rotation,
                    pass(r.core_writes_per_rotation <= 2.0)
                )
            },
        );
        row(
            &mut out,
            "requests in the rotation phase by grant; the operator's failed ones",
            &|r| {
                let failed = if r.rotation_failures.is_empty() {
                    "none".to_owned()
                } else {
                    r.rotation_failures
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("{}; {failed}", r.rotation_grants.per(1.0, 0))
            },
        );
        row(&mut out, "Events per rotation; refused writes", &|r| {
            format!("{:.2}; {}", r.events_per_rotation, r.refused_writes)
        });
        row(
            &mut out,
            "seconds with an expired token during 2 lifetimes [target 0]",
            &|r| format!("{:.0} ({})", r.expired_s, pass(r.expired_s == 0.0)),
        );
        row(
            &mut out,
            "RSS peak while rotating (MiB); CPU (% of a core)",
            &|r| {
                format!(
                    "{}; {:.1}",
                    mib(r.rss_rotation_peak_kib),
                    r.cpu_rotation_pct
                )
            },
        );
    }
    for r in sizes {
        if let Some((without, with, peak)) = r.foreign {
            let growth = (with as f64 - without as f64) / without as f64 * 100.0;
            let _ = writeln!(
                out,
                "\nN = {}: RSS {} MiB without, {} MiB with the foreign Secrets (peak {} MiB after a restart): {:+.1} % [target < 10 %: {}]",
                r.n,
                mib(without),
                mib(with),
                mib(peak),
                growth,
                pass(growth < 10.0)
            );
        }
    }
    for r in sizes.iter().filter(|r| r.rotations > 0) {
        let _ = writeln!(
            out,
            "\nRotation times, N = {} ({} s tokens), first wave:\n```\n{}```\nthird wave:\n```\n{}```",
            r.n, r.ttl_s, r.spread_first, r.spread_last
        );
    }
    if let Some(s) = soak {
        let _ = writeln!(
            out,
            "\n## Soak: {} credentials, 60 s tokens, {} minutes\n",
            s.n, s.minutes
        );
        let _ = writeln!(
            out,
            "| | operator | CronJob way (every {} s, 16 at a time) | ratio |\n|---|---|---|---|",
            s.baseline_period_s
        );
        let _ = writeln!(
            out,
            "| seconds with an expired token in any Secret | {:.0} | {:.0} | {} |",
            s.operator_expired_s,
            s.baseline_expired_s,
            if s.operator_expired_s == 0.0 {
                "0".to_owned()
            } else {
                format!(
                    "{:.2}",
                    s.operator_expired_s / s.baseline_expired_s.max(1.0)
                )
            }
        );
        let _ = writeln!(
            out,
            "| NetSapiens requests | {} | {} | {:.2} |",
            s.operator_requests,
            s.baseline_requests,
            s.operator_requests as f64 / s.baseline_requests.max(1) as f64
        );
        let _ = writeln!(
            out,
            "| distinct tokens the operator wrote | {} | | |",
            s.operator_tokens
        );
    }
    out
}

/// Draws the growth plot into target/fleet-growth.png.
fn write_growth_plot(costs: &[growth::Cost]) {
    let plot = measure::report_path().with_file_name("fleet-growth.png");
    std::fs::create_dir_all(plot.parent().unwrap()).unwrap();
    match growth::plot(costs, &plot) {
        Ok(()) => eprintln!("growth plot written to {}", plot.display()),
        Err(error) => eprintln!("the growth plot failed: {error}"),
    }
}

#[tokio::main]
async fn main() {
    nsapi_token_operator::nsapi::tls::install_crypto_provider();
    let o = options();
    let earlier: Vec<growth::Cost> = o
        .growth_from
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read --growth-from {path}: {e}"));
            growth::parse_table(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect();
    if o.growth_only {
        let costs = growth::costs(&[], earlier);
        let text = growth::table(&costs);
        write_growth_plot(&costs);
        println!("{text}");
        return;
    }
    let alone = o.eso == Some(true);
    let mut sizes = Vec::new();
    for &n in o.sizes.iter().filter(|_| !alone) {
        sizes.push(run_size(n, &o).await);
        eprintln!("{}", report(&sizes, None));
    }
    let soak = if o.soak && !alone {
        Some(soak(&o).await)
    } else {
        None
    };
    let mut text = if alone {
        String::new()
    } else {
        report(&sizes, soak.as_ref())
    };
    if o.eso != Some(false) {
        let peers = eso::side_by_side(&o, |done| eprintln!("{}", eso::report(done, &o))).await;
        text.push_str(&eso::report(&peers, &o));
        let costs = growth::costs(&peers, earlier);
        text.push_str(&growth::table(&costs));
        write_growth_plot(&costs);
    }
    println!("{text}");
    let path = measure::report_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &text).unwrap();
    eprintln!("report written to {}", path.display());
}
