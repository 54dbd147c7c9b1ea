//! The command line for people, as subcommands of the binary and as a kubectl plugin (the same
//! binary named `kubectl-nscred`, so `kubectl nscred status` works): what credentials are doing
//! (`status`), asking for a new token (`renew`), trying a credential's inputs against the API
//! without writing anything (`check`), and asking the API about the token in place
//! (`inspect`), and which versions run (`version`). Kubeconfig handling follows kubectl: `KUBECONFIG`, `--kubeconfig`,
//! `--context`, `--cluster`, `--user`, `--server`, `--token`, `--as`, `--as-group`,
//! `--request-timeout`, `-n`, `-A`, and the kubeconfig's `proxy-url` or `HTTPS_PROXY`. Nothing here ever prints a secret.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::cluster::reconciler::load_inputs;
use crate::core::base_url::ApiBaseUrl;
use crate::core::clock::rfc3339;
use crate::core::clock::{Clock, SystemClock};
use crate::core::conditions::{CONSUMERS_CANNOT_REFRESH, READY, ROLLOUT_RESTART};
use crate::core::crd::{NsApiCredential, RENEW_ANNOTATION};
use crate::core::inputs;
use crate::core::policy::{Policy, ValidSpec, validate};
use crate::core::schedule::{self, CurrentToken, Decision, MintReason, WaitReason};
use crate::core::token_secret;
use crate::nsapi::{Login, NsApiClient, NsApiClientConfig};

/// Where to find the cluster and the credentials, as kubectl takes it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Connection {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's, or `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig cluster to use (instead of the context's).
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use (instead of the context's).
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The API server's address (instead of the kubeconfig's; enough with --token).
    #[arg(short = 's', long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// A bearer token for the API server (instead of the kubeconfig user's credentials).
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The user to impersonate.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub impersonate: Option<String>,
    /// A group to impersonate (repeatable).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub impersonate_groups: Vec<String>,
    /// How long to wait for each answer of the API server (Go duration, e.g. `30s`; `0` waits
    /// as long as it takes).
    #[arg(long, global = true, default_value = "15s", value_name = "DURATION")]
    pub request_timeout: String,
}

/// How `check` and `inspect` reach the API: under the operator's policy (allowed API hosts, plain
/// http), given with the operator's own flags or read from the installed operator.
#[derive(clap::Args, Clone, Debug)]
pub struct ApiAccess {
    /// API hosts the credential may call, as the operator's flag of the same name (glob;
    /// repeatable). Without it, the allow-list and the http rule are read from the installed
    /// operator's Deployment (see --operator-namespace).
    #[arg(long = "allowed-api-host", value_name = "GLOB", value_delimiter = ',')]
    pub allowed_api_hosts: Vec<String>,
    /// Allow an http:// API base URL, as the operator's flag of the same name (only with
    /// --allowed-api-host: otherwise the installed operator's rule applies).
    #[arg(long, requires = "allowed_api_hosts")]
    pub allow_insecure_http: bool,
    /// The namespace of the installed operator, whose Deployment (label
    /// app.kubernetes.io/name=nsapi-token-operator) gives the policy when --allowed-api-host is
    /// not given.
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
    /// PEM CA certificates to trust beside the system's (and the credential's spec.caBundle).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl Default for ApiAccess {
    fn default() -> Self {
        ApiAccess {
            allowed_api_hosts: Vec::new(),
            allow_insecure_http: false,
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.to_owned(),
            ca_file: None,
        }
    }
}

/// Where the chart and `deploy/` install the operator.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "nsapi-system";
/// The label the chart and `deploy/` put on the operator's Deployment.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=nsapi-token-operator";

/// A policy and where it was found (for messages).
#[derive(Clone, Debug)]
struct SourcedPolicy {
    source: String,
    policy: Policy,
}

impl ApiAccess {
    /// The policies the operator applies: the flags' one, or that of each operator Deployment
    /// found (a credential must pass all of them). `Err` says why none could be found and which
    /// flag to pass: there is no fallback to "any host".
    async fn policies(
        &self,
        cluster: &Cluster,
    ) -> Result<Result<Vec<SourcedPolicy>, String>, Box<dyn std::error::Error>> {
        if !self.allowed_api_hosts.is_empty() {
            return Ok(Ok(vec![SourcedPolicy {
                source: "the --allowed-api-host flags".to_owned(),
                policy: Policy {
                    allowed_api_hosts: self.allowed_api_hosts.clone(),
                    allow_insecure_http: self.allow_insecure_http,
                },
            }]));
        }
        let ns = &self.operator_namespace;
        let pass = "pass the operator's allow-list with --allowed-api-host (repeatable, and \
                    --allow-insecure-http if it runs with it), or --operator-namespace if the \
                    operator runs elsewhere";
        let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
        let listed = api
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await;
        let deployments = match listed {
            Ok(list) => list.items,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                return Ok(Err(format!(
                    "cannot read the operator's Deployment in namespace {ns:?} to learn its \
                     allow-list ({}); {pass}",
                    e.message
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if deployments.is_empty() {
            return Ok(Err(format!(
                "no operator Deployment ({OPERATOR_SELECTOR}) in namespace {ns:?} to learn its \
                 allow-list from; {pass}"
            )));
        }
        let mut policies = Vec::new();
        for deployment in &deployments {
            let source = format!("Deployment {ns}/{}", deployment.name_any());
            let containers = deployment
                .spec
                .template
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            match operator_container(containers).map(operator_policy) {
                Some(Ok(policy)) => policies.push(SourcedPolicy { source, policy }),
                Some(Err(why)) => return Ok(Err(format!("{source}: {why}; {pass}"))),
                None => {
                    return Ok(Err(format!(
                        "{source}: no container named \"operator\" (nor a single container); \
                         {pass}"
                    )));
                }
            }
        }
        Ok(Ok(policies))
    }

    /// The spec checked as the operator checks it, under every policy found; `Err` is the
    /// message of the first refusal.
    async fn validated(
        &self,
        cluster: &Cluster,
        credential: &NsApiCredential,
    ) -> Result<Result<ValidSpec, String>, Box<dyn std::error::Error>> {
        let policies = match self.policies(cluster).await? {
            Ok(policies) => policies,
            Err(why) => return Err(why.into()),
        };
        let mut valid = None;
        for SourcedPolicy { source, policy } in &policies {
            match validate(&credential.spec, policy) {
                Ok(v) => {
                    valid.get_or_insert(v);
                }
                Err(problem) => {
                    return Ok(Err(format!(
                        "{}: {} (the policy of {source}; nothing was sent)",
                        problem.reason, problem.message
                    )));
                }
            }
        }
        for SourcedPolicy { source, policy } in &policies {
            println!("Policy of {source}: {}.", describe_policy(policy));
        }
        match valid {
            Some(valid) => Ok(Ok(valid)),
            None => Err("no policy was found".into()),
        }
    }

    /// The client for a credential: the system's roots, `--ca-file`, and its CA bundle; with
    /// the bundle's digest (part of the attempt fingerprint), as the operator takes them.
    async fn client(
        &self,
        cluster: &Cluster,
        credential: &NsApiCredential,
    ) -> Result<Result<(NsApiClient, Option<String>), String>, Box<dyn std::error::Error>> {
        let mut extra_roots = Vec::new();
        if let Some(path) = &self.ca_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            extra_roots = crate::nsapi::tls::parse_pem_bundle(&text)
                .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        }
        let config = NsApiClientConfig {
            extra_roots,
            ..NsApiClientConfig::default()
        };
        let base = NsApiClient::new(config, Arc::new(SystemClock))?;
        Ok(crate::cluster::trust::client_for_credential(
            &cluster.client,
            &crate::cluster::trust::TrustedClients::default(),
            &base,
            &cluster.namespace,
            credential.spec.ca_bundle.as_ref(),
        )
        .await?
        .map_err(|problem| format!("{}: {}", problem.reason, problem.message)))
    }
}

/// `any host` or the list, and the http rule.
fn describe_policy(policy: &Policy) -> String {
    let hosts = if policy.allowed_api_hosts.is_empty() {
        "any API host".to_owned()
    } else {
        format!("API hosts {}", policy.allowed_api_hosts.join(", "))
    };
    let http = if policy.allow_insecure_http {
        "http allowed"
    } else {
        "https only"
    };
    format!("{hosts}; {http}")
}

/// The operator's container in its Deployment: the one named `operator` (as the chart and
/// `deploy/` name it), or the only one.
fn operator_container(containers: &[Container]) -> Option<&Container> {
    containers
        .iter()
        .find(|c| c.name == "operator")
        .or(match containers {
            [only] => Some(only),
            _ => None,
        })
}

/// The policy of an operator container, as `run` takes it from its flags: `--allowed-api-host`
/// (`=GLOB` or `GLOB`, comma-separated, repeatable) and `--allow-insecure-http`, or else the
/// environment variables `NSAPI_ALLOWED_API_HOSTS` and `NSAPI_ALLOW_INSECURE_HTTP`. An
/// allow-list that may come from where this cannot read (`valueFrom`, `envFrom`) is an error,
/// never "any host"; an http rule that may come from there counts as "https only" (stricter).
fn operator_policy(container: &Container) -> Result<Policy, String> {
    const HOSTS: &str = "--allowed-api-host";
    const HTTP: &str = "--allow-insecure-http";
    let args: Vec<&str> = container
        .command
        .iter()
        .chain(&container.args)
        .flatten()
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    let mut hosts: Option<Vec<String>> = None;
    let mut insecure = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        let value = if arg == HOSTS {
            i += 1;
            Some(
                *args
                    .get(i)
                    .ok_or_else(|| format!("{HOSTS} without a value in its arguments"))?,
            )
        } else {
            arg.strip_prefix(HOSTS).and_then(|r| r.strip_prefix('='))
        };
        if let Some(value) = value {
            hosts
                .get_or_insert_with(Vec::new)
                .extend(value.split(',').map(str::to_owned));
        } else if arg == HTTP {
            insecure = Some(true);
        } else if let Some(value) = arg.strip_prefix(HTTP).and_then(|r| r.strip_prefix('=')) {
            insecure = Some(truthy(value));
        }
        i += 1;
    }
    // The last definition of a variable wins, as in Kubernetes.
    let env = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .rev()
            .find(|e| e.name == name)
    };
    let env_from = container.env_from.as_ref().is_some_and(|e| !e.is_empty());
    let hosts = match hosts {
        Some(hosts) => hosts,
        None => match env("NSAPI_ALLOWED_API_HOSTS") {
            Some(var) if var.value_from.is_some() => {
                return Err(
                    "its allow-list comes from NSAPI_ALLOWED_API_HOSTS by reference (valueFrom), \
                     which this does not follow"
                        .to_owned(),
                );
            }
            Some(var) => match var.value.as_deref().unwrap_or("") {
                "" => Vec::new(),
                value => value.split(',').map(str::to_owned).collect(),
            },
            None if env_from => {
                return Err(
                    "it has no --allowed-api-host argument, and its envFrom may set \
                     NSAPI_ALLOWED_API_HOSTS, which this does not follow"
                        .to_owned(),
                );
            }
            None => Vec::new(),
        },
    };
    let allow_insecure_http = insecure.unwrap_or_else(|| {
        env("NSAPI_ALLOW_INSECURE_HTTP")
            .and_then(|var| var.value.as_deref())
            .is_some_and(truthy)
    });
    Ok(Policy {
        allowed_api_hosts: hosts,
        allow_insecure_http,
    })
}

/// A boolean flag's value as clap reads it: false for the usual "no" words and empty text.
fn truthy(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    !matches!(v.as_str(), "" | "n" | "no" | "f" | "false" | "off" | "0")
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

struct Cluster {
    client: kube::Client,
    namespace: String,
}

async fn connect(c: &Connection) -> Result<Cluster, Box<dyn std::error::Error>> {
    crate::nsapi::tls::install_crypto_provider();
    let timeout = request_timeout(&c.request_timeout)?;
    let options = KubeConfigOptions {
        context: c.context.clone(),
        cluster: c.cluster.clone(),
        user: c.user.clone(),
    };
    let named = c.context.is_some() || c.cluster.is_some() || c.user.is_some();
    let loaded = match &c.kubeconfig {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(kubeconfig) => kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(Box::<dyn std::error::Error>::from),
            Err(e) => Err(e.into()),
        },
        None if named => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(Into::into),
        None => kube::Config::infer().await.map_err(Into::into),
    };
    // As kubectl: --server (with --token) is enough without a kubeconfig.
    let mut config = match (loaded, &c.server) {
        (Ok(config), _) => config,
        (Err(_), Some(server)) => kube::Config::new(parse_server(server)?),
        (Err(e), None) => return Err(e),
    };
    if let Some(server) = &c.server {
        config.cluster_url = parse_server(server)?;
    }
    if let Some(token) = &c.token {
        config.auth_info = kube::config::AuthInfo {
            token: Some(secrecy::SecretString::from(token.clone())),
            ..kube::config::AuthInfo::default()
        };
    }
    if let Some(user) = &c.impersonate {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !c.impersonate_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(c.impersonate_groups.clone());
    }
    let namespace = c
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = crate::cluster::kube_client::build_like_kubectl(config, timeout)?;
    Ok(Cluster { client, namespace })
}

fn parse_server(server: &str) -> Result<http::Uri, String> {
    server
        .parse::<http::Uri>()
        .ok()
        .filter(|uri| uri.scheme().is_some() && uri.host().is_some())
        .ok_or_else(|| format!("--server {server:?} is not a URL such as https://host:6443"))
}

/// `--request-timeout`: a Go duration; `0` is as long as it takes (a day, in practice).
fn request_timeout(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::from_secs(24 * 3600));
    }
    schedule::parse_duration(text)
        .ok()
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--request-timeout {text:?} is not a duration such as 30s or 1m"))
}

/// `status [NAME] [-A]`: a table of credentials.
pub async fn status(c: &Connection, name: Option<&str>, all_namespaces: bool) -> CliResult {
    let cluster = connect(c).await?;
    let api: Api<NsApiCredential> = if all_namespaces {
        Api::all(cluster.client)
    } else {
        Api::namespaced(cluster.client, &cluster.namespace)
    };
    let credentials = match name {
        Some(name) => vec![api.get(name).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    if credentials.is_empty() {
        println!("No NsApiCredentials found.");
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemClock.now();
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "EXPIRES",
            "NEXT REFRESH",
            "LAST GRANT",
            "CONSUMERS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for credential in &credentials {
        rows.push(status_row(credential, now));
    }
    if !all_namespaces {
        rows.iter_mut().for_each(|r| {
            r.remove(0);
        });
    }
    print_table(&rows);
    let all_ready = credentials.iter().all(|c| {
        c.status
            .as_ref()
            .and_then(|s| s.condition(READY))
            .is_some_and(|r| r.status == "True")
    });
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status_row(credential: &NsApiCredential, now: Timestamp) -> Vec<String> {
    let status = credential.status.clone().unwrap_or_default();
    let ready = status.condition(READY);
    let when = |at: Option<Timestamp>| match at {
        None => "-".to_owned(),
        Some(at) => relative(at, now),
    };
    let consumers = {
        let mut parts = Vec::new();
        if let Some(c) = status.condition(ROLLOUT_RESTART) {
            parts.push(if c.status == "True" {
                format!(
                    "{} restarted",
                    credential.spec.rollout_restart_targets.len()
                )
            } else {
                c.reason.clone()
            });
        }
        if let Some(c) = status
            .condition(CONSUMERS_CANNOT_REFRESH)
            .filter(|c| c.status == "True")
        {
            let count = c.message.split(' ').next().unwrap_or("some");
            parts.push(format!("{count} stale"));
        }
        if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join(", ")
        }
    };
    vec![
        credential.namespace().unwrap_or_default(),
        credential.name_any(),
        ready.map_or("Unknown".to_owned(), |c| c.status.clone()),
        ready.map_or("-".to_owned(), |c| c.reason.clone()),
        when(status.expires_at.map(|t| t.0)),
        when(status.next_refresh_at.map(|t| t.0)),
        status.last_grant.unwrap_or_else(|| "-".to_owned()),
        consumers,
    ]
}

/// `in 45m`, `3m ago`.
fn relative(at: Timestamp, now: Timestamp) -> String {
    let d = at.duration_since(now);
    let short = |d: SignedDuration| {
        let s = d.as_secs().abs();
        match s {
            0..=119 => format!("{s}s"),
            120..=7199 => format!("{}m", s / 60),
            _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        }
    };
    if d.is_negative() {
        format!("{} ago", short(d))
    } else {
        format!("in {}", short(d))
    }
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// `renew NAME | --all [-l SELECTOR]`: asks for a new token, once.
pub async fn renew(
    c: &Connection,
    name: Option<&str>,
    all: bool,
    selector: Option<&str>,
) -> CliResult {
    let cluster = connect(c).await?;
    let api: Api<NsApiCredential> = Api::namespaced(cluster.client, &cluster.namespace);
    let names: Vec<String> = match (name, all) {
        (Some(name), false) => vec![name.to_owned()],
        (None, true) => {
            let mut params = ListParams::default();
            if let Some(selector) = selector {
                params = params.labels(selector);
            }
            api.list(&params)
                .await?
                .items
                .iter()
                .map(|c| c.name_any())
                .collect()
        }
        _ => return Err("give a credential's NAME, or --all (with -l to select)".into()),
    };
    let value = rfc3339(SystemClock.now());
    let patch = json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
    for name in &names {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        println!(
            "{}/{name}: a new token was asked for ({RENEW_ANNOTATION}: {value})",
            cluster.namespace
        );
    }
    if names.is_empty() {
        println!("No NsApiCredentials matched.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `check NAME [--yes]`: obtains a token with the credential's inputs, writing nothing, and
/// says what the operator would do now. The exit code says whether the API accepted the inputs.
/// The operator's policy applies as it does to the operator; the login is confirmed first (a new
/// login may end the live token's session).
pub async fn check(c: &Connection, name: &str, access: &ApiAccess, yes: bool) -> CliResult {
    let cluster = connect(c).await?;
    let credentials: Api<NsApiCredential> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let credential = credentials.get(name).await?;
    let spec = &credential.spec;
    let valid = match access.validated(&cluster, &credential).await? {
        Ok(valid) => valid,
        Err(refused) => return fail(&refused),
    };
    let (client, subscriber) = match load_inputs(&secrets, spec).await? {
        Ok(inputs) => inputs,
        Err(problem) => return fail(&format!("{}: {}", problem.reason, problem.message)),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (nsapi, ca_digest) = match access.client(&cluster, &credential).await? {
        Ok(trusted) => trusted,
        Err(problem) => return fail(&problem),
    };
    // The digests the operator keys the token and its backoff by, from the same function.
    let fingerprints = inputs::fingerprints(&valid, &client, &subscriber, ca_digest.as_deref());

    eprintln!(
        "WARNING: check logs in as {:?} (a password grant). On portals that allow one session \
         per user, a new login ends the older ones: the token in {}/{} may stop working until \
         the operator replaces it (`kubectl nscred renew {name}` asks for that at once).",
        subscriber.username, cluster.namespace, spec.token_secret.name
    );
    if !confirmed(yes)? {
        return Err(
            "not confirmed, nothing was sent: pass --yes to log in (stdin is not a terminal, \
             or the answer was not yes)"
                .into(),
        );
    }

    // The nodes in order, as the operator tries them, until one answers.
    let nodes: Vec<&ApiBaseUrl> = valid.nodes().collect();
    let mut answer = None;
    for (i, node) in nodes.iter().enumerate() {
        println!(
            "Asking {node} for a token with the inputs of {}/{name} (nothing is written)...",
            cluster.namespace
        );
        let result = nsapi
            .password_login(node, valid.token_api, &client, &subscriber)
            .await;
        match result {
            Err(error) if crate::nsapi::nodes::fails_over(&error) && i + 1 < nodes.len() => {
                println!("  that node failed ({error}); trying the next one");
            }
            other => {
                answer = Some(other);
                break;
            }
        }
    }
    match answer {
        Some(Ok(Login::Token(grant))) => println!(
            "OK: a {} token from the {} password grant, scope {:?}, domain {:?}, valid {} s.",
            grant.token_type,
            grant.api.as_str(),
            grant.scope.as_deref().unwrap_or("-"),
            grant.domain.as_deref().unwrap_or("-"),
            grant.expires_in
        ),
        // A passcode is accepted once: one sent here could be the one the operator needs in
        // the same 30 s, so check stops at the password.
        Some(Ok(Login::Mfa(challenge)))
            if subscriber.totp.is_some() && challenge.takes_a_totp_passcode() =>
        {
            println!(
                "OK: the {} password grant accepted the password; the subscriber has MFA \
                 enforced, and spec.mfa.totpSecretRef gives the operator the seed to answer \
                 with a passcode. check sends no passcode (each is accepted once); the \
                 operator's next login proves the seed.",
                challenge.api.as_str()
            )
        }
        Some(Ok(Login::Mfa(challenge))) => {
            return fail(&format!("the API refused: {}", challenge.unanswered));
        }
        Some(Err(error)) => return fail(&format!("the API refused: {error}")),
        None => return fail("no API node answered"),
    }

    // What the operator would do now, from the token in place.
    let now = clock.now();
    let in_place = secrets
        .get_opt(&spec.token_secret.name)
        .await?
        .filter(|s| token_secret::ownership(Some(s), &credential) == token_secret::Ownership::Owned)
        .and_then(|s| token_secret::read_token(&s).ok());
    let current = in_place.as_ref().map(|t| CurrentToken {
        times: t.times,
        inputs_match: t.inputs_fingerprint == fingerprints.token,
    });
    let seed = schedule::token_seed(
        &credential.uid().unwrap_or_default(),
        in_place.as_ref().map(|t| t.times),
    );
    let decision = schedule::decide(
        now,
        current,
        valid.refresh_before,
        seed,
        crate::core::status::failure_gate(credential.status.as_ref(), &fingerprints.attempt),
        crate::core::status::renew_request(&credential).is_some(),
    );
    println!("The operator would {}.", describe(decision, spec.suspend));
    Ok(ExitCode::SUCCESS)
}

/// Whether to go on with a login: `--yes`, or "y"/"yes" typed on a terminal. Not on a terminal
/// and without `--yes`, no.
fn confirmed(yes: bool) -> Result<bool, Box<dyn std::error::Error>> {
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    eprint!("Log in now? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn describe(decision: Decision, suspended: bool) -> String {
    if suspended {
        return "do nothing: spec.suspend is true".to_owned();
    }
    match decision {
        Decision::Wait {
            until,
            reason: WaitReason::Fresh,
        } => {
            format!(
                "keep the token in place, and rotate it at {}",
                rfc3339(until)
            )
        }
        Decision::Wait {
            until,
            reason: WaitReason::BackingOff,
        } => {
            format!(
                "wait until {} (backing off after a failure)",
                rfc3339(until)
            )
        }
        Decision::Mint(why) => format!(
            "obtain a new token now ({})",
            match why {
                MintReason::NoToken => "there is none",
                MintReason::InputsChanged => "the inputs changed",
                MintReason::Untrusted => "the token's record cannot be trusted",
                MintReason::Due => "it is due",
                MintReason::Expired => "it has expired",
                MintReason::Requested => "one was asked for",
                MintReason::Revoked => "the API refused the token in place",
            }
        ),
    }
}

/// `inspect NAME`: what the API says about the token in the credential's output Secret. The
/// token goes only to the spec's API nodes, checked under the operator's policy (never to the
/// `api_base_url` written in the Secret), and only from a Secret the credential controls.
pub async fn inspect(c: &Connection, name: &str, access: &ApiAccess) -> CliResult {
    let cluster = connect(c).await?;
    let credentials: Api<NsApiCredential> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let credential = credentials.get(name).await?;
    let valid = match access.validated(&cluster, &credential).await? {
        Ok(valid) => valid,
        Err(refused) => return fail(&refused),
    };
    let secret_name = &credential.spec.token_secret.name;
    let secret = secrets.get_opt(secret_name).await?;
    let secret = match (
        token_secret::ownership(secret.as_ref(), &credential),
        secret,
    ) {
        (token_secret::Ownership::Owned, Some(secret)) => secret,
        (token_secret::Ownership::Foreign, _) => {
            return fail(&format!(
                "the Secret {}/{secret_name} is not controlled by NsApiCredential {name} (no \
                 controller ownerReference to it): the operator does not write it \
                 (SecretConflict), and inspect sends nothing from it",
                cluster.namespace
            ));
        }
        _ => return fail(&format!("the output Secret {secret_name:?} does not exist")),
    };
    let token = match token_secret::read_token(&secret) {
        Ok(token) => token,
        Err(why) => return fail(&format!("the output Secret holds no token: {why}")),
    };
    let (nsapi, _) = match access.client(&cluster, &credential).await? {
        Ok(trusted) => trusted,
        Err(problem) => return fail(&problem),
    };
    // The spec's nodes in order, as the operator tries them, until one answers.
    let nodes: Vec<&ApiBaseUrl> = valid.nodes().collect();
    let mut answer = None;
    for (i, node) in nodes.iter().enumerate() {
        match nsapi.read_token(node, &token.access_token).await {
            Err(error) if crate::nsapi::nodes::fails_over(&error) && i + 1 < nodes.len() => {
                println!("{node} failed ({error}); trying the next node");
            }
            other => {
                answer = Some((*node, other));
                break;
            }
        }
    }
    match answer {
        Some((base, Ok(info))) => {
            println!(
                "The API at {base} knows the token in {}/{}:",
                cluster.namespace,
                secret.name_any()
            );
            let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            for (label, value) in [
                ("client id", field(&info.client_id)),
                ("domain", field(&info.domain)),
                ("territory", field(&info.territory)),
                ("user", field(&info.uid)),
                ("scope", field(&info.scope)),
                ("expires (server time)", field(&info.expires)),
                ("API version", field(&info.api_version)),
            ] {
                println!("  {label:<22} {value}");
            }
            println!(
                "  {:<22} {}",
                "expires (recorded)",
                rfc3339(token.times.expires_at)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some((_, Err(error))) => fail(&format!("the API refused: {error}")),
        None => fail("no API node answered"),
    }
}

fn fail(message: &str) -> CliResult {
    eprintln!("FAIL: {message}");
    Ok(ExitCode::from(1))
}

/// The name this binary was run as (`kubectl-nscred` as a plugin, else `nsapi-token-operator`),
/// for the completion script.
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "nsapi-token-operator".to_owned())
}

/// `version [--client]`: this binary's version and commit, then, unless `--client`, the version
/// label and image of each operator Deployment in `operator_namespace`. A cluster that cannot be
/// read is said, not an error: the client's version is still the answer (exit 0).
pub async fn version(c: &Connection, client_only: bool, operator_namespace: &str) -> CliResult {
    println!("Client: {}", crate::core::build::describe());
    if client_only {
        return Ok(ExitCode::SUCCESS);
    }
    let listed = match connect(c).await {
        Ok(cluster) => {
            Api::<Deployment>::namespaced(cluster.client, operator_namespace)
                .list(&ListParams::default().labels(OPERATOR_SELECTOR))
                .await
        }
        Err(e) => {
            println!("Operator: unknown (cannot reach the cluster: {e})");
            return Ok(ExitCode::SUCCESS);
        }
    };
    match listed {
        Ok(list) if list.items.is_empty() => println!(
            "Operator: none found ({OPERATOR_SELECTOR} in namespace {operator_namespace:?}; \
             --operator-namespace names another)"
        ),
        Ok(list) => {
            for deployment in &list.items {
                println!("Operator: {}", describe_operator(deployment));
            }
        }
        Err(e) => println!(
            "Operator: unknown (cannot list Deployments in namespace {operator_namespace:?}: {e})"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `0.1.0, Deployment ns/name, image ..., 2/2 ready`.
fn describe_operator(deployment: &Deployment) -> String {
    let version = deployment
        .labels()
        .get("app.kubernetes.io/version")
        .map_or("unknown", String::as_str);
    let image = deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| operator_container(&s.containers))
        .and_then(|c| c.image.as_deref())
        .unwrap_or("unknown");
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    format!(
        "{version}, Deployment {}/{}, image {image}, {ready}/{wanted} ready",
        deployment.namespace().unwrap_or_default(),
        deployment.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_to_now() {
        let now: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(relative(at("2026-01-01T10:00:30Z"), now), "in 30s");
        assert_eq!(relative(at("2026-01-01T10:45:00Z"), now), "in 45m");
        assert_eq!(relative(at("2026-01-01T09:57:00Z"), now), "3m ago");
        assert_eq!(relative(at("2026-01-01T12:30:00Z"), now), "in 2h30m");
    }

    #[test]
    fn decisions_read_as_sentences() {
        let at: Timestamp = "2026-01-01T10:50:00Z".parse().unwrap();
        assert_eq!(
            describe(
                Decision::Wait {
                    until: at,
                    reason: WaitReason::Fresh
                },
                false
            ),
            "keep the token in place, and rotate it at 2026-01-01T10:50:00Z"
        );
        assert_eq!(
            describe(Decision::Mint(MintReason::Requested), false),
            "obtain a new token now (one was asked for)"
        );
        assert!(describe(Decision::Mint(MintReason::Due), true).contains("spec.suspend"));
    }

    fn container(args: &[&str], env: &[(&str, &str)]) -> Container {
        serde_json::from_value(json!({
            "name": "operator",
            "args": args,
            "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn the_operators_policy_is_read_from_its_arguments_as_run_reads_them() {
        let policy = operator_policy(&container(
            &[
                "run",
                "--http-addr=0.0.0.0:8080",
                "--allowed-api-host=portal.example.com",
                "--allowed-api-host",
                "*.ns-api.example.net,api.example.org:8443",
                "--allow-insecure-http",
            ],
            &[],
        ))
        .unwrap();
        assert_eq!(
            policy.allowed_api_hosts,
            [
                "portal.example.com",
                "*.ns-api.example.net",
                "api.example.org:8443"
            ]
        );
        assert!(policy.allow_insecure_http);
        // The chart without allowedApiHosts: any host, https only.
        let open = operator_policy(&container(&["run", "--log-format=json"], &[])).unwrap();
        assert!(open.allowed_api_hosts.is_empty());
        assert!(!open.allow_insecure_http);
        // A flag's name as a prefix of another is not that flag; after `--`, nothing counts.
        let other = operator_policy(&container(
            &["run", "--allowed-api-hosts=x", "--", "--allowed-api-host=y"],
            &[],
        ))
        .unwrap();
        assert!(other.allowed_api_hosts.is_empty(), "{other:?}");
        assert!(operator_policy(&container(&["run", "--allowed-api-host"], &[])).is_err());
        // The command counts too (an image run with `command:`).
        let mut with_command = container(&["--allowed-api-host=a.example.com"], &[]);
        with_command.command = Some(vec!["/nsapi-token-operator".into(), "run".into()]);
        assert_eq!(
            operator_policy(&with_command).unwrap().allowed_api_hosts,
            ["a.example.com"]
        );
    }

    #[test]
    fn the_operators_environment_counts_when_its_arguments_say_nothing() {
        let env = [
            ("NSAPI_ALLOWED_API_HOSTS", "a.example.com,b.example.com"),
            ("NSAPI_ALLOW_INSECURE_HTTP", "true"),
        ];
        let policy = operator_policy(&container(&["run"], &env)).unwrap();
        assert_eq!(policy.allowed_api_hosts, ["a.example.com", "b.example.com"]);
        assert!(policy.allow_insecure_http);
        // Arguments win over the environment, as with clap.
        let policy = operator_policy(&container(
            &["run", "--allowed-api-host=c.example.com"],
            &env,
        ))
        .unwrap();
        assert_eq!(policy.allowed_api_hosts, ["c.example.com"]);
        for no in ["false", "0", "off", "no", ""] {
            let env = [("NSAPI_ALLOW_INSECURE_HTTP", no)];
            assert!(
                !operator_policy(&container(&["run"], &env))
                    .unwrap()
                    .allow_insecure_http,
                "{no:?}"
            );
        }
        // An allow-list this cannot read is an error, never "any host".
        let mut by_reference = container(&["run"], &[]);
        by_reference.env = Some(vec![
            serde_json::from_value(json!({
                "name": "NSAPI_ALLOWED_API_HOSTS",
                "valueFrom": {"configMapKeyRef": {"name": "policy", "key": "hosts"}},
            }))
            .unwrap(),
        ]);
        assert!(operator_policy(&by_reference).is_err());
        let mut env_from = container(&["run"], &[]);
        env_from.env_from = Some(vec![
            serde_json::from_value(json!({"configMapRef": {"name": "operator-env"}})).unwrap(),
        ]);
        assert!(operator_policy(&env_from).is_err());
        // ... unless the arguments give it.
        env_from.args = Some(vec![
            "run".into(),
            "--allowed-api-host=a.example.com".into(),
        ]);
        assert!(operator_policy(&env_from).is_ok());
    }

    #[test]
    fn the_operator_container_is_the_one_named_operator_or_the_only_one() {
        let named = container(&["run"], &[]);
        let mut sidecar = container(&[], &[]);
        sidecar.name = "proxy".into();
        assert_eq!(
            operator_container(&[sidecar.clone(), named.clone()]).map(|c| c.name.as_str()),
            Some("operator")
        );
        assert_eq!(
            operator_container(std::slice::from_ref(&sidecar)).map(|c| c.name.as_str()),
            Some("proxy")
        );
        assert!(operator_container(&[sidecar.clone(), sidecar]).is_none());
        assert!(operator_container(&[]).is_none());
    }

    #[test]
    fn only_yes_confirms_a_login() {
        for yes in ["y", "Y\n", "yes\n", " YES "] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "ok"] {
            assert!(!is_yes(no), "{no:?}");
        }
        assert!(confirmed(true).unwrap());
    }

    #[test]
    fn policies_read_as_sentences() {
        assert_eq!(
            describe_policy(&Policy::default()),
            "any API host; https only"
        );
        let listed = Policy {
            allowed_api_hosts: vec!["a.example.com".into(), "*.b.example.com".into()],
            allow_insecure_http: true,
        };
        assert_eq!(
            describe_policy(&listed),
            "API hosts a.example.com, *.b.example.com; http allowed"
        );
    }
}
