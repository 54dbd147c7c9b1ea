//! `nsapi-sim`: run the NetSapiens API simulator as a process, for demos and manual tests.
//! Prints the base URL as the first stdout line, logs to stderr, stops on Ctrl-C or SIGTERM.
//! Uses the library's public API only.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use nsapi_sim::{
    ClientAuth, ErrorBody, FaultEntry, RefreshMode, Sim, SimConfig, Subscriber, V1Answer,
    parse_duration,
};

const ADMIN_HELP: &str = "\
ENDPOINTS (BASE = http://ADDR/ns-api by default; https with --tls; every node serves them all):
  POST|GET BASE/oauth2/token[/]   v1 password and refresh_token grants; fields in a form body,
                                  the query string, a multipart body or a JSON body
  GET      BASE/oauth2/read?format=json   token info for `Authorization: Bearer TOKEN`
                                  (XML without format=json)
  POST     BASE/v2/tokens[/]      v2 grants, JSON body; errors {\"code\",\"message\"}
           (grant_type mfa: the second step, on v1 too: passcode, access_token = the MFA token)
  GET      BASE/v2/version        {\"apiversion\"}
  POST     BASE/v2/jwt            password (or mfa) login -> {\"token\"[,\"refresh_token\"]};
                                  grant_type refresh_token with a refresh JWT (single use)
  GET      BASE/v2/jwt            the Bearer JWT's claims
  DELETE   BASE/v2/jwt[/JTI]      revoke the Bearer JWT (or that one): 202
  Unknown paths under BASE answer {\"code\":404,\"message\":\"No Route Found [92]\"} with v2, HTML without.

ADMIN API (JSON, no authentication: keep the simulator on loopback):
  GET    /_sim/health                       200 \"ok\"
  GET    /_sim/stats                        counters, with by_key \"endpoint/grant/result\"
                                            and by_node (each node's own counters)
  DELETE /_sim/stats                        zero the counters
  GET    /_sim/faults                       active faults
  POST   /_sim/faults                       add a fault or an array of faults, e.g.
                                            {\"type\":\"status\",\"status\":503,\"count\":2};
                                            \"node\":N limits one to that node
  DELETE /_sim/faults                       clear every fault
  GET    /_sim/settings                     current settings
  PUT    /_sim/settings                     change any of: token_ttl, refresh_mode,
                                            refresh_token_ttl, password_grant_revokes_previous,
                                            v2_enabled, v2_absent_status, bad_client_status,
                                            bad_refresh_status, error_body, api_version,
                                            tls_untrusted, numbers_as_strings, v1_answer,
                                            client_auth, mfa_token_ttl, jwt_ttl, jwt_refresh,
                                            jwt_cookie, jwt_cookie_required
  POST   /_sim/clients                      {\"id\",\"secret\"}
  POST   /_sim/subscribers                  {\"username\",\"password\"[,\"scope\",\"domain\",
                                            \"territory\",\"uid\",\"mfa\",\"totp_seed\"]}
  PUT    /_sim/subscribers/USERNAME/password  {\"password\"}
  POST   /_sim/tokens/valid                 {\"token\"} -> {\"valid\":bool[,\"reason\"]}
  GET    /_sim/tokens/valid?token=TOKEN     the same
  POST   /_sim/tokens/revoke                {\"token\"} access or refresh token -> {\"found\"}
  POST   /_sim/tokens/expire                {\"token\"} make it expire now -> {\"found\"}
  POST   /_sim/refresh-tokens/revoke        revoke every refresh token issued so far
  GET    /_sim/nodes                        [{\"index\",\"addr\",\"base_url\",\"admin_url\",\"state\"}]
  POST   /_sim/nodes                        start one more node (free port) -> 201 its info
  GET    /_sim/nodes/N                      one node's info
  PUT    /_sim/nodes/N                      {\"state\":\"down\"} (socket closed, connects refused;
                                            not through node N itself: 409), {\"state\":\"up\"}
                                            (same port), {\"state\":\"status\",\"status\":503}
                                            (every request, HTML), {\"state\":\"hang\"} (never
                                            answer); /_sim/ itself is exempt
  GET    /_sim/nodes/N/stats                that node's counters
  GET    /_sim/tls/ca.pem                   the test CA (with --tls; 404 without)
  GET    /_sim/tls/untrusted-ca.pem         the unknown CA served with --tls-untrusted

FAULTS (JSON for --fault, the config file and POST /_sim/faults; add \"times\":N to limit any,
\"node\":N to play one on that node only):
  {\"type\":\"status\",\"status\":503,\"count\":2}           5xx (or any status) for the next N
                                            (HTML on v1, {\"code\",\"message\"} on v2)
  {\"type\":\"status_fraction\",\"status\":500,\"fraction\":0.3}  that status for 30% of them
  {\"type\":\"latency\",\"delay\":\"200ms\"}                  added latency
  {\"type\":\"hang\"}                                     never answer
  {\"type\":\"malformed_json\"} {\"type\":\"empty_body\"} {\"type\":\"json_as_html\"}
  {\"type\":\"firewall\",\"after\":5,\"window\":\"60s\"}        HTML 403 past N requests per window
  {\"type\":\"too_many_requests\",\"retry_after_secs\":30,\"count\":1}   429 + Retry-After
  {\"type\":\"invalid_scope\"}                            401 Invalid Scope [APP001]
  {\"type\":\"reject_refresh\"}                           every refresh grant fails
  {\"type\":\"method_not_allowed\",\"method\":\"GET\"}       405 for GET (or POST) token requests
  {\"type\":\"read_status\",\"status\":500,\"count\":1}      fault on oauth2/read
  {\"type\":\"truncated_body\"}                         Content-Length of the answer, half sent, closed
  {\"type\":\"huge_body\",\"bytes\":67108864}              a streamed body of N bytes, JSON start then
                                            filler (\"chunked\":true: no Content-Length)
  {\"type\":\"expires_in\",\"value\":-5}                   successful grants report this expires_in
                                            (any JSON value; the token keeps its real ttl)
  {\"type\":\"no_token\",\"body\":\"empty_object\"}           200 without access_token: {} (empty_object),
                                            oauth_error or code_message in-band errors
Token faults apply to v1 oauth2/token and v2 tokens. Durations: 60s, 500ms, 2m, 1h or seconds.";

/// A NetSapiens API simulator: OAuth2 token endpoints (v1 and v2) with the real API's quirks
/// and injectable faults, plus an admin API under /_sim/.
///
/// Prints the base URL (e.g. http://127.0.0.1:8080/ns-api/) as the first line on stdout.
/// Flags override the config file; --client, --subscriber and --fault add to it.
#[derive(Parser, Debug)]
#[command(name = "nsapi-sim", version, after_long_help = ADMIN_HELP)]
struct Cli {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080, or the config file's].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Nodes to start: listeners over one store (accounts, tokens, settings), as the
    /// geo-redundant nodes of one cluster. Node N listens on the --listen port plus N (or a
    /// free port with port 0); each node's base URL is printed on its own line [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    nodes: Option<u16>,

    /// Serve HTTPS with a CA made at start and a certificate for localhost, 127.0.0.1 and ::1;
    /// the CA's PEM is at /_sim/tls/ca.pem and in --tls-ca-file.
    #[arg(long)]
    tls: bool,

    /// With --tls, serve a certificate from another, unknown CA instead (its PEM is at
    /// /_sim/tls/untrusted-ca.pem), so that clients trusting the test CA fail.
    #[arg(long)]
    tls_untrusted: bool,

    /// With --tls, write the test CA's PEM to this file before printing the base URL.
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,

    /// JSON config file: listen, nodes, tls, tls_untrusted, base_path, token_ttl, refresh_mode, refresh_token_ttl,
    /// password_grant_revokes_previous, v2_enabled, v2_absent_status, bad_client_status,
    /// bad_refresh_status,
    /// error_body, api_version, numbers_as_strings, v1_answer, client_auth, mfa_token_ttl,
    /// jwt_ttl, jwt_refresh, jwt_cookie, jwt_cookie_required, clients [{id, secret}],
    /// subscribers [{username, password, scope, domain, territory, uid, mfa, totp_seed}],
    /// faults [...].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Base path of the API [default: /ns-api]; "/" serves at the root.
    #[arg(long, value_name = "PATH")]
    base_path: Option<String>,

    /// Access-token lifetime, at least 1s [default: 3600s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    token_ttl: Option<Duration>,

    /// Refresh behaviour: same (the same refresh token comes back and stays valid), rotate
    /// (a new one each time; each is accepted once) or omit (no refresh_token field in refresh
    /// answers; the one used stays valid) [default: same].
    #[arg(long, value_name = "MODE")]
    refresh_mode: Option<RefreshMode>,

    /// Refresh-token lifetime [default: none, refresh tokens never expire].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    refresh_token_ttl: Option<Duration>,

    /// A new password grant revokes the user's earlier access and refresh tokens.
    #[arg(long)]
    password_grant_revokes_previous: bool,

    /// Disable API v2: /v2/tokens answers 404 (or --v2-absent-status) with an HTML page, as
    /// older servers do.
    #[arg(long)]
    no_v2: bool,

    /// The status /v2/tokens answers, with an HTML page, while v2 is disabled: 404, or e.g.
    /// 403, 500, 502, 503 like a front end that answers unknown paths that way [default: 404].
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(100..=599))]
    v2_absent_status: Option<u16>,

    /// HTTP status for a bad client id or secret: 400, 401 or 403 [default: 401].
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(100..=599))]
    bad_client_status: Option<u16>,

    /// HTTP status for a bad, expired, revoked or reused refresh token [default: 400].
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(100..=599))]
    bad_refresh_status: Option<u16>,

    /// Body of v1 errors: oauth ({"error","error_description"}), code-message
    /// ({"code","message"}), text, html, empty, json-as-html [default: oauth].
    #[arg(long, value_name = "STYLE")]
    error_body: Option<ErrorBody>,

    /// The apiversion string reported [default: "Version: 44.1.0"].
    #[arg(long, value_name = "STRING")]
    api_version: Option<String>,

    /// An OAuth client, ID:SECRET (repeatable).
    #[arg(long, value_name = "ID:SECRET", value_parser = parse_pair)]
    client: Vec<(String, String)>,

    /// A subscriber, USERNAME:PASSWORD (repeatable); scope Office Manager, domain after the @.
    #[arg(long, value_name = "USERNAME:PASSWORD", value_parser = parse_pair)]
    subscriber: Vec<(String, String)>,

    /// A subscriber with MFA enabled, USERNAME:PASSWORD (repeatable): the password grant
    /// answers an unusable token with scope mfa_required.
    #[arg(long, value_name = "USERNAME:PASSWORD", value_parser = parse_pair)]
    mfa_subscriber: Vec<(String, String)>,

    /// An MFA subscriber who can pass the second step, USERNAME:SEED:PASSWORD (repeatable),
    /// SEED the base32 TOTP seed (RFC 6238, SHA-1, 30 s, 6 digits).
    #[arg(long, value_name = "USERNAME:SEED:PASSWORD", value_parser = parse_triple)]
    totp_subscriber: Vec<(String, String, String)>,

    /// Report numbers as strings in token answers ("expires_in":"3600").
    #[arg(long)]
    numbers_as_strings: bool,

    /// Shape of v1 token answers: standard, or v44.0 (adds client_id, an epoch-string
    /// expires, rate_limit "0", login, user_email, displayName) [default: standard].
    #[arg(long, value_name = "SHAPE")]
    v1_answer: Option<V1Answer>,

    /// Client credentials: body-only (the fields), basic-or-body (HTTP Basic if sent, else
    /// the fields) or basic-only (HTTP Basic, else a bad client) [default: body-only].
    #[arg(long, value_name = "MODE")]
    client_auth: Option<ClientAuth>,

    /// Lifetime of MFA intermediate tokens (at most --token-ttl) [default: 300s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    mfa_token_ttl: Option<Duration>,

    /// Lifetime of v2/jwt JWTs [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    jwt_ttl: Option<Duration>,

    /// v2/jwt answers carry a single-use refresh JWT (the 45.0 edition).
    #[arg(long)]
    jwt_refresh: bool,

    /// v2/jwt answers set a session cookie of this name.
    #[arg(long, value_name = "NAME")]
    jwt_cookie: Option<String>,

    /// With --jwt-cookie, requests that present a JWT without its cookie are refused 401.
    #[arg(long)]
    jwt_cookie_required: bool,

    /// A fault active from the start, as JSON (repeatable), e.g.
    /// '{"type":"status","status":503,"count":2}', with "times" and "node" if wanted; see
    /// FAULTS below (--help).
    #[arg(long, value_name = "JSON")]
    fault: Vec<FaultEntry>,

    /// Log filter (tracing EnvFilter syntax), also read from RUST_LOG. Tokens and passwords
    /// are never logged.
    #[arg(long, value_name = "FILTER", env = "RUST_LOG", default_value = "info")]
    log: String,
}

/// Split `A:B` at the first colon (passwords may contain colons, usernames do not).
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err("expected NAME:SECRET".to_owned()),
    }
}

/// Split `A:B:C` at the first two colons (the password, last, may contain colons).
fn parse_triple(s: &str) -> Result<(String, String, String), String> {
    let (a, rest) = parse_pair(s)?;
    match rest.split_once(':') {
        Some((b, c)) if !b.is_empty() => Ok((a, b.to_owned(), c.to_owned())),
        _ => Err("expected USERNAME:SEED:PASSWORD".to_owned()),
    }
}

fn build_config(cli: Cli) -> Result<SimConfig, String> {
    let mut c = match &cli.config {
        Some(path) => SimConfig::from_json_file(path)?,
        None => SimConfig::new().listen(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    if let Some(v) = cli.listen {
        c = c.listen(v);
    }
    if let Some(v) = cli.nodes {
        c = c.nodes(usize::from(v));
    }
    if cli.tls {
        c = c.tls();
    }
    if cli.tls_untrusted {
        c = c.tls_untrusted(true);
    }
    if cli.tls_ca_file.is_some() && !c.tls {
        return Err("--tls-ca-file needs --tls".into());
    }
    if let Some(v) = &cli.base_path {
        c = c.base_path(v);
    }
    if let Some(v) = cli.token_ttl {
        c = c.token_ttl(v);
    }
    if let Some(v) = cli.refresh_mode {
        c = c.refresh_mode(v);
    }
    if let Some(v) = cli.refresh_token_ttl {
        c = c.refresh_token_ttl(Some(v));
    }
    if cli.password_grant_revokes_previous {
        c = c.password_grant_revokes_previous(true);
    }
    if cli.no_v2 {
        c = c.v2_enabled(false);
    }
    if let Some(v) = cli.v2_absent_status {
        c = c.v2_absent_status(v);
    }
    let (client_status, refresh_status, body) = (
        cli.bad_client_status.unwrap_or(c.bad_client_status),
        cli.bad_refresh_status.unwrap_or(c.bad_refresh_status),
        cli.error_body.unwrap_or(c.error_body),
    );
    c = c.errors(client_status, refresh_status, body);
    if let Some(v) = &cli.api_version {
        c = c.api_version(v);
    }
    for (id, secret) in &cli.client {
        c = c.client(id, secret);
    }
    for (user, password) in &cli.subscriber {
        c = c.subscriber(Subscriber::new(user, password));
    }
    for (user, password) in &cli.mfa_subscriber {
        c = c.subscriber(Subscriber::new(user, password).with_mfa(true));
    }
    for (user, seed, password) in &cli.totp_subscriber {
        if nsapi_sim::totp::decode_seed(seed).is_none() {
            return Err(format!("--totp-subscriber {user}: the seed is not base32"));
        }
        c = c.subscriber(Subscriber::new(user, password).with_totp_seed(seed));
    }
    if cli.numbers_as_strings {
        c = c.numbers_as_strings(true);
    }
    if let Some(v) = cli.v1_answer {
        c = c.v1_answer(v);
    }
    if let Some(v) = cli.client_auth {
        c = c.client_auth(v);
    }
    if let Some(v) = cli.mfa_token_ttl {
        c = c.mfa_token_ttl(v);
    }
    if let Some(v) = cli.jwt_ttl {
        c = c.jwt_ttl(v);
    }
    if cli.jwt_refresh {
        c = c.jwt_refresh(true);
    }
    if cli.jwt_cookie.is_some() || cli.jwt_cookie_required {
        let name = cli
            .jwt_cookie
            .clone()
            .unwrap_or_else(|| c.jwt_cookie.clone());
        if name.is_empty() {
            return Err("--jwt-cookie-required needs --jwt-cookie NAME".into());
        }
        if !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        {
            return Err(format!(
                "--jwt-cookie {name:?}: letters, digits, '_', '-' and '.' only"
            ));
        }
        let required = cli.jwt_cookie_required || c.jwt_cookie_required;
        c = c.jwt_cookie(&name, required);
    }
    for f in cli.fault {
        c = c.fault_entry(f);
    }
    Ok(c)
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ca_file = cli.tls_ca_file.clone();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::new(match cli.log.trim() {
            "" => "info",
            filter => filter,
        }))
        .init();
    let config = match build_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nsapi-sim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (clients, subscribers) = (config.clients.len(), config.subscribers.len());
    let sim = match Sim::start(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("nsapi-sim: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let (Some(path), Some(pem)) = (&ca_file, sim.ca_pem())
        && let Err(e) = std::fs::write(path, pem)
    {
        eprintln!("nsapi-sim: cannot write {}: {e}", path.display());
        return std::process::ExitCode::FAILURE;
    }
    for node in sim.nodes() {
        println!("{}", node.base_url());
    }
    let _ = std::io::stdout().flush();
    for node in sim.nodes() {
        tracing::info!(
            node = node.index(),
            base_url = %node.base_url(),
            admin_url = %node.admin_url(),
            clients,
            subscribers,
            "nsapi-sim listening"
        );
    }
    stop_signal().await;
    tracing::info!("stopping");
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
