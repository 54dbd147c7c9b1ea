//! The simulator's state: clients, subscribers, tokens, settings, faults and counters, and the
//! OAuth2 grant rules. Pure: every operation takes `now` as a value, and nothing here does I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::duration::{
    serde_duration, serde_opt_duration, serde_some_duration, serde_some_opt_duration,
};
use crate::fault::ActiveFaults;
use crate::model::{ErrorBody, RefreshMode, Stats, Subscriber};

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
    mfa: bool,
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
            Some(_) => GrantKind::Other,
        }
    }
}

/// The grant type of a request, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrantKind {
    Password,
    Refresh,
    Other,
    Missing,
}

impl GrantKind {
    pub fn label(self) -> &'static str {
        match self {
            GrantKind::Password => "password",
            GrantKind::Refresh => "refresh_token",
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
}

impl GrantError {
    pub fn result_key(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
            GrantError::InvalidClient => "invalid_client",
            GrantError::InvalidCredentials => "invalid_credentials",
            GrantError::InvalidGrant { reason } => reason,
        }
    }

    /// The OAuth2 `error` code.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
            GrantError::InvalidClient => "invalid_client",
            GrantError::InvalidCredentials | GrantError::InvalidGrant { .. } => "invalid_grant",
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
        }
    }

    pub fn status(&self, settings: &Settings) -> u16 {
        match self {
            GrantError::InvalidRequest(_) | GrantError::UnsupportedGrantType => 400,
            GrantError::InvalidClient => settings.bad_client_status,
            GrantError::InvalidCredentials => 401,
            GrantError::InvalidGrant { .. } => settings.bad_refresh_status,
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
            GrantKind::Password | GrantKind::Refresh => {}
        }
        let (Some(client_id), Some(secret)) = (&req.client_id, &req.client_secret) else {
            return Err(GrantError::InvalidClient);
        };
        if self.clients.get(client_id) != Some(secret) {
            return Err(GrantError::InvalidClient);
        }
        if kind == GrantKind::Password {
            let (Some(username), Some(password)) = (&req.username, &req.password) else {
                return Err(GrantError::InvalidRequest(
                    "username and password are required",
                ));
            };
            let subscriber = match self.subscribers.get(username) {
                Some(s) if &s.password == password => s.clone(),
                _ => return Err(GrantError::InvalidCredentials),
            };
            if self.settings.password_grant_revokes_previous {
                self.revoke_user(username);
            }
            let refresh = (!subscriber.mfa).then(|| self.mint_refresh(client_id, username, now));
            return Ok(self.mint_access(client_id, subscriber, refresh, now, wall));
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
        let mut issued = self.mint_access(client_id, subscriber, Some(refresh), now, wall);
        if mode == RefreshMode::Omit {
            // The new access token stays tied to the refresh token (revoking one revokes the
            // other), but the answer carries none: the client keeps the one it has.
            issued.refresh_token = None;
        }
        Ok(issued)
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
        now: Instant,
        wall: SystemTime,
    ) -> Issued {
        let ttl = self.settings.token_ttl.max(MIN_TTL);
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
                mfa: subscriber.mfa,
            },
        );
        Issued {
            access_token: token,
            expires_in: ttl.as_secs_f64().ceil() as u64,
            refresh_token: refresh,
            mfa: subscriber.mfa,
            subscriber,
            client_id: client_id.to_owned(),
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
        false
    }

    /// Every access and refresh token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.access
            .keys()
            .chain(self.refresh.keys())
            .cloned()
            .collect()
    }

    pub fn revoke_all_refresh(&mut self) {
        for rt in self.refresh.values_mut() {
            rt.revoked = true;
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
            refresh_token_ttl: None,
            password_grant_revokes_previous: false,
            v2_enabled: true,
            v2_absent_status: 404,
            bad_client_status: 401,
            bad_refresh_status: 400,
            error_body: ErrorBody::OAuth,
            api_version: "Version: 44.1.0".into(),
            tls_untrusted: false,
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
