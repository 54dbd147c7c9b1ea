//! nsapi-sim: an in-process and stand-alone simulator of the NetSapiens API's OAuth2 endpoints.
//!
//! It plays what `shared/NSAPI.md` documents (v1 `oauth2/token`, `oauth2/read`, v2 `tokens`) and
//! every plausible answer to what that document marks unknown (refresh rotation, error shapes,
//! firewalls, ...). It is a test tool: it is never linked into the operator binary.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nsapi_sim::{Fault, RefreshMode, Sim, SimConfig, Subscriber};
//! let sim = Sim::start(
//!     SimConfig::new()
//!         .client("client-id", "client-secret")
//!         .subscriber(Subscriber::new("111@abc-company", "s3cret"))
//!         .refresh_mode(RefreshMode::Rotate),
//! )
//! .await?;
//! let base = sim.base_url(); // "http://127.0.0.1:PORT/ns-api/"
//! sim.inject(Fault::Status { status: 503, count: 2 });
//! assert_eq!(sim.stats().token_requests, 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How the simulator answers a refresh grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefreshMode {
    /// Return the same refresh token again, which stays usable (the guide's example).
    #[default]
    Same,
    /// Return a new refresh token each time; each refresh token is accepted once only
    /// (reported on newer servers). A second use is rejected and counted in
    /// [`Stats::refresh_token_reuse`].
    Rotate,
}

/// The body shape of a v1 error answer (bad client, bad credentials, bad refresh token).
/// v2 errors are always `{"code":..,"message":..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorBody {
    /// RFC 6749 style `{"error":"invalid_grant","error_description":"..."}` (application/json).
    #[default]
    OAuth,
    /// `{"code":401,"message":"..."}` (application/json), as v2 answers.
    CodeMessage,
    /// A plain text message (text/plain).
    Text,
    /// An HTML error page (text/html).
    Html,
    /// No body at all.
    Empty,
    /// The RFC 6749 JSON, labelled `text/html`.
    JsonAsHtml,
}

/// An OAuth client known to the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
}

/// A subscriber (portal user) that can obtain tokens with the password grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// Login name, matched exactly after form/query decoding (e.g. `111@abc-company`).
    pub username: String,
    /// Password, matched exactly.
    pub password: String,
    /// Scope reported in the token answer (`Basic User`, `Office Manager`, ...).
    pub scope: String,
    /// Domain reported in the token answer.
    pub domain: String,
    /// Territory reported by `oauth2/read` and v2.
    pub territory: String,
    /// User id reported by `oauth2/read` and v2.
    pub uid: String,
    /// MFA enabled: the password grant answers an intermediate `mfa_required` token that
    /// is not valid for anything.
    pub mfa: bool,
}

impl Subscriber {
    /// A subscriber with sensible defaults: scope `Office Manager`, domain = the part after the
    /// `@` (or `default`), territory `territory`, uid `<user>@<domain>`, MFA off.
    pub fn new(username: &str, password: &str) -> Self {
        let _ = (username, password);
        todo!()
    }
}

/// A fault the simulator plays on token requests (v1 `oauth2/token` and v2 `tokens`) unless
/// the variant says otherwise. Inject with [`Sim::inject`] (active until [`Sim::clear_faults`]
/// or, for variants with a `count`, until used up) or [`Sim::inject_times`].
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer `status` (e.g. 500, 502, 503) with an HTML body to the next `count` token requests.
    Status { status: u16, count: u32 },
    /// Answer `status` to each token request with probability `fraction` (0.0..=1.0).
    StatusFraction { status: u16, fraction: f64 },
    /// Delay each token request by this much before answering.
    Latency(Duration),
    /// Never answer token requests (until the server shuts down); the client must time out.
    Hang,
    /// Answer 200 with a truncated JSON document (the grant is processed first, so a rotated
    /// refresh token is consumed).
    MalformedJson,
    /// Keep the status but send an empty body (the grant is processed first).
    EmptyBody,
    /// Send the normal JSON body labelled `Content-Type: text/html`.
    JsonAsHtml,
    /// A web application firewall: once more than `after` token requests arrive within `window`
    /// (a fixed window starting at the first request), answer an HTML 403 until it ends.
    Firewall { after: u32, window: Duration },
    /// Answer 429 with `Retry-After: retry_after_secs` to the next `count` token requests.
    TooManyRequests { retry_after_secs: u64, count: u32 },
    /// Answer `401` with `{"code":401,"message":"Invalid Scope [APP001]"}`.
    InvalidScope,
    /// Reject every refresh grant with the configured bad-refresh status (`invalid_grant`).
    RejectRefresh,
    /// Answer 405 to token requests made with this HTTP method (`GET` or `POST`), as a server
    /// that accepts only one of the two would.
    MethodNotAllowed { method: String },
    /// Answer `status` to the next `count` `oauth2/read` requests (not token requests).
    ReadStatus { status: u16, count: u32 },
}

/// Request counters. `by_key` maps `"endpoint/grant/result"` (e.g. `"token/password/ok"`,
/// `"v2/refresh_token/invalid_grant"`, `"read/-/ok"`, `"token/password/fault_503"`) to a count.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// All requests to any token endpoint (v1 and v2), whatever their outcome.
    pub token_requests: u64,
    /// Token requests with `grant_type=password`.
    pub password_grants: u64,
    /// Password grants answered with a usable token.
    pub password_grants_ok: u64,
    /// Token requests with `grant_type=refresh_token`.
    pub refresh_grants: u64,
    /// Refresh grants answered with a usable token.
    pub refresh_grants_ok: u64,
    /// Attempts to use an already-consumed refresh token (Rotate mode).
    pub refresh_token_reuse: u64,
    /// Requests to `oauth2/read`.
    pub read_requests: u64,
    /// Requests to the v2 `tokens` endpoint (counted in `token_requests` too).
    pub v2_requests: u64,
    /// Counts by `"endpoint/grant/result"`.
    pub by_key: BTreeMap<String, u64>,
}

/// How to start a simulator. Build with [`SimConfig::new`] and the builder methods.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to bind (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Base path of the API, normalised to start with `/` and not end with one (`""` = root).
    pub base_path: String,
    /// Access-token lifetime (at least 1 s).
    pub token_ttl: Duration,
    /// Refresh behaviour.
    pub refresh_mode: RefreshMode,
    /// Refresh-token lifetime (`None`: never expires).
    pub refresh_token_ttl: Option<Duration>,
    /// A new password grant revokes the user's earlier access and refresh tokens.
    pub password_grant_revokes_previous: bool,
    /// Serve v2 `tokens`; when false it answers 404 with an HTML page.
    pub v2_enabled: bool,
    /// Status for a bad client id/secret on v1 (400, 401 or 403).
    pub bad_client_status: u16,
    /// Status for a bad, expired, revoked or reused refresh token on v1 (400, 401 or 403).
    pub bad_refresh_status: u16,
    /// Body shape of v1 error answers.
    pub error_body: ErrorBody,
    /// The `apiversion` string reported (`"Version: 44.1.0"`).
    pub api_version: String,
    /// OAuth clients.
    pub clients: Vec<Client>,
    /// Subscribers.
    pub subscribers: Vec<Subscriber>,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SimConfig {
    /// Listen on 127.0.0.1:0, base path `/ns-api`, TTL 3600 s, refresh mode Same, v2 enabled,
    /// bad client → 401, bad refresh → 400, OAuth-style error bodies, no clients or subscribers.
    pub fn new() -> Self {
        todo!()
    }
    /// Address to bind.
    pub fn listen(self, addr: SocketAddr) -> Self {
        Self {
            listen: addr,
            ..self
        }
    }
    /// Base path (`/ns-api`, `ns-api/`, `/` ...), normalised.
    pub fn base_path(self, p: &str) -> Self {
        let _ = p;
        todo!()
    }
    /// Access-token lifetime (clamped to at least 1 s).
    pub fn token_ttl(self, ttl: Duration) -> Self {
        Self {
            token_ttl: ttl,
            ..self
        }
    }
    /// Refresh behaviour.
    pub fn refresh_mode(self, m: RefreshMode) -> Self {
        Self {
            refresh_mode: m,
            ..self
        }
    }
    /// Refresh-token lifetime (`None`: never expires).
    pub fn refresh_token_ttl(self, ttl: Option<Duration>) -> Self {
        Self {
            refresh_token_ttl: ttl,
            ..self
        }
    }
    /// A new password grant revokes the user's earlier tokens.
    pub fn password_grant_revokes_previous(self, yes: bool) -> Self {
        Self {
            password_grant_revokes_previous: yes,
            ..self
        }
    }
    /// Serve v2 (`true`) or answer it 404 with HTML (`false`).
    pub fn v2_enabled(self, yes: bool) -> Self {
        Self {
            v2_enabled: yes,
            ..self
        }
    }
    /// Status and body shape of v1 errors for a bad client and for a bad refresh token.
    pub fn errors(self, bad_client_status: u16, bad_refresh_status: u16, body: ErrorBody) -> Self {
        Self {
            bad_client_status,
            bad_refresh_status,
            error_body: body,
            ..self
        }
    }
    /// Add an OAuth client.
    pub fn client(mut self, id: &str, secret: &str) -> Self {
        self.clients.push(Client {
            id: id.into(),
            secret: secret.into(),
        });
        self
    }
    /// Add a subscriber.
    pub fn subscriber(mut self, s: Subscriber) -> Self {
        self.subscribers.push(s);
        self
    }
    /// Add a fault active from the start.
    pub fn fault(mut self, f: Fault) -> Self {
        self.faults.push(f);
        self
    }
}

/// A running simulator. Cheap to clone; the server stops on [`Sim::shutdown`] or when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Sim {
    _private: (),
}

impl Sim {
    /// Bind and start serving in the current tokio runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let _ = config;
        todo!()
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        todo!()
    }
    /// `http://ADDR/ns-api/` (with the configured base path and a trailing slash).
    pub fn base_url(&self) -> String {
        todo!()
    }
    /// `http://ADDR/_sim/`, the admin API.
    pub fn admin_url(&self) -> String {
        todo!()
    }
    /// Add (or replace) an OAuth client.
    pub fn add_client(&self, id: &str, secret: &str) {
        let _ = (id, secret);
        todo!()
    }
    /// Add (or replace, by username) a subscriber.
    pub fn add_subscriber(&self, s: Subscriber) {
        let _ = s;
        todo!()
    }
    /// Change a subscriber's password (no-op for an unknown user). Existing tokens stay valid.
    pub fn set_password(&self, username: &str, password: &str) {
        let _ = (username, password);
        todo!()
    }
    /// Change the refresh behaviour for refresh grants from now on.
    pub fn set_refresh_mode(&self, m: RefreshMode) {
        let _ = m;
        todo!()
    }
    /// Change the lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        let _ = ttl;
        todo!()
    }
    /// Enable or disable (404 HTML) v2.
    pub fn set_v2_enabled(&self, yes: bool) {
        let _ = yes;
        todo!()
    }
    /// Activate a fault (see [`Fault`] for how long each lasts).
    pub fn inject(&self, fault: Fault) {
        let _ = fault;
        todo!()
    }
    /// Activate a fault for the next `times` requests it applies to only.
    pub fn inject_times(&self, fault: Fault, times: u32) {
        let _ = (fault, times);
        todo!()
    }
    /// Remove every active fault.
    pub fn clear_faults(&self) {
        todo!()
    }
    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        todo!()
    }
    /// Zero the request counters.
    pub fn reset_stats(&self) {
        todo!()
    }
    /// Whether this access token would be accepted by `oauth2/read` right now (known, not
    /// expired, not revoked, not an MFA intermediate token).
    pub fn is_token_valid(&self, access_token: &str) -> bool {
        let _ = access_token;
        todo!()
    }
    /// Revoke an access token (and its refresh token), or a refresh token (and its access token).
    pub fn revoke_token(&self, token: &str) {
        let _ = token;
        todo!()
    }
    /// Make an access token (or a refresh token) expire now.
    pub fn expire_token(&self, token: &str) {
        let _ = token;
        todo!()
    }
    /// Revoke every refresh token issued so far, so each refresh grant with one of them fails
    /// (tokens issued later work; use [`Fault::RejectRefresh`] to reject all refreshes).
    pub fn revoke_refresh_tokens(&self) {
        todo!()
    }
    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(self) {
        todo!()
    }
}
