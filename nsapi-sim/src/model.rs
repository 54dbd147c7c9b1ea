//! The public value types: how refreshes and v1 errors are played ([`RefreshMode`],
//! [`ErrorBody`]), who may ask for tokens ([`Client`], [`Subscriber`]) and what was counted
//! ([`Stats`]). Plain data with their parse and JSON forms: no state, no I/O, no other module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the simulator answers a refresh grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshMode {
    /// Return the same refresh token again, which stays usable (the guide's example).
    #[default]
    Same,
    /// Return a new refresh token each time; each refresh token is accepted once only
    /// (reported on newer servers). A second use is rejected and counted in
    /// [`Stats::refresh_token_reuse`].
    Rotate,
    /// Answer refresh grants without a `refresh_token` field; the refresh token used stays
    /// valid and is accepted again (RFC 6749 §6: no new refresh token means keep the old one).
    /// Password grants still return one.
    Omit,
}

impl std::str::FromStr for RefreshMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "same" => Ok(RefreshMode::Same),
            "rotate" => Ok(RefreshMode::Rotate),
            "omit" => Ok(RefreshMode::Omit),
            other => Err(format!(
                "refresh mode {other:?}: expected same, rotate or omit"
            )),
        }
    }
}

/// The body shape of a v1 error answer (bad client, bad credentials, bad refresh token, bad
/// token on `oauth2/read`). v2 errors are always `{"code":..,"message":..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorBody {
    /// RFC 6749 style `{"error":"invalid_grant","error_description":"..."}` (application/json).
    #[default]
    #[serde(rename = "oauth")]
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

impl std::str::FromStr for ErrorBody {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace('-', "_").as_str() {
            "oauth" => Ok(ErrorBody::OAuth),
            "code_message" => Ok(ErrorBody::CodeMessage),
            "text" => Ok(ErrorBody::Text),
            "html" => Ok(ErrorBody::Html),
            "empty" => Ok(ErrorBody::Empty),
            "json_as_html" => Ok(ErrorBody::JsonAsHtml),
            _ => Err(format!(
                "error body {s:?}: expected oauth, code-message, text, html, empty or json-as-html"
            )),
        }
    }
}

/// How token endpoints take the client id and secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` among the request's fields only; an `Authorization:
    /// Basic` header is ignored (the guide's way).
    #[default]
    BodyOnly,
    /// `Authorization: Basic base64(client_id:client_secret)` if sent (it wins), else the fields.
    BasicOrBody,
    /// `Authorization: Basic` only: a request without it is refused as a bad client, whatever
    /// its fields carry.
    BasicOnly,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace('-', "_").as_str() {
            "body_only" => Ok(ClientAuth::BodyOnly),
            "basic_or_body" => Ok(ClientAuth::BasicOrBody),
            "basic_only" => Ok(ClientAuth::BasicOnly),
            _ => Err(format!(
                "client auth {s:?}: expected body-only, basic-or-body or basic-only"
            )),
        }
    }
}

/// The shape of a successful v1 `oauth2/token` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V1Answer {
    /// The guide's fields plus `username`, `user`, `territory`, `uid`.
    #[default]
    Standard,
    /// As a 44.0.x portal answered: the standard fields plus `client_id`, `expires` (the
    /// token's expiry as a Unix-epoch string, e.g. `"1686420498"`), `rate_limit: "0"` (a
    /// string), `login`, `user_email` and `displayName`.
    #[serde(rename = "v44_0")]
    V44_0,
}

impl std::str::FromStr for V1Answer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace(['-', '.'], "_").as_str() {
            "standard" => Ok(V1Answer::Standard),
            "v44_0" | "44_0" => Ok(V1Answer::V44_0),
            _ => Err(format!("v1 answer {s:?}: expected standard or v44.0")),
        }
    }
}

/// An OAuth client known to the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Client {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
}

/// A subscriber (portal user) that can obtain tokens with the password grant.
///
/// JSON form (config file, `POST /_sim/subscribers`): `username` and `password` are required,
/// the other fields default as in [`Subscriber::new`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "SubscriberJson")]
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
    /// The base32 TOTP seed (RFC 6238, SHA-1, 30 s, 6 digits) of an MFA user who can pass the
    /// second step (`grant_type=mfa`); its intermediate answer says `mfa_type:
    /// "authenticator"`. `None`: no second step is possible (`mfa_type: "totp"`).
    pub totp_seed: Option<String>,
}

impl Subscriber {
    /// A subscriber with defaults: scope `Office Manager`, domain = the part after the last `@`
    /// (`default` if none), territory `sim-territory`, uid = the username, MFA off.
    pub fn new(username: &str, password: &str) -> Self {
        let domain = match username.rsplit_once('@') {
            Some((_, d)) if !d.is_empty() => d.to_owned(),
            _ => "default".to_owned(),
        };
        Subscriber {
            username: username.to_owned(),
            password: password.to_owned(),
            scope: "Office Manager".to_owned(),
            domain,
            territory: "sim-territory".to_owned(),
            uid: username.to_owned(),
            mfa: false,
            totp_seed: None,
        }
    }

    /// The same subscriber with MFA on and this base32 TOTP seed (see
    /// [`crate::totp::passcode`]).
    pub fn with_totp_seed(self, seed: &str) -> Self {
        Subscriber {
            mfa: true,
            totp_seed: Some(seed.to_owned()),
            ..self
        }
    }

    /// The same subscriber with MFA on or off.
    pub fn with_mfa(self, mfa: bool) -> Self {
        Subscriber { mfa, ..self }
    }

    /// The same subscriber with another scope.
    pub fn with_scope(self, scope: &str) -> Self {
        Subscriber {
            scope: scope.to_owned(),
            ..self
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberJson {
    username: String,
    password: String,
    scope: Option<String>,
    domain: Option<String>,
    territory: Option<String>,
    uid: Option<String>,
    #[serde(default)]
    mfa: bool,
    totp_seed: Option<String>,
}

impl From<SubscriberJson> for Subscriber {
    fn from(j: SubscriberJson) -> Self {
        let d = Subscriber::new(&j.username, &j.password);
        Subscriber {
            scope: j.scope.unwrap_or(d.scope),
            domain: j.domain.unwrap_or(d.domain),
            territory: j.territory.unwrap_or(d.territory),
            uid: j.uid.unwrap_or(d.uid),
            mfa: j.mfa || j.totp_seed.is_some(),
            totp_seed: j.totp_seed,
            ..d
        }
    }
}

/// Request counters. `by_key` maps `"endpoint/grant/result"` to a count, where endpoint is
/// `token` (v1), `v2`, `read`, `jwt` (`POST v2/jwt`), `jwt_read` (`GET v2/jwt`), `jwt_revoke`
/// (`DELETE v2/jwt[/{jti}]`), `version` (`v2/version`) or `route` (an unknown route answered
/// with v2's JSON 404, result `no_route`); grant is `password`, `refresh_token`, `mfa`,
/// `other` or `-`; result
/// is `ok`, `mfa_required`, an error (`invalid_client`, `invalid_credentials`,
/// `invalid_request`, `unsupported_grant_type`, `refresh_unknown`, `refresh_reused`,
/// `refresh_expired`, `refresh_revoked`, `refresh_rejected`, `refresh_other_client`,
/// `not_found`, `absent_<status>` (v2 disabled), `method_not_allowed`; for `mfa`:
/// `mfa_passcode`, `mfa_passcode_reused`, `mfa_not_enrolled`, `mfa_token_unknown`,
/// `mfa_token_mismatch`, `mfa_token_used`, `mfa_token_expired`; on `read` and `jwt_read`:
/// `missing_token`, `invalid_token`, `expired`, `revoked`, and `refresh_jwt`,
/// `cookie_missing` for JWTs; `revoked` on `jwt_revoke`) or a fault (`fault_503`,
/// `fault_429`, `fault_firewall`, `fault_hang`,
/// `fault_invalid_scope`, `fault_method_not_allowed`, `fault_empty_body_<result>`,
/// `fault_malformed_json_<result>`, `fault_truncated_body_<result>`, `fault_huge_body_<result>`,
/// `fault_no_token_<body>_<result>`).
/// E.g. `"token/password/ok"`. Requests a node answers itself (its `status` or `hang` state)
/// count only under `node/-/status_<status>` and `node/-/hang`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// All requests to any token endpoint (v1 and v2), whatever their outcome.
    pub token_requests: u64,
    /// Token requests with `grant_type=password`.
    pub password_grants: u64,
    /// Password grants answered with a usable token (not MFA, body not spoilt by a fault).
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
    /// Token requests with `grant_type=mfa` (v1, v2 `tokens` and v2 `jwt`).
    pub mfa_attempts: u64,
    /// MFA second steps refused (bad or reused passcode, bad intermediate token, ...).
    pub mfa_refusals: u64,
    /// JWTs issued by `v2/jwt` (logins and refreshes).
    pub jwt_issued: u64,
    /// JWTs issued for a refresh JWT.
    pub jwt_refreshed: u64,
    /// JWTs revoked by `DELETE v2/jwt[/{jti}]` (and refresh JWTs used up).
    pub jwt_revoked: u64,
    /// Counts by `"endpoint/grant/result"`.
    pub by_key: BTreeMap<String, u64>,
    /// The same counters for each node alone, by index (in
    /// [`Sim::stats`](crate::Sim::stats) and `GET /_sim/stats`; empty in a node's own
    /// counters).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_node: Vec<Stats>,
}

impl Stats {
    /// The count for one `"endpoint/grant/result"` key (0 if never seen).
    pub fn count(&self, key: &str) -> u64 {
        self.by_key.get(key).copied().unwrap_or(0)
    }
}
