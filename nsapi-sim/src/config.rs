//! How a simulator starts: [`SimConfig`], built in Rust or read from a JSON config file.
//! A description only: it starts nothing and holds no running state ([`crate::Sim::start`] does).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::{serde_some_duration, serde_some_opt_duration};
use crate::fault::{Fault, FaultEntry};
use crate::model::{Client, ClientAuth, ErrorBody, RefreshMode, Subscriber, V1Answer};
use crate::store::{MIN_TTL, Settings, SettingsPatch};

/// How to start a simulator. Build with [`SimConfig::new`] and the builder methods, or read a
/// JSON file with [`SimConfig::from_json_file`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to bind node 0 to (port 0 picks a free one).
    pub listen: SocketAddr,
    /// How many nodes (listeners over the one store) to start, at least 1. Node `i` binds the
    /// same IP as node 0, on a free port if `listen`'s port is 0, else on that port plus `i`.
    pub nodes: usize,
    /// Serve HTTPS (every node) with a certificate from a test CA made at start.
    pub tls: bool,
    /// With TLS, serve a certificate from another, unknown CA instead.
    pub tls_untrusted: bool,
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
    /// Serve v2 `tokens`; when false it answers [`SimConfig::v2_absent_status`] with an HTML
    /// page.
    pub v2_enabled: bool,
    /// The status `/v2/tokens` answers, with an HTML page, while v2 is disabled (404; a
    /// front end may answer unknown paths 403, 500, 502 or 503 instead).
    pub v2_absent_status: u16,
    /// Status for a bad client id/secret on v1 and v2 (400, 401 or 403).
    pub bad_client_status: u16,
    /// Status for a bad, expired, revoked or reused refresh token (400, 401 or 403).
    pub bad_refresh_status: u16,
    /// Body shape of v1 error answers (v2 always answers `{"code","message"}`).
    pub error_body: ErrorBody,
    /// The `apiversion` string reported (`"Version: 44.1.0"`).
    pub api_version: String,
    /// Report numbers as strings in token answers (`"expires_in":"3600"`).
    pub numbers_as_strings: bool,
    /// The shape of successful v1 token answers.
    pub v1_answer: V1Answer,
    /// How token endpoints take the client id and secret.
    pub client_auth: ClientAuth,
    /// Lifetime of an MFA intermediate token, at most `token_ttl` (300 s).
    pub mfa_token_ttl: Duration,
    /// Lifetime of a `v2/jwt` JWT (24 h).
    pub jwt_ttl: Duration,
    /// `v2/jwt` answers carry a single-use refresh JWT (off).
    pub jwt_refresh: bool,
    /// The name of the session cookie `v2/jwt` answers set (`""`: none).
    pub jwt_cookie: String,
    /// Requests that present a JWT must send its session cookie back, else 401 (off).
    pub jwt_cookie_required: bool,
    /// OAuth clients.
    pub clients: Vec<Client>,
    /// Subscribers.
    pub subscribers: Vec<Subscriber>,
    /// Faults active from the start, each with an optional limit.
    pub(crate) faults: Vec<FaultEntry>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SimConfig {
    /// Listen on 127.0.0.1:0 (one node, plain HTTP), base path `/ns-api`, TTL 3600 s, refresh mode Same, no refresh
    /// token lifetime, v2 enabled (404 when disabled), bad client → 401, bad refresh → 400, OAuth-style error
    /// bodies, `apiversion` `Version: 44.1.0`, numbers as numbers, the standard v1 answer, client
    /// credentials in the fields only, MFA tokens for 300 s, JWTs for 24 h without refresh JWT
    /// or cookie, no clients, subscribers or faults.
    pub fn new() -> Self {
        let d = Settings::defaults();
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 1,
            tls: false,
            base_path: "/ns-api".into(),
            clients: Vec::new(),
            subscribers: Vec::new(),
            faults: Vec::new(),
            token_ttl: d.token_ttl,
            refresh_mode: d.refresh_mode,
            refresh_token_ttl: d.refresh_token_ttl,
            password_grant_revokes_previous: d.password_grant_revokes_previous,
            v2_enabled: d.v2_enabled,
            v2_absent_status: d.v2_absent_status,
            bad_client_status: d.bad_client_status,
            bad_refresh_status: d.bad_refresh_status,
            error_body: d.error_body,
            api_version: d.api_version,
            tls_untrusted: d.tls_untrusted,
            numbers_as_strings: d.numbers_as_strings,
            v1_answer: d.v1_answer,
            client_auth: d.client_auth,
            mfa_token_ttl: d.mfa_token_ttl,
            jwt_ttl: d.jwt_ttl,
            jwt_refresh: d.jwt_refresh,
            jwt_cookie: d.jwt_cookie,
            jwt_cookie_required: d.jwt_cookie_required,
        }
    }

    /// Address to bind.
    pub fn listen(self, addr: SocketAddr) -> Self {
        Self {
            listen: addr,
            ..self
        }
    }

    /// Start `n` nodes (at least 1): listeners sharing one store, for failover tests.
    pub fn nodes(self, n: usize) -> Self {
        Self {
            nodes: n.max(1),
            ..self
        }
    }

    /// Serve HTTPS on every node, with a server certificate for `localhost`, `127.0.0.1` and
    /// `::1` from a CA made at start ([`crate::Sim::ca_pem`]).
    pub fn tls(self) -> Self {
        Self { tls: true, ..self }
    }

    /// With TLS, serve a certificate from another, unknown CA
    /// ([`crate::Sim::untrusted_ca_pem`]) instead, so clients trusting the test CA fail.
    pub fn tls_untrusted(self, yes: bool) -> Self {
        Self {
            tls_untrusted: yes,
            ..self
        }
    }

    /// Base path (`/ns-api`, `ns-api/`, `/` for the root, ...), normalised.
    pub fn base_path(self, p: &str) -> Self {
        Self {
            base_path: normalise_base(p),
            ..self
        }
    }

    /// Access-token lifetime (raised to 1 s if shorter).
    pub fn token_ttl(self, ttl: Duration) -> Self {
        Self {
            token_ttl: ttl.max(MIN_TTL),
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

    /// The status `/v2/tokens` answers with an HTML page while v2 is disabled (default 404).
    pub fn v2_absent_status(self, status: u16) -> Self {
        Self {
            v2_absent_status: status,
            ..self
        }
    }

    /// Status for a bad client and for a bad refresh token, and the body shape of v1 errors.
    pub fn errors(self, bad_client_status: u16, bad_refresh_status: u16, body: ErrorBody) -> Self {
        Self {
            bad_client_status,
            bad_refresh_status,
            error_body: body,
            ..self
        }
    }

    /// The `apiversion` string reported.
    pub fn api_version(self, v: &str) -> Self {
        Self {
            api_version: v.into(),
            ..self
        }
    }

    /// Report numbers as strings in token answers (`"expires_in":"3600"`), as some portals do.
    pub fn numbers_as_strings(self, yes: bool) -> Self {
        Self {
            numbers_as_strings: yes,
            ..self
        }
    }

    /// The shape of successful v1 token answers ([`V1Answer::V44_0`]: a 44.0.x portal's).
    pub fn v1_answer(self, shape: V1Answer) -> Self {
        Self {
            v1_answer: shape,
            ..self
        }
    }

    /// How token endpoints take the client id and secret (HTTP Basic or the fields).
    pub fn client_auth(self, mode: ClientAuth) -> Self {
        Self {
            client_auth: mode,
            ..self
        }
    }

    /// Lifetime of MFA intermediate tokens (raised to 1 s; at most the token lifetime).
    pub fn mfa_token_ttl(self, ttl: Duration) -> Self {
        Self {
            mfa_token_ttl: ttl.max(MIN_TTL),
            ..self
        }
    }

    /// Lifetime of `v2/jwt` JWTs (raised to 1 s; 24 h by default).
    pub fn jwt_ttl(self, ttl: Duration) -> Self {
        Self {
            jwt_ttl: ttl.max(MIN_TTL),
            ..self
        }
    }

    /// `v2/jwt` answers carry a single-use refresh JWT (the 45.0 edition).
    pub fn jwt_refresh(self, yes: bool) -> Self {
        Self {
            jwt_refresh: yes,
            ..self
        }
    }

    /// `v2/jwt` answers set a session cookie of this name (`""`: none); with `required`,
    /// requests that present a JWT without it are refused 401.
    pub fn jwt_cookie(self, name: &str, required: bool) -> Self {
        Self {
            jwt_cookie: name.to_owned(),
            jwt_cookie_required: required,
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

    /// Add a fault active from the start (see [`Fault`] for how long each lasts).
    pub fn fault(mut self, f: Fault) -> Self {
        self.faults.push(FaultEntry {
            fault: f,
            times: None,
            node: None,
        });
        self
    }

    /// Add a fault for the first `times` requests it applies to.
    pub fn fault_times(mut self, f: Fault, times: u32) -> Self {
        self.faults.push(FaultEntry {
            fault: f,
            times: Some(times),
            node: None,
        });
        self
    }

    /// Add a fault active from the start, with its own limit (`times`) and node (`node`), as
    /// `--fault` reads it.
    pub fn fault_entry(mut self, e: FaultEntry) -> Self {
        self.faults.push(e);
        self
    }

    /// Read a JSON config file (see [`SimConfig::from_json`]).
    pub fn from_json_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse a JSON config. Every field is optional; durations are seconds or strings such as
    /// `"60s"`:
    ///
    /// ```json
    /// {"listen": "127.0.0.1:8080", "nodes": 1, "tls": false, "tls_untrusted": false,
    ///  "base_path": "/ns-api", "token_ttl": "60s",
    ///  "refresh_mode": "rotate", "refresh_token_ttl": "1h",
    ///  "password_grant_revokes_previous": false, "v2_enabled": true, "v2_absent_status": 404,
    ///  "bad_client_status": 401, "bad_refresh_status": 400, "error_body": "oauth",
    ///  "api_version": "Version: 44.1.0", "numbers_as_strings": false, "v1_answer": "standard",
    ///  "client_auth": "body_only", "mfa_token_ttl": "300s", "jwt_ttl": "24h",
    ///  "jwt_refresh": false, "jwt_cookie": "", "jwt_cookie_required": false,
    ///  "clients": [{"id": "client-id", "secret": "client-secret"}],
    ///  "subscribers": [{"username": "111@abc-company", "password": "s3cret",
    ///                   "scope": "Office Manager", "mfa": false, "totp_seed": null}],
    ///  "faults": [{"type": "status", "status": 503, "count": 2}]}
    /// ```
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        file.into_config()
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            token_ttl: self.token_ttl.max(MIN_TTL),
            refresh_mode: self.refresh_mode,
            refresh_token_ttl: self.refresh_token_ttl,
            password_grant_revokes_previous: self.password_grant_revokes_previous,
            v2_enabled: self.v2_enabled,
            v2_absent_status: self.v2_absent_status,
            bad_client_status: self.bad_client_status,
            bad_refresh_status: self.bad_refresh_status,
            error_body: self.error_body,
            api_version: self.api_version.clone(),
            tls_untrusted: self.tls_untrusted,
            numbers_as_strings: self.numbers_as_strings,
            v1_answer: self.v1_answer,
            client_auth: self.client_auth,
            mfa_token_ttl: self.mfa_token_ttl.max(MIN_TTL),
            jwt_ttl: self.jwt_ttl.max(MIN_TTL),
            jwt_refresh: self.jwt_refresh,
            jwt_cookie: self.jwt_cookie.clone(),
            jwt_cookie_required: self.jwt_cookie_required,
        }
    }

    /// Take every setting from `s` (the inverse of [`SimConfig::settings`]).
    fn with_settings(self, s: Settings) -> Self {
        let Settings {
            token_ttl,
            refresh_mode,
            refresh_token_ttl,
            password_grant_revokes_previous,
            v2_enabled,
            v2_absent_status,
            bad_client_status,
            bad_refresh_status,
            error_body,
            api_version,
            tls_untrusted,
            numbers_as_strings,
            v1_answer,
            client_auth,
            mfa_token_ttl,
            jwt_ttl,
            jwt_refresh,
            jwt_cookie,
            jwt_cookie_required,
        } = s;
        SimConfig {
            token_ttl,
            refresh_mode,
            refresh_token_ttl,
            password_grant_revokes_previous,
            v2_enabled,
            v2_absent_status,
            bad_client_status,
            bad_refresh_status,
            error_body,
            api_version,
            tls_untrusted,
            numbers_as_strings,
            v1_answer,
            client_auth,
            mfa_token_ttl,
            jwt_ttl,
            jwt_refresh,
            jwt_cookie,
            jwt_cookie_required,
            ..self
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    nodes: Option<usize>,
    tls: Option<bool>,
    base_path: Option<String>,
    // The settings are declared here rather than flattened from a `SettingsPatch` so that serde's
    // messages (field list, positions) stay those of one struct; they become a patch below.
    #[serde(default, with = "serde_some_duration")]
    token_ttl: Option<Duration>,
    refresh_mode: Option<RefreshMode>,
    #[serde(default, with = "serde_some_opt_duration")]
    refresh_token_ttl: Option<Option<Duration>>,
    password_grant_revokes_previous: Option<bool>,
    v2_enabled: Option<bool>,
    v2_absent_status: Option<u16>,
    bad_client_status: Option<u16>,
    bad_refresh_status: Option<u16>,
    error_body: Option<ErrorBody>,
    api_version: Option<String>,
    tls_untrusted: Option<bool>,
    numbers_as_strings: Option<bool>,
    v1_answer: Option<V1Answer>,
    client_auth: Option<ClientAuth>,
    #[serde(default, with = "serde_some_duration")]
    mfa_token_ttl: Option<Duration>,
    #[serde(default, with = "serde_some_duration")]
    jwt_ttl: Option<Duration>,
    jwt_refresh: Option<bool>,
    jwt_cookie: Option<String>,
    jwt_cookie_required: Option<bool>,
    #[serde(default)]
    clients: Vec<Client>,
    #[serde(default)]
    subscribers: Vec<Subscriber>,
    #[serde(default)]
    faults: Vec<FaultEntry>,
}

impl ConfigFile {
    fn into_config(self) -> Result<SimConfig, String> {
        let mut c = SimConfig::new();
        for f in &self.faults {
            f.fault.validate()?;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.nodes {
            if v == 0 {
                return Err("nodes must be at least 1".into());
            }
            c = c.nodes(v);
        }
        if let Some(v) = self.tls {
            c.tls = v;
        }
        if let Some(node) = self
            .faults
            .iter()
            .find_map(|f| f.node.filter(|n| *n >= c.nodes))
        {
            return Err(format!(
                "a fault names node {node}, but there are {} nodes",
                c.nodes
            ));
        }
        if let Some(v) = self.base_path {
            c = c.base_path(&v);
        }
        let patch = SettingsPatch {
            token_ttl: self.token_ttl,
            refresh_mode: self.refresh_mode,
            refresh_token_ttl: self.refresh_token_ttl,
            password_grant_revokes_previous: self.password_grant_revokes_previous,
            v2_enabled: self.v2_enabled,
            v2_absent_status: self.v2_absent_status,
            bad_client_status: self.bad_client_status,
            bad_refresh_status: self.bad_refresh_status,
            error_body: self.error_body,
            api_version: self.api_version,
            tls_untrusted: self.tls_untrusted,
            numbers_as_strings: self.numbers_as_strings,
            v1_answer: self.v1_answer,
            client_auth: self.client_auth,
            mfa_token_ttl: self.mfa_token_ttl,
            jwt_ttl: self.jwt_ttl,
            jwt_refresh: self.jwt_refresh,
            jwt_cookie: self.jwt_cookie,
            jwt_cookie_required: self.jwt_cookie_required,
        };
        patch.validate()?;
        let mut settings = c.settings();
        patch.apply(&mut settings);
        c = c.with_settings(settings);
        c.clients = self.clients;
        c.subscribers = self.subscribers;
        c.faults = self.faults;
        Ok(c)
    }
}

/// Normalise a base path: leading slash, no trailing slash, `""` for the root.
pub(crate) fn normalise_base(p: &str) -> String {
    let trimmed = p.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_config() {
        let c = SimConfig::from_json(
            r#"{"base_path": "ns-api/", "token_ttl": "60s", "refresh_mode": "rotate",
                "refresh_token_ttl": 120, "error_body": "code_message",
                "clients": [{"id": "c", "secret": "s"}],
                "subscribers": [{"username": "111@abc", "password": "p", "mfa": true}],
                "faults": [{"type": "latency", "delay": "5ms", "times": 3}]}"#,
        )
        .unwrap();
        assert_eq!(c.base_path, "/ns-api");
        assert_eq!(c.token_ttl, Duration::from_secs(60));
        assert_eq!(c.refresh_mode, RefreshMode::Rotate);
        assert_eq!(c.refresh_token_ttl, Some(Duration::from_secs(120)));
        assert_eq!(c.error_body, ErrorBody::CodeMessage);
        assert_eq!(c.subscribers[0].domain, "abc");
        assert!(c.subscribers[0].mfa);
        assert_eq!(c.faults[0].times, Some(3));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_statuses() {
        assert!(SimConfig::from_json(r#"{"token_tll": 5}"#).is_err());
        assert!(SimConfig::from_json(r#"{"bad_client_status": 99}"#).is_err());
        assert!(SimConfig::from_json(r#"{"v2_absent_status": 600}"#).is_err());
        let c = SimConfig::from_json(r#"{"v2_enabled": false, "v2_absent_status": 503}"#).unwrap();
        assert_eq!((c.v2_enabled, c.v2_absent_status), (false, 503));
        assert!(SimConfig::from_json(r#"{"jwt_cookie": "a=b"}"#).is_err());
        assert!(SimConfig::from_json(r#"{"client_auth": "basic"}"#).is_err());
    }

    #[test]
    fn reads_the_portal_settings() {
        let c = SimConfig::from_json(
            r#"{"numbers_as_strings": true, "v1_answer": "v44_0", "client_auth": "basic_only",
                "mfa_token_ttl": "60s", "jwt_ttl": "90s", "jwt_refresh": true,
                "jwt_cookie": "PHPSESSID", "jwt_cookie_required": true,
                "subscribers": [{"username": "m@d", "password": "p",
                                 "totp_seed": "JBSWY3DPEHPK3PXP"}]}"#,
        )
        .unwrap();
        assert!(c.numbers_as_strings && c.jwt_refresh && c.jwt_cookie_required);
        assert_eq!(c.v1_answer, V1Answer::V44_0);
        assert_eq!(c.client_auth, ClientAuth::BasicOnly);
        assert_eq!(c.mfa_token_ttl, Duration::from_secs(60));
        assert_eq!(c.jwt_ttl, Duration::from_secs(90));
        assert_eq!(c.jwt_cookie, "PHPSESSID");
        assert!(c.subscribers[0].mfa);
        assert_eq!(
            c.subscribers[0].totp_seed.as_deref(),
            Some("JBSWY3DPEHPK3PXP")
        );
        let d = SimConfig::new();
        assert_eq!(d.settings().v1_answer, V1Answer::Standard);
        assert_eq!(d.settings().client_auth, ClientAuth::BodyOnly);
    }
}
