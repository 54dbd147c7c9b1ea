//! Prometheus metrics. Labels carry only names, grants and low-cardinality error labels:
//! never a secret, never a URL.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::api_error::NsApiError;
use crate::core::conditions::{
    CONSUMERS_CANNOT_REFRESH, DEGRADED, READY, ROLLOUT_RESTART, SETTINGS_IGNORED,
};
use crate::core::crd::{NsApiCredential, NsApiCredentialStatus};
use crate::core::token::Grant;

/// Every value of the `error` label of `reconcile_errors`: what `cluster::Error::metric_label`
/// returns (a test there keeps the two equal), and `internal` for a pass that panicked.
pub const RECONCILE_ERROR_LABELS: [&str; 6] = [
    "crd_not_installed",
    "internal",
    "kube_api",
    "kube_client",
    "missing_field",
    "template",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    git_commit: String,
    rustc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostRequestLabels {
    host: String,
    grant: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    grant: String,
}

/// Distinct API hosts that get series of their own; requests to further hosts are counted
/// under `host="other"`, so tenants naming many hosts cannot grow the exposition without bound.
pub const MAX_HOSTS: usize = 32;

/// The condition types exported, and their possible statuses.
const CONDITIONS: [&str; 5] = [
    READY,
    DEGRADED,
    ROLLOUT_RESTART,
    CONSUMERS_CANNOT_REFRESH,
    SETTINGS_IGNORED,
];

/// The status of a condition, as `credential_condition` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    fn of(status: &str) -> Option<Self> {
        match status {
            "True" => Some(Self::True),
            "False" => Some(Self::False),
            "Unknown" => Some(Self::Unknown),
            _ => None,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    grant: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    grant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabels {
    found: String,
}

/// What the sweep (`cluster::sweep`) can find: a credential in a watch's store that never
/// reached the work queue, or one due for a while that no free worker took.
pub const SWEEP_FOUND_LABELS: [&str; 2] = ["never_triggered", "stalled"];

pub struct Metrics {
    registry: Registry,
    /// The series of each credential (expiry, rotation lead, next request, readiness,
    /// conditions, failures), kept compact and written out at a scrape.
    credentials: Arc<CredentialBook>,
    token_requests: Family<RequestLabels, Counter>,
    request_seconds: Family<GrantLabels, Histogram>,
    host_requests: Family<HostRequestLabels, Counter>,
    host_seconds: Family<HostLabels, Histogram>,
    hosts: std::sync::Mutex<std::collections::BTreeSet<String>>,
    reconcile_seconds: Histogram,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    rate_limit_wait: Histogram,
    sweep_found: Family<SweepLabels, Counter>,
    /// Passes due and waiting for a worker, and passes running (set from `queue` at a scrape).
    queue_depth: Gauge,
    in_flight: Gauge,
    pub queue: crate::telemetry::queue::WorkQueue,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let token_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token requests sent to the NetSapiens API, by grant and result",
            token_requests.clone(),
        );
        let request_seconds = Family::<GrantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "token_request_duration_seconds",
            "Latency of token requests to the NetSapiens API",
            request_seconds.clone(),
        );
        let host_requests = Family::<HostRequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            format!("Token requests by API node (host or host:port; {MAX_HOSTS} hosts at most, then \"other\"), grant and result: failover between nodes shows here"),
            host_requests.clone(),
        );
        let host_seconds = Family::<HostLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "api_request_duration_seconds",
            "Latency of token requests by API node and grant",
            host_seconds.clone(),
        );
        let reconcile_seconds =
            Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0]);
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile pass takes, NetSapiens requests and Kubernetes writes included",
            reconcile_seconds.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let reconcile_errors = zeroed_counters(
            &mut registry,
            "reconcile_errors",
            "Reconcile passes that failed on the Kubernetes API, by error",
            RECONCILE_ERROR_LABELS.map(|error| ErrorLabels {
                error: error.to_owned(),
            }),
        );
        let rate_limit_wait = Histogram::new([0.0, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]);
        registry.register(
            "rate_limit_wait_seconds",
            "Time NetSapiens requests waited for the per-host rate limit",
            rate_limit_wait.clone(),
        );
        let sweep_found = zeroed_counters(
            &mut registry,
            "sweep_retriggered",
            "Credentials the sweep found without the pass they were owed, and started: never_triggered (listed by the watch, never queued), stalled (due for a minute or more while workers were free). Anything but 0 is a bug worth reporting",
            SWEEP_FOUND_LABELS.map(|found| SweepLabels {
                found: found.to_owned(),
            }),
        );
        let credentials = Arc::new(CredentialBook::default());
        let queue_depth = Gauge::default();
        registry.register(
            "work_queue_depth",
            "Credentials whose pass is due (a change, a planned rotation, a retry) and waits for a free worker (--concurrency); lasting values mean the operator falls behind",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconcile passes running now",
            in_flight.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::core::build::VERSION.to_owned(),
                git_commit: crate::core::build::GIT_COMMIT.to_owned(),
                rustc: crate::core::build::RUSTC.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The operator's version, the commit and the compiler it was built from; always 1",
            build,
        );
        Self {
            registry,
            credentials,
            rate_limit_wait,
            sweep_found,
            token_requests,
            request_seconds,
            host_requests,
            host_seconds,
            hosts: std::sync::Mutex::default(),
            reconcile_seconds,
            reconciles,
            reconcile_errors,
            queue_depth,
            in_flight,
            queue: crate::telemetry::queue::WorkQueue::default(),
        }
    }
}

/// A counter family, registered with a series at 0 for each of `labels` from the start, so
/// that rates and alerts see the first increment.
fn zeroed_counters<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: impl IntoIterator<Item = L>,
) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for label in labels {
        let _ = family.get_or_create(&label);
    }
    registry.register(name, help, family.clone());
    family
}

impl Metrics {
    pub fn reconcile(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_error(&self, label: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    /// The sweep started `count` credentials it found `found` (one of `SWEEP_FOUND_LABELS`).
    pub fn sweep_retriggered(&self, found: &str, count: usize) {
        self.sweep_found
            .get_or_create(&SweepLabels {
                found: found.to_owned(),
            })
            .inc_by(count as u64);
    }

    pub fn rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_wait.observe(waited.as_secs_f64());
    }

    /// A reconcile pass took `took`.
    pub fn reconcile_duration(&self, took: Duration) {
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    /// `host` if it has, or can still get, series of its own; otherwise `other`.
    fn host_label(&self, host: &str) -> String {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if hosts.contains(host) {
            return host.to_owned();
        }
        if hosts.len() < MAX_HOSTS {
            hosts.insert(host.to_owned());
            return host.to_owned();
        }
        "other".to_owned()
    }

    /// A token request to the API node `host` (host or host:port, never a URL).
    pub fn token_request(
        &self,
        grant: Grant,
        host: &str,
        error: Option<&NsApiError>,
        took: Duration,
    ) {
        let result = error.map_or("ok", |e| e.metric_label());
        let host = self.host_label(host);
        self.host_requests
            .get_or_create(&HostRequestLabels {
                host: host.clone(),
                grant: grant.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.host_seconds
            .get_or_create(&HostLabels {
                host,
                grant: grant.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
        self.token_requests
            .get_or_create(&RequestLabels {
                grant: grant.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&GrantLabels {
                grant: grant.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records (or clears, with `None`) a credential's expiry, rotation lead and next planned
    /// request.
    pub fn token_times(
        &self,
        credential: &NsApiCredential,
        expires_at: Option<Timestamp>,
        lead: Option<SignedDuration>,
        next_refresh_at: Option<Timestamp>,
    ) {
        self.credentials.update(credential, |series| {
            series.expiry = expires_at.map(Timestamp::as_second);
            series.lead = lead.map(|l| l.as_secs());
            series.next_refresh = next_refresh_at.map(Timestamp::as_second);
        });
    }

    /// Records a credential's conditions and failure count, as its status says.
    pub fn credential_status(&self, credential: &NsApiCredential, status: &NsApiCredentialStatus) {
        self.credentials.update(credential, |series| {
            series.ready = Some(status.condition(READY).is_some_and(|c| c.status == "True"));
            series.failures = Some(status.consecutive_failures);
            for (slot, type_) in series.conditions.iter_mut().zip(CONDITIONS) {
                *slot = status.condition(type_).and_then(|c| Status::of(&c.status));
            }
        });
    }

    /// Drops the series of a deleted credential.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.credentials.write().remove(&*key(namespace, name));
    }

    /// The Prometheus text exposition, whole.
    pub fn encode(&self) -> String {
        self.exposition().collect()
    }

    /// The Prometheus text exposition, in pieces (see `Exposition`).
    pub fn exposition(&self) -> Exposition {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let (waiting, running) = self.queue.depth(std::time::Instant::now());
        self.queue_depth
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.in_flight
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        let mut head = String::new();
        encode_registry(&mut head, &self.registry).expect("writing to a String cannot fail");
        let mut tail = String::new();
        encode_registry(&mut tail, &process_registry()).expect("writing to a String cannot fail");
        encode_eof(&mut tail).expect("writing to a String cannot fail");
        Exposition {
            head: Some(head),
            snapshot: self.credentials.snapshot(),
            family: 0,
            at: 0,
            tail: Some(tail),
        }
    }
}

/// What the series of one credential hold (`None`: no series).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CredentialSeries {
    expiry: Option<i64>,
    lead: Option<i64>,
    next_refresh: Option<i64>,
    ready: Option<bool>,
    failures: Option<i32>,
    /// The status of each of `CONDITIONS`.
    conditions: [Option<Status>; CONDITIONS.len()],
}

type Book = BTreeMap<Arc<str>, CredentialSeries>;

/// The series of every credential, by `namespace/name` (neither may hold a `/`), in order.
///
/// One small entry per credential (about 100 bytes) rather than a `Family` per series, whose
/// entries each hold their own copy of the label strings and a shared gauge: at 10,000
/// credentials the families held about 1.5 KiB per credential.
#[derive(Debug, Default)]
struct CredentialBook(std::sync::RwLock<Book>);

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl CredentialBook {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Book> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the series of `credential`; a credential left without any is dropped.
    fn update(&self, credential: &NsApiCredential, change: impl FnOnce(&mut CredentialSeries)) {
        let key = key(
            credential.metadata.namespace.as_deref().unwrap_or_default(),
            credential.metadata.name.as_deref().unwrap_or_default(),
        );
        let mut book = self.write();
        match book.get_mut(key.as_str()) {
            Some(series) => {
                change(series);
                if *series == CredentialSeries::default() {
                    book.remove(key.as_str());
                }
            }
            None => {
                let mut series = CredentialSeries::default();
                change(&mut series);
                if series != CredentialSeries::default() {
                    book.insert(Arc::from(key), series);
                }
            }
        }
    }

    /// A copy to write out without holding the lock (the keys are shared, not copied).
    fn snapshot(&self) -> Vec<(Arc<str>, CredentialSeries)> {
        self.read()
            .iter()
            .map(|(key, series)| (Arc::clone(key), *series))
            .collect()
    }
}

/// A family of per-credential series.
#[derive(Clone, Copy)]
enum CredentialFamily {
    /// One gauge per credential: its name, help and value (`None`: no series).
    Gauge(
        &'static str,
        &'static str,
        fn(&CredentialSeries) -> Option<i64>,
    ),
    /// `credential_condition`: a series for each condition a credential has.
    Conditions,
}

/// In the order of the exposition.
const CREDENTIAL_FAMILIES: [CredentialFamily; 6] = [
    CredentialFamily::Gauge(
        "token_expiry_timestamp_seconds",
        "Unix time at which the current token of a credential expires",
        |s| s.expiry,
    ),
    CredentialFamily::Gauge(
        "token_refresh_lead_seconds",
        "How long before its expiry a credential's token is due for rotation (spec.refreshBefore as applied); a token closer to expiry than this missed its rotation",
        |s| s.lead,
    ),
    CredentialFamily::Gauge(
        "next_refresh_timestamp_seconds",
        "Unix time of the next planned token request of a credential",
        |s| s.next_refresh,
    ),
    CredentialFamily::Gauge(
        "credential_ready",
        "1 while the credential's output Secret holds a valid token (condition Ready=True), else 0",
        |s| s.ready.map(i64::from),
    ),
    CredentialFamily::Conditions,
    CredentialFamily::Gauge(
        "credential_consecutive_failures",
        "Failed token requests of a credential since its last success",
        |s| s.failures.map(i64::from),
    ),
];

const PREFIX: &str = "nsapi_token_operator";

impl CredentialFamily {
    fn has(self, series: &CredentialSeries) -> bool {
        match self {
            Self::Gauge(_, _, value) => value(series).is_some(),
            Self::Conditions => series.conditions.iter().any(Option::is_some),
        }
    }

    /// The `# HELP` and `# TYPE` lines.
    fn descriptor(self, out: &mut String) {
        let (name, help) = match self {
            Self::Gauge(name, help, _) => (name, help),
            Self::Conditions => (
                "credential_condition",
                "1, with the status a credential's condition has (True, False or Unknown) as a label; one series per condition",
            ),
        };
        let _ = write!(
            out,
            "# HELP {PREFIX}_{name} {help}.\n# TYPE {PREFIX}_{name} gauge\n"
        );
    }

    /// The lines of one credential. Namespaces and names are DNS names: nothing to escape.
    fn lines(self, out: &mut String, key: &str, series: &CredentialSeries) {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        match self {
            Self::Gauge(family, _, value) => {
                if let Some(v) = value(series) {
                    let _ = writeln!(
                        out,
                        "{PREFIX}_{family}{{namespace=\"{namespace}\",name=\"{name}\"}} {v}"
                    );
                }
            }
            Self::Conditions => {
                for (status, condition) in series.conditions.iter().zip(CONDITIONS) {
                    if let Some(status) = status {
                        let _ = writeln!(
                            out,
                            "{PREFIX}_credential_condition{{namespace=\"{namespace}\",name=\"{name}\",condition=\"{condition}\",status=\"{}\"}} 1",
                            status.as_str()
                        );
                    }
                }
            }
        }
    }
}

/// About how much text each piece of the exposition holds.
const PIECE: usize = 64 * 1024;

/// The exposition, written out piece by piece as it is sent: the registry's series, then the
/// credentials' (from a snapshot, so no lock is held while a scraper reads), then the process
/// series and the end. At 10,000 credentials the whole text is about 7 MB; a scrape holds the
/// snapshot (about 1 MB) and a piece or two rather than all of it.
pub struct Exposition {
    head: Option<String>,
    snapshot: Vec<(Arc<str>, CredentialSeries)>,
    family: usize,
    at: usize,
    tail: Option<String>,
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        while let Some(&family) = CREDENTIAL_FAMILIES.get(self.family) {
            let mut out = String::with_capacity(PIECE + 1024);
            if self.at == 0 {
                if !self.snapshot.iter().any(|(_, s)| family.has(s)) {
                    self.family += 1;
                    continue;
                }
                family.descriptor(&mut out);
            }
            while let Some((key, series)) = self.snapshot.get(self.at) {
                if out.len() >= PIECE {
                    break;
                }
                family.lines(&mut out, key, series);
                self.at += 1;
            }
            if self.at >= self.snapshot.len() {
                self.family += 1;
                self.at = 0;
            }
            return Some(out);
        }
        self.tail.take()
    }
}

/// The standard `process_*` series (unprefixed, as every Prometheus client names them), read
/// from `/proc/self` at each scrape; none on a system without it.
fn process_registry() -> Registry {
    let mut registry = Registry::default();
    let Some(process) = ProcessStats::read() else {
        return registry;
    };
    let gauge = |value: f64| {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(value);
        g
    };
    registry.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        gauge(process.resident_bytes as f64),
    );
    registry.register(
        "process_open_fds",
        "Number of open file descriptors",
        gauge(process.open_fds as f64),
    );
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        gauge(process.start_time_seconds),
    );
    let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    cpu.inc_by(process.cpu_seconds);
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent, in seconds",
        cpu,
    );
    registry
}

/// What `/proc/self` says about this process.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ProcessStats {
    resident_bytes: u64,
    open_fds: u64,
    cpu_seconds: f64,
    start_time_seconds: f64,
}

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ: 100 on every Linux the operator is
/// built for, amd64 and arm64).
const TICKS_PER_SECOND: f64 = 100.0;

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Self::parse(&stat, &status, &uptime, open_fds, now)
    }

    /// From the text of `/proc/self/stat`, `/proc/self/status` and `/proc/uptime`.
    fn parse(stat: &str, status: &str, uptime: &str, open_fds: u64, now: f64) -> Option<Self> {
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // Fields 14 (utime), 15 (stime) and 22 (starttime) of proc(5); `fields[0]` is field 3.
        let ticks = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let cpu_seconds = (ticks(14)? + ticks(15)?) / TICKS_PER_SECOND;
        let since_boot = uptime.split_whitespace().next()?.parse::<f64>().ok()?;
        let start_time_seconds = now - since_boot + ticks(22)? / TICKS_PER_SECOND;
        let resident_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()?;
        Some(ProcessStats {
            resident_bytes: resident_kib * 1024,
            open_fds,
            cpu_seconds,
            start_time_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::default();
        m.reconcile();
        m.token_request(
            Grant::Password,
            "api.example.com:8443",
            None,
            Duration::from_millis(20),
        );
        let text = m.encode();
        assert!(
            text.contains("nsapi_token_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nsapi_token_operator_token_requests_total{grant="password",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("nsapi_token_operator_token_request_duration_seconds_bucket"));
        assert!(
            text.contains(&format!(
                "nsapi_token_operator_build_info{{version=\"{}\",git_commit=\"{}\",rustc=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                crate::core::build::GIT_COMMIT,
                crate::core::build::RUSTC,
            )),
            "{text}"
        );
        assert!(crate::core::build::RUSTC.starts_with("rustc "));
        assert!(
            text.contains(
                r#"nsapi_token_operator_api_requests_total{host="api.example.com:8443",grant="password",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"nsapi_token_operator_api_request_duration_seconds_count{host="api.example.com:8443",grant="password"} 1"#
        ));
        m.reconcile_duration(Duration::from_millis(30));
        assert!(
            m.encode()
                .contains("nsapi_token_operator_reconcile_duration_seconds_count 1")
        );
    }

    #[test]
    fn process_series_come_from_proc() {
        let stat = "4242 (nsapi token (x)) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 8 0 12000 123456789 6000 18446744073709551615";
        let status = "Name:\tnsapi\nVmPeak:\t  90000 kB\nVmRSS:\t   26900 kB\nThreads:\t8\n";
        let stats =
            ProcessStats::parse(stat, status, "1000.50 1900.00\n", 17, 2_000_000_000.0).unwrap();
        assert_eq!(stats.resident_bytes, 26900 * 1024);
        assert_eq!(stats.open_fds, 17);
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.start_time_seconds, 2_000_000_000.0 - 1000.5 + 120.0);
        if std::path::Path::new("/proc/self/stat").exists() {
            let text = Metrics::default().encode();
            for name in [
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_cpu_seconds_total ",
                "process_start_time_seconds ",
            ] {
                assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
            }
            assert_eq!(text.matches("# EOF").count(), 1);
            assert!(text.ends_with("# EOF\n"));
        }
    }

    #[test]
    fn hosts_beyond_the_bound_share_one_series() {
        let m = Metrics::default();
        for i in 0..MAX_HOSTS + 10 {
            m.token_request(
                Grant::Password,
                &format!("node{i}.example.com"),
                None,
                Duration::from_millis(1),
            );
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("nsapi_token_operator_api_requests_total{"))
            .count();
        assert_eq!(series, MAX_HOSTS + 1, "{text}");
        assert!(text.contains(
            r#"nsapi_token_operator_api_requests_total{host="other",grant="password",result="ok"} 10"#
        ));
    }

    #[test]
    fn conditions_become_series_and_leave_with_the_credential() {
        let m = Metrics::default();
        let mut credential: NsApiCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": "abc", "namespace": "ns"},
            "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                     "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
        }))
        .unwrap();
        let status: NsApiCredentialStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "SecretMissing", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
            "consecutiveFailures": 3,
        }))
        .unwrap();
        credential.status = Some(status.clone());
        m.credential_status(&credential, &status);
        let text = m.encode();
        for line in [
            r#"nsapi_token_operator_credential_ready{namespace="ns",name="abc"} 0"#,
            r#"nsapi_token_operator_credential_condition{namespace="ns",name="abc",condition="Ready",status="False"} 1"#,
            r#"nsapi_token_operator_credential_consecutive_failures{namespace="ns",name="abc"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // Only the status a condition has is a series; when it changes, the old one leaves.
        assert!(
            !text.contains(r#"condition="Ready",status="True""#),
            "{text}"
        );
        let ready: NsApiCredentialStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "",
                 "lastTransitionTime": "2026-01-01T00:01:00Z"}
            ],
        }))
        .unwrap();
        m.credential_status(&credential, &ready);
        let text = m.encode();
        assert!(
            text.contains(r#"condition="Ready",status="True"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"condition="Ready",status="False""#),
            "{text}"
        );
        m.forget("ns", "abc");
        assert!(!m.encode().contains("name=\"abc\""));
    }

    #[test]
    fn a_fleet_exposition_comes_in_whole_lines_of_bounded_pieces() {
        let m = Metrics::default();
        let status: NsApiCredentialStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
        }))
        .unwrap();
        let fleet = 3000;
        for i in 0..fleet {
            let credential: NsApiCredential = serde_json::from_value(serde_json::json!({
                "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
                "metadata": {"name": format!("credential-{i:05}"), "namespace": "tenant-a"},
                "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                         "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
            }))
            .unwrap();
            let at = Timestamp::from_second(2_000_000_000 + i).unwrap();
            m.token_times(
                &credential,
                Some(at),
                Some(SignedDuration::from_secs(600)),
                Some(at),
            );
            m.credential_status(&credential, &status);
        }
        let pieces: Vec<String> = m.exposition().collect();
        assert!(pieces.len() > 8, "{} pieces", pieces.len());
        for piece in &pieces {
            assert!(piece.len() <= PIECE + 1024, "{}", piece.len());
            assert!(piece.is_empty() || piece.ends_with('\n'));
        }
        let text = pieces.concat();
        // The same as the whole exposition, but for the process's own series.
        let own = |text: &str| {
            text.lines()
                .filter(|l| !l.contains("process_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert!(own(&text) == own(&m.encode()));
        assert!(text.contains("# HELP nsapi_token_operator_credential_ready 1 while the credential's output Secret holds a valid token (condition Ready=True), else 0.\n"));
        for family in [
            "token_expiry_timestamp_seconds",
            "token_refresh_lead_seconds",
            "next_refresh_timestamp_seconds",
            "credential_ready",
            "credential_condition",
            "credential_consecutive_failures",
        ] {
            let name = format!("nsapi_token_operator_{family}{{");
            assert_eq!(
                text.lines().filter(|l| l.starts_with(&name)).count(),
                3000,
                "{family}"
            );
            assert_eq!(
                text.matches(&format!("# TYPE nsapi_token_operator_{family} gauge"))
                    .count(),
                1
            );
        }
        assert!(text.contains(r#"nsapi_token_operator_credential_condition{namespace="tenant-a",name="credential-02999",condition="Ready",status="True"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn token_times_are_gauges_per_credential_until_cleared() {
        let m = Metrics::default();
        let credential = |name: &str| -> NsApiCredential {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                         "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
            }))
            .unwrap()
        };
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        m.token_times(
            &credential("b"),
            Some(at(2_000_003_600)),
            Some(SignedDuration::from_secs(600)),
            Some(at(2_000_003_000)),
        );
        m.token_times(&credential("a"), Some(at(2_000_000_100)), None, None);
        let text = m.encode();
        for line in [
            "# TYPE nsapi_token_operator_token_expiry_timestamp_seconds gauge",
            r#"nsapi_token_operator_token_expiry_timestamp_seconds{namespace="ns",name="a"} 2000000100"#,
            r#"nsapi_token_operator_token_expiry_timestamp_seconds{namespace="ns",name="b"} 2000003600"#,
            r#"nsapi_token_operator_token_refresh_lead_seconds{namespace="ns",name="b"} 600"#,
            r#"nsapi_token_operator_next_refresh_timestamp_seconds{namespace="ns",name="b"} 2000003000"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // In order of namespace and name.
        assert!(text.find(r#"name="a"} 2000000100"#) < text.find(r#"name="b"} 2000003600"#));
        assert!(
            !text.contains(r#"lead_seconds{namespace="ns",name="a"}"#),
            "{text}"
        );
        // Cleared: no series, and with none left, no family either.
        m.token_times(&credential("a"), None, None, None);
        m.token_times(&credential("b"), None, None, None);
        let text = m.encode();
        assert!(!text.contains("token_expiry_timestamp_seconds"), "{text}");
        assert!(m.credentials.read().is_empty());
    }
}
