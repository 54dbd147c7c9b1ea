//! The command line for people, as subcommands of the binary and as a kubectl plugin (the same
//! binary named `kubectl-nscred`, so `kubectl nscred status` works): what credentials are doing
//! (`status`), asking for a new token (`renew`), trying a credential's inputs against the API
//! without writing anything (`check`), and asking the API about the token in place
//! (`inspect`). Kubeconfig handling follows kubectl: `KUBECONFIG`, `--kubeconfig`,
//! `--context`, `-n`, `-A`. Nothing here ever prints a secret.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::core::base_url::ApiBaseUrl;
use crate::core::clock::rfc3339;
use crate::core::clock::{Clock, SystemClock};
use crate::core::conditions::{CONSUMERS_CANNOT_REFRESH, READY, ROLLOUT_RESTART};
use crate::core::crd::{NsApiCredential, RENEW_ANNOTATION};
use crate::core::inputs;
use crate::core::policy::{Policy, validate};
use crate::core::schedule::{self, CurrentToken, Decision, MintReason, WaitReason};
use crate::core::token_secret;
use crate::nsapi::{NsApiClient, NsApiClientConfig};

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
}

/// How `check` and `inspect` reach the API, as the operator's flags of the same names.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ApiAccess {
    /// Allow an http:// API base URL.
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// PEM CA certificates to trust beside the system's (and the credential's spec.caBundle).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ApiAccess {
    /// The client for a credential: the system's roots, `--ca-file`, and its CA bundle.
    async fn client(
        &self,
        cluster: &Cluster,
        credential: &NsApiCredential,
    ) -> Result<Result<NsApiClient, String>, Box<dyn std::error::Error>> {
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
        let reference = credential.spec.ca_bundle.as_ref();
        Ok(
            match crate::cluster::trust::load(&cluster.client, &cluster.namespace, reference)
                .await?
            {
                Err(problem) => Err(format!("{}: {}", problem.reason, problem.message)),
                Ok(bundle) => crate::cluster::trust::TrustedClients::default()
                    .client_for(&base, bundle.as_ref())
                    .map_err(|problem| format!("{}: {}", problem.reason, problem.message)),
            },
        )
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

struct Cluster {
    client: kube::Client,
    namespace: String,
}

async fn connect(c: &Connection) -> Result<Cluster, Box<dyn std::error::Error>> {
    crate::nsapi::tls::install_crypto_provider();
    let options = KubeConfigOptions {
        context: c.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &c.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if c.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await?,
    };
    let namespace = c
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = crate::cluster::kube_client::build(config, std::time::Duration::from_secs(15))?;
    Ok(Cluster { client, namespace })
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

/// `check NAME`: obtains a token with the credential's inputs, writing nothing, and says what
/// the operator would do now. The exit code says whether the API accepted the inputs.
pub async fn check(c: &Connection, name: &str, access: &ApiAccess) -> CliResult {
    let cluster = connect(c).await?;
    let credentials: Api<NsApiCredential> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let credential = credentials.get(name).await?;
    let spec = &credential.spec;
    let policy = Policy {
        allowed_api_hosts: Vec::new(),
        allow_insecure_http: access.allow_insecure_http,
    };
    let valid = match validate(spec, &policy) {
        Ok(valid) => valid,
        Err(problem) => return fail(&format!("{}: {}", problem.reason, problem.message)),
    };
    let client_secret = secrets.get_opt(&spec.client_secret_ref.name).await?;
    let subscriber_secret = secrets.get_opt(&spec.subscriber_secret_ref.name).await?;
    let loaded = inputs::client_credentials(spec, client_secret.as_ref()).and_then(|client| {
        Ok((
            client,
            inputs::subscriber_credentials(spec, subscriber_secret.as_ref())?,
        ))
    });
    let (client, subscriber) = match loaded {
        Ok(inputs) => inputs,
        Err(problem) => return fail(&format!("{}: {}", problem.reason, problem.message)),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let nsapi = match access.client(&cluster, &credential).await? {
        Ok(nsapi) => nsapi,
        Err(problem) => return fail(&problem),
    };
    // The nodes in order, as the operator tries them, until one answers.
    let nodes: Vec<&ApiBaseUrl> = valid.nodes().collect();
    let mut answer = None;
    for (i, node) in nodes.iter().enumerate() {
        println!(
            "Asking {node} for a token with the inputs of {}/{name} (nothing is written)...",
            cluster.namespace
        );
        let result = nsapi
            .password_grant(node, valid.token_api, &client, &subscriber)
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
    let grant = match answer {
        Some(Ok(grant)) => grant,
        Some(Err(error)) => return fail(&format!("the API refused: {error}")),
        None => return fail("no API node answered"),
    };
    println!(
        "OK: a {} token from the {} password grant, scope {:?}, domain {:?}, valid {} s.",
        grant.token_type,
        grant.api.as_str(),
        grant.scope.as_deref().unwrap_or("-"),
        grant.domain.as_deref().unwrap_or("-"),
        grant.expires_in
    );

    // What the operator would do now, from the token in place.
    let now = clock.now();
    let fingerprint = inputs::fingerprint(&valid, &client, &subscriber);
    let in_place = secrets
        .get_opt(&spec.token_secret.name)
        .await?
        .filter(|s| token_secret::ownership(Some(s), &credential) == token_secret::Ownership::Owned)
        .and_then(|s| token_secret::read_token(&s).ok());
    let current = in_place.as_ref().map(|t| CurrentToken {
        times: t.times,
        inputs_match: t.inputs_fingerprint == fingerprint,
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
        crate::core::status::failure_gate(credential.status.as_ref(), &fingerprint),
        crate::core::status::renew_request(&credential).is_some(),
    );
    println!("The operator would {}.", describe(decision, spec.suspend));
    Ok(ExitCode::SUCCESS)
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

/// `inspect NAME`: what the API says about the token in the credential's output Secret.
pub async fn inspect(c: &Connection, name: &str, access: &ApiAccess) -> CliResult {
    let cluster = connect(c).await?;
    let credentials: Api<NsApiCredential> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let credential = credentials.get(name).await?;
    let Some(secret) = secrets.get_opt(&credential.spec.token_secret.name).await? else {
        return fail(&format!(
            "the output Secret {:?} does not exist",
            credential.spec.token_secret.name
        ));
    };
    let token = match token_secret::read_token(&secret) {
        Ok(token) => token,
        Err(why) => return fail(&format!("the output Secret holds no token: {why}")),
    };
    let base = ApiBaseUrl::parse(&token.api_base_url, access.allow_insecure_http)?;
    let nsapi = match access.client(&cluster, &credential).await? {
        Ok(nsapi) => nsapi,
        Err(problem) => return fail(&problem),
    };
    match nsapi.read_token(&base, &token.access_token).await {
        Ok(info) => {
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
        Err(error) => fail(&format!("the API refused: {error}")),
    }
}

fn fail(message: &str) -> CliResult {
    eprintln!("FAIL: {message}");
    Ok(ExitCode::from(1))
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
}
