//! The `nsapi-token-operator` binary: `run` starts the controller, `crd` prints the CRD.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::runtime::events::Reporter;
use tracing::{error, info, warn};

use nsapi_token_operator::cluster::context::Context;
use nsapi_token_operator::cluster::controller::{self, Scope};
use nsapi_token_operator::cluster::kube_client;
use nsapi_token_operator::cluster::leader::{LeaderElector, LeaseConfig};
use nsapi_token_operator::core::clock::SystemClock;
use nsapi_token_operator::core::policy::Policy;
use nsapi_token_operator::core::{build, crd, schedule};
use nsapi_token_operator::nsapi::ratelimit::Rate;
use nsapi_token_operator::nsapi::{NsApiClient, NsApiClientConfig};
use nsapi_token_operator::ops::admin::{self, AdminState};
use nsapi_token_operator::ops::cli;
use nsapi_token_operator::ops::metrics_auth::Authorizer;
use nsapi_token_operator::ops::secure_metrics::{self, MetricsAuth, SecureState, TlsListener};
use nsapi_token_operator::telemetry::logging::{self, LogFormat};
use nsapi_token_operator::telemetry::metrics::Metrics;

/// With `--features mimalloc`: mimalloc instead of the system allocator (an A/B of the fleet
/// benchmark's memory).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// After SIGTERM, running reconciles may finish: an in-flight token request gets its whole
/// `--api-timeout` plus this much to write the result, but never more than
/// [`MAX_SHUTDOWN_GRACE`] (Kubernetes sends SIGKILL 30 s after SIGTERM by default).
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How long releasing the Lease may take on the way out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Parser)]
#[command(
    version,
    long_version = build::describe(),
    about = "Keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret, always valid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster config, or KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the NsApiCredential CRD as YAML.
    Crd,
    /// Show credentials: Ready, reason, expiry, next refresh, last grant, consumers. Exits 1
    /// when any shown is not Ready.
    Status {
        /// One credential; without it, all in the namespace.
        name: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[command(flatten)]
        connection: cli::Connection,
    },
    /// Ask the operator for a new token now (sets the nsapi.io/renew-requested-at annotation).
    Renew {
        /// The credential; or --all.
        name: Option<String>,
        /// Every credential in the namespace (narrowed by -l).
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Label selector for --all.
        #[arg(short = 'l', long, requires = "all")]
        selector: Option<String>,
        #[command(flatten)]
        connection: cli::Connection,
    },
    /// Try a credential's inputs against the API (a password grant; nothing is written) and say
    /// what the operator would do now, under the operator's allow-list. The login may end the
    /// live token's session on portals that allow one per user: it asks first (--yes to skip).
    /// Exits 1 when the policy or the API refuses, 2 when not confirmed or on an error.
    Check {
        name: String,
        /// Log in without asking (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        access: cli::ApiAccess,
        #[command(flatten)]
        connection: cli::Connection,
    },
    /// Ask the API what it knows about the token in a credential's output Secret (sent only to
    /// the spec's API nodes, under the operator's allow-list, from a Secret the credential
    /// controls).
    Inspect {
        name: String,
        #[command(flatten)]
        access: cli::ApiAccess,
        #[command(flatten)]
        connection: cli::Connection,
    },
    /// Print this binary's version and commit and, when the cluster can be read, the installed
    /// operator's (its Deployment's version label and image).
    Version {
        /// Only this binary's version: do not contact the cluster.
        #[arg(long)]
        client: bool,
        /// The namespace of the installed operator (its Deployment has the label
        /// app.kubernetes.io/name=nsapi-token-operator).
        #[arg(long, value_name = "NAMESPACE", default_value = cli::DEFAULT_OPERATOR_NAMESPACE)]
        operator_namespace: String,
        #[command(flatten)]
        connection: cli::Connection,
    },
    /// Print a shell completion script: `source <(kubectl nscred completion bash)`, or save it
    /// where the shell loads completions from (see docs/operator.md).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// API hosts that credentials may send their secrets to (glob, `*` matches any run of
    /// characters; repeatable). Without any, every host is allowed.
    #[arg(
        long = "allowed-api-host",
        value_name = "GLOB",
        env = "NSAPI_ALLOWED_API_HOSTS",
        value_delimiter = ','
    )]
    allowed_api_hosts: Vec<String>,
    /// Allow http:// API base URLs (for tests and demos on loopback; never in production).
    #[arg(long, env = "NSAPI_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "NSAPI_LOG_FORMAT")]
    log_format: LogFormat,
    /// Address of the HTTP server for /healthz, /readyz and /metrics (only the probes when
    /// --metrics-addr is given).
    #[arg(long, default_value = "0.0.0.0:8080", env = "NSAPI_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Serve /metrics over HTTPS at this address instead of on --http-addr (needs
    /// --metrics-tls-cert-file and --metrics-tls-key-file).
    #[arg(
        long,
        env = "NSAPI_METRICS_ADDR",
        requires_all = ["metrics_tls_cert_file", "metrics_tls_key_file"]
    )]
    metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain of the HTTPS /metrics server (e.g. tls.crt of a mounted Secret).
    /// Read at start; a renewed certificate takes effect on restart.
    #[arg(long, value_name = "FILE", requires = "metrics_addr")]
    metrics_tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the HTTPS /metrics server (e.g. tls.key of a mounted Secret).
    #[arg(long, value_name = "FILE", requires = "metrics_addr")]
    metrics_tls_key_file: Option<std::path::PathBuf>,
    /// Who may read the HTTPS /metrics: `kubernetes` (a Bearer token that a TokenReview
    /// accepts, whose user may `get` the non-resource URL /metrics by a SubjectAccessReview;
    /// needs `create` on tokenreviews and subjectaccessreviews) or `none`.
    #[arg(
        long,
        value_enum,
        default_value = "kubernetes",
        env = "NSAPI_METRICS_AUTH"
    )]
    metrics_auth: MetricsAuth,
    /// Let other processes bind the same HTTP port (SO_REUSEPORT): for replicas that share a
    /// node's host network.
    #[arg(long)]
    http_reuse_port: bool,
    /// Watch only this namespace (repeatable). Without any, all namespaces are watched.
    #[arg(
        long = "namespace",
        value_name = "NAMESPACE",
        env = "NSAPI_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Act only on NsApiCredentials whose labels match this selector (e.g. `shard=a`).
    #[arg(long, env = "NSAPI_LABEL_SELECTOR")]
    label_selector: Option<String>,
    /// Elect a leader on a coordination.k8s.io Lease, so several replicas can run and only one
    /// acts at a time.
    #[arg(long, env = "NSAPI_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nsapi-system")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "nsapi-token-operator")]
    leader_election_lease: String,
    /// How long a Lease not renewed stays its holder's (a standby waits this long after a
    /// leader stopped without releasing it).
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives the Lease up and exits
    /// (shorter than the lease duration).
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    leader_election_renew_deadline: Duration,
    /// How often the leader renews and a standby looks at the Lease (shorter than the renew
    /// deadline).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    leader_election_retry_period: Duration,
    /// Timeout of each request to the NetSapiens API (Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    api_timeout: Duration,
    /// Timeout of each Kubernetes API request other than a watch (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    kube_api_timeout: Duration,
    /// NetSapiens requests per second allowed to each API host (0: no limit). Waiting requests
    /// are served earliest token expiry first.
    #[arg(long, default_value = "10", env = "NSAPI_API_RATE_LIMIT")]
    api_rate_limit: f64,
    /// Requests allowed at once to each API host before the rate applies.
    #[arg(long, default_value = "20", env = "NSAPI_API_BURST")]
    api_burst: u32,
    /// PEM CA certificates to trust, beside the system's, for every NetSapiens API host (e.g. a
    /// private CA; a credential can add its own with spec.caBundle).
    #[arg(long, value_name = "FILE", env = "NSAPI_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// After each new token, list the pods of the credential's namespace and name those that read
    /// it through env vars or subPath mounts (condition ConsumersCannotRefresh). Needs `list` on
    /// pods (the chart's consumerCheck.enabled sets both).
    #[arg(long, env = "NSAPI_CONSUMER_CHECK")]
    consumer_check: bool,
    /// Record an Event for each routine new token (TokenIssued, TokenRefreshed). `false` saves
    /// one API write per rotation; the Ready condition still says when and how each token was
    /// obtained, and failures, fallbacks and everything else are still recorded.
    #[arg(long, env = "NSAPI_ROUTINE_EVENTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    routine_events: bool,
    /// How many credentials are reconciled at the same time.
    #[arg(long, default_value = "64", value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
}

/// A Go duration of at least a millisecond.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = schedule::parse_duration(s)?;
    let d = Duration::try_from(d).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?} is too short: use at least 1ms"));
    }
    Ok(d)
}

/// The namespaces to watch, each once, in the order given (`--namespace a,a` would start two
/// controllers for one namespace, and every token would be rotated twice).
fn distinct(namespaces: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ns in namespaces {
        let ns = ns.trim().to_owned();
        if !ns.is_empty() && !out.contains(&ns) {
            out.push(ns);
        }
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Status {
            name,
            all_namespaces,
            connection,
        } => report(cli::status(&connection, name.as_deref(), all_namespaces).await),
        Command::Renew {
            name,
            all,
            selector,
            connection,
        } => report(cli::renew(&connection, name.as_deref(), all, selector.as_deref()).await),
        Command::Check {
            name,
            yes,
            access,
            connection,
        } => report(cli::check(&connection, &name, &access, yes).await),
        Command::Inspect {
            name,
            access,
            connection,
        } => report(cli::inspect(&connection, &name, &access).await),
        Command::Version {
            client,
            operator_namespace,
            connection,
        } => report(cli::version(&connection, client, &operator_namespace).await),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                cli::program_name(),
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            logging::init(args.log_format);
            match run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The certificates of `--ca-file`; a bad file stops the operator at start.
fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    let certs = nsapi_token_operator::nsapi::tls::parse_pem_bundle(&text)
        .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    info!(file = %path.display(), certificates = certs.len(), "trusting the CA certificates of --ca-file");
    Ok(certs)
}

/// A CLI command's outcome: its exit code, or its error on stderr and exit code 2.
fn report(result: Result<ExitCode, Box<dyn std::error::Error>>) -> ExitCode {
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    // The HTTPS /metrics: its certificate is read (and a bad one stops the operator) before
    // anything listens.
    let secure = match (
        args.metrics_addr,
        &args.metrics_tls_cert_file,
        &args.metrics_tls_key_file,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            Some((addr, secure_metrics::server_config(cert, key)?))
        }
        _ => None,
    };
    let listener = admin::bind(args.http_addr, args.http_reuse_port)?;
    if secure.is_some() {
        info!(addr = %listener.local_addr()?, "serving /healthz and /readyz");
    } else {
        info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    }
    let admin_state = AdminState {
        ready: ready.clone(),
        metrics: metrics.clone(),
        serve_metrics: secure.is_none(),
    };
    // The HTTP servers outlive the signal: while running passes finish, /readyz answers 503
    // (readiness goes at the signal) and /metrics can still be scraped. They stop once the
    // work has ended.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let finished = move || {
        let mut rx = done_rx.clone();
        async move {
            let _ = rx.wait_for(|done| *done).await;
        }
    };
    let admin = tokio::spawn(admin::serve(listener, admin_state, finished()));
    tokio::spawn({
        let (ready, signalled) = (ready.clone(), stopped());
        async move {
            signalled.await;
            ready.store(false, Ordering::Relaxed);
        }
    });

    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            wait_for_signal().await;
            info!("shutting down");
            let _ = stop_tx.send(true);
        }
    });

    nsapi_token_operator::nsapi::tls::install_crypto_provider();
    let client = kube_client::infer(args.kube_api_timeout).await?;
    let secure_server = match secure {
        None => None,
        Some((addr, tls)) => {
            let tcp = admin::bind(addr, args.http_reuse_port)?;
            let authorizer = match args.metrics_auth {
                MetricsAuth::Kubernetes => Some(Arc::new(Authorizer::new(client.clone()))),
                MetricsAuth::None => None,
            };
            info!(
                addr = %tcp.local_addr()?,
                auth = ?args.metrics_auth,
                "serving /metrics over HTTPS"
            );
            let state = SecureState {
                metrics: metrics.clone(),
                authorizer,
            };
            let listener = TlsListener::new(tcp, tls)?;
            Some(tokio::spawn(secure_metrics::serve(
                listener,
                state,
                finished(),
            )))
        }
    };
    let scope = Scope {
        namespaces: distinct(args.namespaces),
        label_selector: args.label_selector,
    };
    controller::ensure_crd_served(&client, &scope).await?;

    let clock = Arc::new(SystemClock);
    let extra_roots = match &args.ca_file {
        None => Vec::new(),
        Some(path) => read_ca_file(path)?,
    };
    let nsapi = NsApiClient::new(
        NsApiClientConfig {
            timeout: args.api_timeout,
            extra_roots,
            ..NsApiClientConfig::default()
        },
        clock.clone(),
    )?;
    let policy = Policy {
        allowed_api_hosts: args.allowed_api_hosts,
        allow_insecure_http: args.allow_insecure_http,
    };
    if policy.allowed_api_hosts.is_empty() {
        info!("no --allowed-api-host given: credentials may call any API host");
    }
    let pod_name = std::env::var("POD_NAME").ok();
    let reporter = Reporter {
        controller: "nsapi-token-operator".into(),
        instance: pod_name.clone(),
    };
    // As client-go requires: the leader gives up before another may take over, and retries
    // several times within its deadline.
    if args.leader_election
        && !(args.leader_election_lease_duration > args.leader_election_renew_deadline
            && args.leader_election_renew_deadline > args.leader_election_retry_period.mul_f64(1.2))
    {
        return Err(format!(
            "leader election needs --leader-election-lease-duration ({:?}) > --leader-election-renew-deadline ({:?}) > 1.2 x --leader-election-retry-period ({:?})",
            args.leader_election_lease_duration,
            args.leader_election_renew_deadline,
            args.leader_election_retry_period
        )
        .into());
    }
    let elector = args.leader_election.then(|| {
        let host = pod_name
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "nsapi-token-operator".into());
        let identity = format!("{host}-{:08x}", rand::random::<u32>());
        let config = LeaseConfig {
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
            ..LeaseConfig::new(
                args.leader_election_namespace,
                args.leader_election_lease,
                identity,
            )
        };
        LeaderElector::new(client.clone(), config, clock.clone())
    });
    let rate = (args.api_rate_limit > 0.0).then_some(Rate {
        per_second: args.api_rate_limit,
        burst: args.api_burst.max(1),
    });
    let mut ctx = Context::new(client, nsapi, clock, policy, reporter, metrics, rate);
    ctx.consumer_check = args.consumer_check;
    ctx.routine_events = args.routine_events;
    ctx.panic_on = std::env::var("NSAPI_TEST_PANIC_CREDENTIAL").ok();
    ctx.lose_triggers = std::env::var("NSAPI_TEST_LOSE_TRIGGERS").ok();
    if let Some(ms) = std::env::var("NSAPI_TEST_SWEEP_EVERY_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
    {
        ctx.sweep_every = Duration::from_millis(ms);
    }
    let ctx = Arc::new(ctx);
    // A standby replica is healthy and ready too: it serves and takes over when the leader goes.
    // (Not once the signal came: readiness went with it.)
    if !*stop_tx.subscribe().borrow() {
        ready.store(true, Ordering::Relaxed);
    }
    let concurrency = args.concurrency;
    let work = async {
        match &elector {
            None => {
                controller::run(ctx, scope, concurrency, stopped()).await;
                Ok(())
            }
            Some(elector) => lead(elector, ctx, scope, concurrency, &stopped).await,
        }
    };
    // Graceful shutdown lets running reconciles finish, but a controller whose watch keeps
    // failing (e.g. RBAC denies it) may never wind down: after SIGTERM, wait a bounded time.
    let grace = (args.api_timeout + SHUTDOWN_MARGIN).min(MAX_SHUTDOWN_GRACE);
    let deadline = async {
        stopped().await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = work => result,
        _ = deadline => {
            warn!(?grace, "the controller did not stop in time; exiting anyway");
            Ok(())
        }
    };
    // Hand the Lease over at once when the work ended by shutdown, even past the grace period
    // (a standby need not wait for it to expire). A lost Lease is not ours to release.
    if let (Some(elector), Ok(())) = (&elector, &result) {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await;
    }
    ready.store(false, Ordering::Relaxed);
    // The work may have ended by itself (a lost Lease): stop the HTTP servers too.
    let _ = stop_tx.send(true);
    let _ = done_tx.send(true);
    admin.await??;
    if let Some(secure_server) = secure_server {
        secure_server.await??;
    }
    result
}

/// Waits for the Lease and runs the controller while holding it. Losing the Lease ends the
/// process with an error, so that a restart rejoins the election (as client-go's leader
/// election does); the caller releases the Lease on the way out.
async fn lead<F, Fut>(
    elector: &LeaderElector,
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    stopped: &F,
) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    tokio::select! {
        _ = elector.acquire() => {}
        _ = stopped() => return Ok(()),
    }
    let lost = tokio::select! {
        _ = controller::run(ctx, scope, concurrency, stopped()) => false,
        _ = elector.hold() => true,
    };
    if lost {
        return Err("lost the leader-election lease; exiting to rejoin the election".into());
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_namespace_is_watched_once() {
        let given = ["b", "a", "b", " a ", ""].map(String::from).to_vec();
        assert_eq!(distinct(given), ["b", "a"]);
    }

    #[test]
    fn https_metrics_need_an_address_a_certificate_and_a_key() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["nsapi-token-operator", "run"];
            args.extend(extra);
            Cli::try_parse_from(args).map(|_| ())
        };
        let (addr, cert, key) = (
            "--metrics-addr=0.0.0.0:8443",
            "--metrics-tls-cert-file=/tls/tls.crt",
            "--metrics-tls-key-file=/tls/tls.key",
        );
        assert!(parse(&[]).is_ok());
        assert!(parse(&[addr, cert, key]).is_ok());
        assert!(parse(&[addr, cert, key, "--metrics-auth=none"]).is_ok());
        assert!(parse(&[addr]).is_err());
        assert!(parse(&[addr, cert]).is_err());
        assert!(parse(&[cert, key]).is_err());
        assert!(parse(&[addr, cert, key, "--metrics-auth=basic"]).is_err());
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
