//! The simulator's state: clients, subscribers, tokens, settings, faults and counters, and the
//! OAuth2 grant rules. Pure: every operation takes `now` as a value, and nothing here does I/O.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::duration::{
    serde_duration, serde_opt_duration, serde_some_duration, serde_some_opt_duration,
};
use crate::fault::ActiveFaults;
use crate::jwt;
use crate::model::{ClientAuth, ErrorBody, RefreshMode, Stats, Subscriber, V1Answer};
use crate::totp;

/// Settings that can change while the simulator runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    #[serde(with = "serde_duration")]
    pub token_ttl: Duration,
    pub refresh_mode: RefreshMode,
    #[serde(with = "serde_opt_duration")]
    pub refresh_token_ttl: Option<Duration>,
    pub password_grant_revokes_previous: bool,
    pub v2_enabled: bool,
    pub v2_absent_status: u16,
    pub bad_client_status: u16,
    pub bad_refresh_status: u16,
    pub error_body: ErrorBody,
    pub api_version: String,
    /// With TLS, serve the certificate of the unknown CA instead of the test CA's.
    pub tls_untrusted: bool,
    /// Report numbers as strings in token answers (`"expires_in":"3600"`).
    pub numbers_as_strings: bool,
    /// The shape of successful v1 token answers.
    pub v1_answer: V1Answer,
    /// How token endpoints take the client id and secret.
    pub client_auth: ClientAuth,
    /// The lifetime of an MFA intermediate token (at most `token_ttl`).
    #[serde(with = "serde_duration")]
    pub mfa_token_ttl: Duration,
    /// The lifetime of a `v2/jwt` JWT.
    #[serde(with = "serde_duration")]
    pub jwt_ttl: Duration,
    /// `v2/jwt` answers carry a single-use refresh JWT (the 45.0 edition).
    pub jwt_refresh: bool,
    /// The name of the session cookie a `v2/jwt` answer sets (`""`: none).
    pub jwt_cookie: String,
    /// Requests that present a JWT must send its session cookie back (else 401).
    pub jwt_cookie_required: bool,
}

impl Settings {
    /// The defaults of [`crate::SimConfig::new`].
    pub fn defaults() -> Self {
        Settings {
            token_ttl: Duration::from_secs(3600),
            refresh_mode: RefreshMode::Same,
            refresh_token_ttl: None,
            password_grant_revokes_previous: false,
            v2_enabled: true,
            v2_absent_status: 404,
            bad_client_status: 401,
            bad_refresh_status: 400,
            error_body: ErrorBody::OAuth,
            api_version: "Version: 44.1.0".into(),
            tls_untrusted: false,
            numbers_as_strings: false,
            v1_answer: V1Answer::Standard,
            client_auth: ClientAuth::BodyOnly,
            mfa_token_ttl: Duration::from_secs(300),
            jwt_ttl: Duration::from_secs(86_400),
            jwt_refresh: false,
            jwt_cookie: String::new(),
            jwt_cookie_required: false,
        }
    }
}

/// Any subset of the [`Settings`], as the config file and the admin API read it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsPatch {
    #[serde(default, with = "serde_some_duration")]
    pub token_ttl: Option<Duration>,
    pub refresh_mode: Option<RefreshMode>,
    #[serde(default, with = "serde_some_opt_duration")]
    pub refresh_token_ttl: Option<Option<Duration>>,
    pub password_grant_revokes_previous: Option<bool>,
    pub v2_enabled: Option<bool>,
    pub v2_absent_status: Option<u16>,
    pub bad_client_status: Option<u16>,
    pub bad_refresh_status: Option<u16>,
    pub error_body: Option<ErrorBody>,
    pub api_version: Option<String>,
    pub tls_untrusted: Option<bool>,
    pub numbers_as_strings: Option<bool>,
    pub v1_answer: Option<V1Answer>,
    pub client_auth: Option<ClientAuth>,
    #[serde(default, with = "serde_some_duration")]
    pub mfa_token_ttl: Option<Duration>,
    #[serde(default, with = "serde_some_duration")]
    pub jwt_ttl: Option<Duration>,
    pub jwt_refresh: Option<bool>,
    pub jwt_cookie: Option<String>,
    pub jwt_cookie_required: Option<bool>,
}

impl SettingsPatch {
    /// Check the statuses it carries are HTTP statuses (100..=599).
    pub fn validate(&self) -> Result<(), String> {
        for status in [
            self.v2_absent_status,
            self.bad_client_status,
            self.bad_refresh_status,
        ]
        .into_iter()
        .flatten()
        {
            if !(100..=599).contains(&status) {
                return Err(format!("status {status} is not an HTTP status"));
            }
        }
        if let Some(name) = &self.jwt_cookie
            && !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!(
                "cookie name {name:?}: letters, digits, '_', '-' and '.' only"
            ));
        }
        Ok(())
    }

    /// Set the fields present, raising the access-token lifetime to at least [`MIN_TTL`].
    pub fn apply(self, s: &mut Settings) {
        if let Some(v) = self.token_ttl {
            s.token_ttl = v.max(MIN_TTL);
        }
        if let Some(v) = self.refresh_mode {
            s.refresh_mode = v;
        }
        if let Some(v) = self.refresh_token_ttl {
            s.refresh_token_ttl = v;
        }
        if let Some(v) = self.password_grant_revokes_previous {
            s.password_grant_revokes_previous = v;
        }
        if let Some(v) = self.v2_enabled {
            s.v2_enabled = v;
        }
        if let Some(v) = self.v2_absent_status {
            s.v2_absent_status = v;
        }
        if let Some(v) = self.bad_client_status {
            s.bad_client_status = v;
        }
        if let Some(v) = self.bad_refresh_status {
            s.bad_refresh_status = v;
        }
        if let Some(v) = self.error_body {
            s.error_body = v;
        }
        if let Some(v) = self.api_version {
            s.api_version = v;
        }
        if let Some(v) = self.tls_untrusted {
            s.tls_untrusted = v;
        }
        if let Some(v) = self.numbers_as_strings {
            s.numbers_as_strings = v;
        }
        if let Some(v) = self.v1_answer {
            s.v1_answer = v;
        }
        if let Some(v) = self.client_auth {
            s.client_auth = v;
        }
        if let Some(v) = self.mfa_token_ttl {
            s.mfa_token_ttl = v.max(MIN_TTL);
        }
        if let Some(v) = self.jwt_ttl {
            s.jwt_ttl = v.max(MIN_TTL);
        }
        if let Some(v) = self.jwt_refresh {
            s.jwt_refresh = v;
        }
        if let Some(v) = self.jwt_cookie {
            s.jwt_cookie = v;
        }
        if let Some(v) = self.jwt_cookie_required {
            s.jwt_cookie_required = v;
        }
    }
}

/// The shortest access-token lifetime the simulator issues.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(1);

struct AccessToken {
    client_id: String,
    username: String,
    expires_at: Instant,
    expires_wall: SystemTime,
    refresh: Option<String>,
    revoked: bool,
    /// An MFA intermediate token (revoked once used for the second step).
    mfa: bool,
}

/// A JWT handed out by `v2/jwt`.
struct JwtRecord {
    token: String,
    username: String,
    expires_at: Instant,
    revoked: bool,
    /// A refresh JWT (single use), not an access JWT.
    refresh: bool,
    /// The session cookie value it was issued with.
    session: Option<String>,
}

struct RefreshToken {
    username: String,
    client_id: String,
    expires_at: Option<Instant>,
    revoked: bool,
    consumed: bool,
}

/// The grant fields of a token request, decoded, whatever way they were sent.
#[derive(Debug, Default)]
pub(crate) struct GrantRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    /// The MFA second step's fields.
    pub passcode: Option<String>,
    pub mfa_vendor: Option<String>,
    pub mfa_type: Option<String>,
    pub access_token: Option<String>,
    /// `Authorization: Basic` client credentials, decoded.
    pub basic: Option<(String, String)>,
}

impl GrantRequest {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut r = GrantRequest::default();
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "grant_type" => &mut r.grant_type,
                "client_id" => &mut r.client_id,
                "client_secret" => &mut r.client_secret,
                "username" => &mut r.username,
                "password" => &mut r.password,
                "refresh_token" => &mut r.refresh_token,
                "passcode" => &mut r.passcode,
                "mfa_vendor" => &mut r.mfa_vendor,
                "mfa_type" => &mut r.mfa_type,
                "access_token" => &mut r.access_token,
                _ => continue,
            };
            *slot = Some(v);
        }
        r
    }

    pub fn grant(&self) -> GrantKind {
        match self.grant_type.as_deref() {
            None => GrantKind::Missing,
            Some("password") => GrantKind::Password,
            Some("refresh_token") => GrantKind::Refresh,
            Some("mfa") => GrantKind::Mfa,
            Some(_) => GrantKind::Other,
        }
    }
}

/// The grant type of a request, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrantKind {
    Password,
    Refresh,
    Mfa,
    Other,
    Missing,
}

impl GrantKind {
    pub fn label(self) -> &'static str {
        match self {
            GrantKind::Password => "password",
            GrantKind::Refresh => "refresh_token",
            GrantKind::Mfa => "mfa",
            GrantKind::Other => "other",
            GrantKind::Missing => "-",
        }
    }
}

/// A token the server hands out.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    pub subscriber: Subscriber,
    pub client_id: String,
    pub mfa: bool,
    /// When the token expires (the wall clock).
    pub expires_wall: SystemTime,
}

/// A JWT pair handed out by `v2/jwt`.
#[derive(Clone, Debug)]
pub(crate) struct JwtIssued {
    pub token: String,
    pub refresh: Option<String>,
    /// The session cookie value to set, if the simulator sets one.
    pub session: Option<String>,
}

/// What a `v2/jwt` login gives: a JWT, or an MFA user's intermediate token.
#[derive(Clone, Debug)]
pub(crate) enum JwtLogin {
    Jwt(JwtIssued),
    Mfa(Box<Issued>),
}

/// A valid access JWT: its claims and the session cookie it was issued with.
#[derive(Clone, Debug)]
pub(crate) struct JwtInfo {
    pub claims: Value,
    pub session: Option<String>,
}

/// Why a grant was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GrantError {
    InvalidRequest(&'static str),
    UnsupportedGrantType,
    InvalidClient,
    InvalidCredentials,
    /// A bad refresh token; `reason` is the stats result key.
    InvalidGrant {
        reason: &'static str,
    },
    /// A refused MFA second step; `reason` is the stats result key.
    Mfa {
        reason: &'static str,
    },
}

impl GrantError {
    pub fn result_key(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
            GrantError::InvalidClient => "invalid_client",
            GrantError::InvalidCredentials => "invalid_credentials",
            GrantError::InvalidGrant { reason } | GrantError::Mfa { reason } => reason,
        }
    }

    /// The OAuth2 `error` code.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
            GrantError::InvalidClient => "invalid_client",
            GrantError::InvalidCredentials
            | GrantError::InvalidGrant { .. }
            | GrantError::Mfa { .. } => "invalid_grant",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(m) => m,
            GrantError::UnsupportedGrantType => "The grant type is unsupported",
            GrantError::InvalidClient => "The client credentials are invalid",
            GrantError::InvalidCredentials => "Invalid username and password combination",
            GrantError::InvalidGrant {
                reason: "refresh_expired",
            } => "Refresh token has expired",
            GrantError::InvalidGrant { .. } => "Invalid refresh token",
            GrantError::Mfa {
                reason: "mfa_passcode",
            } => "Invalid MFA passcode",
            GrantError::Mfa {
                reason: "mfa_passcode_reused",
            } => "MFA passcode already used",
            GrantError::Mfa {
                reason: "mfa_not_enrolled",
            } => "MFA is not set up for this user",
            GrantError::Mfa { .. } => "Invalid or expired MFA token",
        }
    }

    pub fn status(&self, settings: &Settings) -> u16 {
        match self {
            GrantError::InvalidRequest(_) | GrantError::UnsupportedGrantType => 400,
            GrantError::InvalidClient => settings.bad_client_status,
            GrantError::InvalidCredentials => 401,
            GrantError::InvalidGrant { .. } => settings.bad_refresh_status,
            GrantError::Mfa {
                reason: "mfa_passcode" | "mfa_passcode_reused",
            } => 401,
            GrantError::Mfa { .. } => 403,
        }
    }
}

/// What `oauth2/read` reports about a valid token.
#[derive(Clone, Debug)]
pub(crate) struct TokenInfo {
    pub token: String,
    pub client_id: String,
    pub subscriber: Subscriber,
    pub expires_wall: SystemTime,
}

/// Why a token is not valid (the stats result key).
pub(crate) type Invalid = &'static str;

pub(crate) struct Store {
    pub settings: Settings,
    pub faults: ActiveFaults,
    /// The counters of every node together.
    stats: Stats,
    /// The counters of each node, by index.
    node_stats: Vec<Stats>,
    clients: HashMap<String, String>,
    subscribers: HashMap<String, Subscriber>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    /// The TOTP steps whose passcode each user has used (each is accepted once).
    used_steps: HashMap<String, HashSet<u64>>,
    /// JWTs by `jti`, and the key that signs them (made at start).
    jwts: HashMap<String, JwtRecord>,
    jwt_key: hmac::Key,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn new_token(bytes: usize) -> String {
    let raw: [u8; 32] = rand::random();
    raw[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    pub fn new(settings: Settings) -> Self {
        Store {
            settings,
            faults: ActiveFaults::default(),
            stats: Stats::default(),
            node_stats: Vec::new(),
            clients: HashMap::new(),
            subscribers: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            used_steps: HashMap::new(),
            jwts: HashMap::new(),
            jwt_key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
        }
    }

    pub fn add_client(&mut self, id: &str, secret: &str) {
        self.clients.insert(id.to_owned(), secret.to_owned());
    }

    pub fn add_subscriber(&mut self, s: Subscriber) {
        self.subscribers.insert(s.username.clone(), s);
    }

    /// Returns whether the user exists.
    pub fn set_password(&mut self, username: &str, password: &str) -> bool {
        match self.subscribers.get_mut(username) {
            Some(s) => {
                s.password = password.to_owned();
                true
            }
            None => false,
        }
    }

    /// Make room for the counters of node `index`.
    pub fn add_node_stats(&mut self, index: usize) {
        if self.node_stats.len() <= index {
            self.node_stats.resize_with(index + 1, Stats::default);
        }
    }

    /// Update the counters with `f`: those of every node together, and those of `node`.
    pub fn tally(&mut self, node: usize, f: impl Fn(&mut Stats)) {
        f(&mut self.stats);
        self.add_node_stats(node);
        f(&mut self.node_stats[node]);
    }

    /// Count one request on `node` under `endpoint/grant/result`.
    pub fn count(&mut self, node: usize, endpoint: &str, grant: GrantKind, result: &str) {
        let key = format!("{endpoint}/{}/{result}", grant.label());
        self.tally(node, |s| *s.by_key.entry(key.clone()).or_default() += 1);
    }

    /// The counters, with those of each node in `by_node`.
    pub fn stats(&self) -> Stats {
        Stats {
            by_node: self.node_stats.clone(),
            ..self.stats.clone()
        }
    }

    /// The counters of one node (`None` for an unknown node).
    pub fn node_stats(&self, node: usize) -> Option<Stats> {
        self.node_stats.get(node).cloned()
    }

    /// Zero every counter.
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
        for s in &mut self.node_stats {
            *s = Stats::default();
        }
    }

    /// Run a password or refresh grant.
    pub fn grant(
        &mut self,
        req: &GrantRequest,
        reject_refresh: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Issued, GrantError> {
        let kind = req.grant();
        match kind {
            GrantKind::Missing => return Err(GrantError::InvalidRequest("grant_type is required")),
            GrantKind::Other => return Err(GrantError::UnsupportedGrantType),
            GrantKind::Password | GrantKind::Refresh | GrantKind::Mfa => {}
        }
        let client_id = &self.client(req)?;
        match kind {
            GrantKind::Password => {
                let subscriber = self.check_password(req)?;
                let username = &subscriber.username;
                if self.settings.password_grant_revokes_previous {
                    self.revoke_user(username);
                }
                let mfa = subscriber.mfa;
                let refresh = (!mfa).then(|| self.mint_refresh(client_id, username, now));
                return Ok(self.mint_access(client_id, subscriber, refresh, mfa, now, wall));
            }
            GrantKind::Mfa => {
                let subscriber = self.check_mfa(req, client_id, now, wall)?;
                let username = &subscriber.username;
                if self.settings.password_grant_revokes_previous {
                    self.revoke_user(username);
                }
                let refresh = Some(self.mint_refresh(client_id, username, now));
                return Ok(self.mint_access(client_id, subscriber, refresh, false, now, wall));
            }
            _ => {}
        }

        let Some(token) = &req.refresh_token else {
            return Err(GrantError::InvalidRequest("refresh_token is required"));
        };
        if reject_refresh {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_rejected",
            });
        }
        let mode = self.settings.refresh_mode;
        let Some(rt) = self.refresh.get_mut(token) else {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_unknown",
            });
        };
        if &rt.client_id != client_id {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_other_client",
            });
        }
        if rt.revoked {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_revoked",
            });
        }
        if rt.expires_at.is_some_and(|at| now >= at) {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_expired",
            });
        }
        if rt.consumed {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_reused",
            });
        }
        let username = rt.username.clone();
        let Some(subscriber) = self.subscribers.get(&username).cloned() else {
            return Err(GrantError::InvalidGrant {
                reason: "refresh_unknown_user",
            });
        };
        let refresh = match mode {
            RefreshMode::Same | RefreshMode::Omit => token.clone(),
            RefreshMode::Rotate => {
                rt.consumed = true;
                self.mint_refresh(client_id, &username, now)
            }
        };
        let mut issued = self.mint_access(client_id, subscriber, Some(refresh), false, now, wall);
        if mode == RefreshMode::Omit {
            // The new access token stays tied to the refresh token (revoking one revokes the
            // other), but the answer carries none: the client keeps the one it has.
            issued.refresh_token = None;
        }
        Ok(issued)
    }

    /// The client id of a request whose client credentials are good, taken as
    /// `settings.client_auth` says.
    pub fn client(&self, req: &GrantRequest) -> Result<String, GrantError> {
        let body = match (&req.client_id, &req.client_secret) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        let basic = req.basic.as_ref().map(|(id, secret)| (id, secret));
        let creds = match self.settings.client_auth {
            ClientAuth::BodyOnly => body,
            ClientAuth::BasicOrBody => basic.or(body),
            ClientAuth::BasicOnly => basic,
        };
        match creds {
            Some((id, secret)) if self.clients.get(id) == Some(secret) => Ok(id.clone()),
            _ => Err(GrantError::InvalidClient),
        }
    }

    /// The subscriber whose username and password the request carries.
    fn check_password(&self, req: &GrantRequest) -> Result<Subscriber, GrantError> {
        let (Some(username), Some(password)) = (&req.username, &req.password) else {
            return Err(GrantError::InvalidRequest(
                "username and password are required",
            ));
        };
        match self.subscribers.get(username) {
            Some(s) if &s.password == password => Ok(s.clone()),
            _ => Err(GrantError::InvalidCredentials),
        }
    }

    /// Check an MFA second step (`grant_type=mfa`): the password again, the intermediate
    /// token (`access_token`: this user's and client's, unused, unexpired) and the passcode
    /// (RFC 6238 at `wall`, one step either side, each step accepted once per user). On
    /// success the intermediate token is used up.
    fn check_mfa(
        &mut self,
        req: &GrantRequest,
        client_id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Subscriber, GrantError> {
        let subscriber = self.check_password(req)?;
        if req
            .mfa_vendor
            .as_deref()
            .is_some_and(|v| !v.eq_ignore_ascii_case("google"))
        {
            return Err(GrantError::InvalidRequest("mfa_vendor must be google"));
        }
        if req
            .mfa_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("authenticator"))
        {
            return Err(GrantError::InvalidRequest("mfa_type must be authenticator"));
        }
        let code = req.passcode.as_deref().map(str::trim).unwrap_or("");
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GrantError::InvalidRequest("passcode must be 6 digits"));
        }
        let Some(token) = &req.access_token else {
            return Err(GrantError::InvalidRequest(
                "access_token (the MFA token) is required",
            ));
        };
        let mfa = |reason| Err(GrantError::Mfa { reason });
        let Some(key) = subscriber.totp_seed.as_deref().and_then(totp::decode_seed) else {
            return mfa("mfa_not_enrolled");
        };
        let Some(t) = self.access.get(token) else {
            return mfa("mfa_token_unknown");
        };
        if !t.mfa || t.username != subscriber.username || t.client_id != client_id {
            return mfa("mfa_token_mismatch");
        }
        if t.revoked {
            return mfa("mfa_token_used");
        }
        if now >= t.expires_at {
            return mfa("mfa_token_expired");
        }
        let step = totp::step_of(unix_secs(wall));
        let Some(step) = totp::matching_step(&key, code, step) else {
            return mfa("mfa_passcode");
        };
        let used = self
            .used_steps
            .entry(subscriber.username.clone())
            .or_default();
        if !used.insert(step) {
            return mfa("mfa_passcode_reused");
        }
        if let Some(t) = self.access.get_mut(token) {
            t.revoked = true;
        }
        Ok(subscriber)
    }

    fn mint_refresh(&mut self, client_id: &str, username: &str, now: Instant) -> String {
        let token = new_token(16);
        let expires_at = self.settings.refresh_token_ttl.map(|ttl| now + ttl);
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                username: username.to_owned(),
                client_id: client_id.to_owned(),
                expires_at,
                revoked: false,
                consumed: false,
            },
        );
        token
    }

    fn mint_access(
        &mut self,
        client_id: &str,
        subscriber: Subscriber,
        refresh: Option<String>,
        mfa: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Issued {
        let mut ttl = self.settings.token_ttl.max(MIN_TTL);
        if mfa {
            ttl = ttl.min(self.settings.mfa_token_ttl.max(MIN_TTL));
        }
        let token = new_token(18);
        self.access.insert(
            token.clone(),
            AccessToken {
                client_id: client_id.to_owned(),
                username: subscriber.username.clone(),
                expires_at: now + ttl,
                expires_wall: wall + ttl,
                refresh: refresh.clone(),
                revoked: false,
                mfa,
            },
        );
        Issued {
            access_token: token,
            expires_in: ttl.as_secs_f64().ceil() as u64,
            refresh_token: refresh,
            mfa,
            subscriber,
            client_id: client_id.to_owned(),
            expires_wall: wall + ttl,
        }
    }

    fn revoke_user(&mut self, username: &str) {
        for t in self.access.values_mut().filter(|t| t.username == username) {
            t.revoked = true;
        }
        for t in self.refresh.values_mut().filter(|t| t.username == username) {
            t.revoked = true;
        }
    }

    /// What `oauth2/read` answers for this access token.
    pub fn read(&self, token: &str, now: Instant) -> Result<TokenInfo, Invalid> {
        let t = self.access.get(token).ok_or("invalid_token")?;
        if t.revoked {
            return Err("revoked");
        }
        if now >= t.expires_at {
            return Err("expired");
        }
        if t.mfa {
            return Err("mfa_required");
        }
        let subscriber = self
            .subscribers
            .get(&t.username)
            .cloned()
            .ok_or("invalid_token")?;
        Ok(TokenInfo {
            token: token.to_owned(),
            client_id: t.client_id.clone(),
            subscriber,
            expires_wall: t.expires_wall,
        })
    }

    /// Revoke an access token and its refresh token, or a refresh token and the access tokens
    /// issued with it. Returns whether the token was known.
    pub fn revoke(&mut self, token: &str) -> bool {
        if let Some(t) = self.access.get_mut(token) {
            t.revoked = true;
            if let Some(rt) = t.refresh.clone().and_then(|r| self.refresh.get_mut(&r)) {
                rt.revoked = true;
            }
            return true;
        }
        if let Some(rt) = self.refresh.get_mut(token) {
            rt.revoked = true;
            for t in self
                .access
                .values_mut()
                .filter(|t| t.refresh.as_deref() == Some(token))
            {
                t.revoked = true;
            }
            return true;
        }
        if let Some(j) = self.jwt_id(token).and_then(|jti| self.jwts.get_mut(&jti)) {
            j.revoked = true;
            return true;
        }
        false
    }

    /// Make an access or refresh token expire now. Returns whether the token was known.
    pub fn expire(&mut self, token: &str, now: Instant, wall: SystemTime) -> bool {
        if let Some(t) = self.access.get_mut(token) {
            t.expires_at = t.expires_at.min(now);
            t.expires_wall = t.expires_wall.min(wall);
            return true;
        }
        if let Some(rt) = self.refresh.get_mut(token) {
            rt.expires_at = Some(rt.expires_at.map_or(now, |at| at.min(now)));
            return true;
        }
        if let Some(j) = self.jwt_id(token).and_then(|jti| self.jwts.get_mut(&jti)) {
            j.expires_at = j.expires_at.min(now);
            return true;
        }
        false
    }

    /// Every access and refresh token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .cloned()
            .chain(self.jwts.values().map(|j| j.token.clone()))
            .chain(self.jwts.values().filter_map(|j| j.session.clone()))
            .collect()
    }

    pub fn revoke_all_refresh(&mut self) {
        for rt in self.refresh.values_mut() {
            rt.revoked = true;
        }
        for j in self.jwts.values_mut().filter(|j| j.refresh) {
            j.revoked = true;
        }
    }

    /// Whether a token (opaque access token or access JWT) is usable: `oauth2/read`'s rules
    /// for the first, `GET v2/jwt`'s for the second.
    pub fn token_valid(&self, token: &str, now: Instant) -> Result<(), Invalid> {
        match self.read(token, now) {
            Err("invalid_token") if self.jwt_id(token).is_some() => {
                self.check_jwt(token, now).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// The `jti` of a JWT this simulator signed.
    fn jwt_id(&self, token: &str) -> Option<String> {
        let claims = jwt::verify(&self.jwt_key, token)?;
        claims["jti"].as_str().map(str::to_owned)
    }

    /// A password or MFA login on `v2/jwt`: the same checks as on `tokens`; an MFA user's
    /// password step answers an intermediate token, as on `tokens`.
    pub fn jwt_login(
        &mut self,
        req: &GrantRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Result<JwtLogin, GrantError> {
        let client_id = self.client(req)?;
        let subscriber = match req.grant() {
            GrantKind::Password | GrantKind::Missing => {
                let subscriber = self.check_password(req)?;
                if subscriber.mfa {
                    // The intermediate token, as `tokens` answers it.
                    let issued = self.mint_access(&client_id, subscriber, None, true, now, wall);
                    return Ok(JwtLogin::Mfa(Box::new(issued)));
                }
                subscriber
            }
            GrantKind::Mfa => self.check_mfa(req, &client_id, now, wall)?,
            GrantKind::Refresh | GrantKind::Other => {
                return Err(GrantError::UnsupportedGrantType);
            }
        };
        Ok(JwtLogin::Jwt(self.mint_jwt(&subscriber, None, now, wall)))
    }

    /// A refresh on `v2/jwt`: a valid, unused refresh JWT gives a new JWT and a new refresh
    /// JWT; the one used is revoked (single use). The session cookie carries over.
    pub fn jwt_refresh(
        &mut self,
        token: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<JwtIssued, GrantError> {
        let bad = |reason| Err(GrantError::InvalidGrant { reason });
        let Some(jti) = self.jwt_id(token) else {
            return bad("refresh_unknown");
        };
        let Some(j) = self.jwts.get_mut(&jti) else {
            return bad("refresh_unknown");
        };
        if !j.refresh {
            return bad("refresh_not_a_refresh_jwt");
        }
        if j.revoked {
            return bad("refresh_reused");
        }
        if now >= j.expires_at {
            return bad("refresh_expired");
        }
        j.revoked = true;
        let (username, session) = (j.username.clone(), j.session.clone());
        let Some(subscriber) = self.subscribers.get(&username).cloned() else {
            return bad("refresh_unknown_user");
        };
        Ok(self.mint_jwt(&subscriber, session, now, wall))
    }

    fn mint_jwt(
        &mut self,
        s: &Subscriber,
        session: Option<String>,
        now: Instant,
        wall: SystemTime,
    ) -> JwtIssued {
        let session = match session {
            Some(v) => Some(v),
            None if !self.settings.jwt_cookie.is_empty() => Some(new_token(16)),
            None => None,
        };
        let ttl = self.settings.jwt_ttl.max(MIN_TTL);
        let token = self.sign_jwt(s, false, ttl, session.clone(), now, wall);
        let refresh = self.settings.jwt_refresh.then(|| {
            let ttl = self
                .settings
                .refresh_token_ttl
                .unwrap_or(Duration::from_secs(30 * 86_400));
            self.sign_jwt(s, true, ttl, session.clone(), now, wall)
        });
        JwtIssued {
            token,
            refresh,
            session,
        }
    }

    fn sign_jwt(
        &mut self,
        s: &Subscriber,
        refresh: bool,
        ttl: Duration,
        session: Option<String>,
        now: Instant,
        wall: SystemTime,
    ) -> String {
        let jti = new_token(16);
        let iat = unix_secs(wall);
        let claims = json!({
            "iss": "nsapi-sim",
            "sub": s.username,
            "user": s.username.split('@').next().unwrap_or(""),
            "domain": s.domain,
            "territory": s.territory,
            "uid": s.uid,
            "scope": s.scope,
            "token_use": if refresh { "refresh" } else { "access" },
            "iat": iat,
            "exp": iat + ttl.as_secs_f64().ceil() as u64,
            "jti": jti,
        });
        let token = jwt::sign(&self.jwt_key, &claims);
        self.jwts.insert(
            jti,
            JwtRecord {
                token: token.clone(),
                username: s.username.clone(),
                expires_at: now + ttl,
                revoked: false,
                refresh,
                session,
            },
        );
        token
    }

    /// The claims of a valid access JWT (`Err`: `invalid_token`, `revoked`, `expired` or
    /// `refresh_jwt`).
    pub fn check_jwt(&self, token: &str, now: Instant) -> Result<JwtInfo, Invalid> {
        let claims = jwt::verify(&self.jwt_key, token).ok_or("invalid_token")?;
        let jti = claims["jti"].as_str().ok_or("invalid_token")?;
        let j = self.jwts.get(jti).ok_or("invalid_token")?;
        if j.revoked {
            return Err("revoked");
        }
        if now >= j.expires_at {
            return Err("expired");
        }
        if j.refresh {
            return Err("refresh_jwt");
        }
        Ok(JwtInfo {
            claims,
            session: j.session.clone(),
        })
    }

    /// The session of a JWT this simulator signed (`None`: not one of its JWTs).
    pub fn jwt_session(&self, token: &str) -> Option<Option<String>> {
        let jti = self.jwt_id(token)?;
        self.jwts.get(&jti).map(|j| j.session.clone())
    }

    /// Revoke the JWT with this `jti`. Returns whether it was known and not yet revoked.
    pub fn revoke_jwt(&mut self, jti: &str) -> bool {
        match self.jwts.get_mut(jti) {
            Some(j) if !j.revoked => {
                j.revoked = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(mode: RefreshMode) -> Store {
        let mut s = Store::new(Settings {
            token_ttl: Duration::from_secs(60),
            refresh_mode: mode,
            ..Settings::defaults()
        });
        s.add_client("c", "cs");
        s.add_subscriber(Subscriber::new("111@abc", "pw"));
        s
    }

    fn password() -> GrantRequest {
        GrantRequest::from_pairs(
            [
                ("grant_type", "password"),
                ("client_id", "c"),
                ("client_secret", "cs"),
                ("username", "111@abc"),
                ("password", "pw"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
    }

    fn refresh(token: &str) -> GrantRequest {
        GrantRequest::from_pairs(
            [
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
                ("client_secret", "cs"),
                ("refresh_token", token),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
    }

    #[test]
    fn rotate_accepts_each_refresh_token_once() {
        let mut s = store(RefreshMode::Rotate);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let first = s.grant(&password(), false, now, wall).unwrap();
        let rt = first.refresh_token.unwrap();
        let second = s.grant(&refresh(&rt), false, now, wall).unwrap();
        assert_ne!(second.refresh_token.as_deref(), Some(rt.as_str()));
        assert_eq!(
            s.grant(&refresh(&rt), false, now, wall).unwrap_err(),
            GrantError::InvalidGrant {
                reason: "refresh_reused"
            }
        );
    }

    #[test]
    fn omit_answers_no_refresh_token_and_keeps_the_old_one_valid() {
        let mut s = store(RefreshMode::Omit);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let first = s.grant(&password(), false, now, wall).unwrap();
        let rt = first.refresh_token.unwrap();
        for _ in 0..3 {
            let again = s.grant(&refresh(&rt), false, now, wall).unwrap();
            assert_eq!(again.refresh_token, None);
            assert!(s.read(&again.access_token, now).is_ok());
        }
    }

    #[test]
    fn tokens_expire_at_their_lifetime() {
        let mut s = store(RefreshMode::Same);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let t = s.grant(&password(), false, now, wall).unwrap();
        assert_eq!(t.expires_in, 60);
        assert!(
            s.read(&t.access_token, now + Duration::from_secs(59))
                .is_ok()
        );
        assert_eq!(
            s.read(&t.access_token, now + Duration::from_secs(60))
                .unwrap_err(),
            "expired"
        );
    }
}
