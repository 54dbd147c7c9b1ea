//! What a token request asks for and what comes back, as values: the grant and API enums, the
//! typed [`TokenGrant`] and [`TokenInfo`]. Parsing the wire answers is `nsapi::answer`'s job.

use jiff::{SignedDuration, Timestamp};

use super::api_error::NsApiError;
use super::base_url::ApiBaseUrl;
use super::credentials::Confidential;

/// The longest token lifetime taken at its word: NetSapiens tokens last an hour; a server that
/// says more than a week is treated as if it had said a week.
pub const MAX_TOKEN_LIFETIME: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Which token endpoint to use (NSAPI.md): `V1` is `oauth2/token/`, `V2` is `v2/tokens`, `Auto`
/// tries v2 and falls back to v1 when v2 is absent, `Jwt` is `v2/jwt` (a JWT as the Bearer
/// token, its lifetime read from its `exp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenApi {
    V1,
    V2,
    Auto,
    Jwt,
}

impl TokenApi {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenApi::V1 => "v1",
            TokenApi::V2 => "v2",
            TokenApi::Auto => "auto",
            TokenApi::Jwt => "jwt",
        }
    }
}

/// How the v1 refresh grant is sent: `Get` (the documented query string) or `Post` (a form body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefreshMethod {
    Get,
    Post,
}

impl RefreshMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshMethod::Get => "GET",
            RefreshMethod::Post => "POST",
        }
    }
}

/// The OAuth2 grant a token was obtained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    Password,
    RefreshToken,
    /// The second step of an MFA user's login: the password again, the intermediate token of
    /// the password grant and a TOTP passcode.
    Mfa,
}

impl Grant {
    /// The `grant_type` value: `password`, `refresh_token` or `mfa`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::RefreshToken => "refresh_token",
            Grant::Mfa => "mfa",
        }
    }
}

/// A usable token, as returned by a password or refresh grant.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenGrant {
    pub access_token: Confidential,
    /// Store whatever comes back: newer servers rotate refresh tokens and accept each one once.
    pub refresh_token: Option<Confidential>,
    /// `Bearer` when the server does not say.
    pub token_type: String,
    pub scope: Option<String>,
    pub domain: Option<String>,
    pub territory: Option<String>,
    pub uid: Option<String>,
    /// The server's `apiversion`, e.g. `Version: 41.1.0`.
    pub api_version: Option<String>,
    /// Undocumented; kept as an opaque boolean.
    pub legacy: Option<bool>,
    pub grant: Grant,
    /// The API actually used: `V1`, `V2` or `Jwt`, never `Auto`.
    pub api: TokenApi,
    /// The session cookie (`name=value`) a `v2/jwt` answer set, to send back with the JWT's
    /// refresh and checks.
    pub session_cookie: Option<Confidential>,
    /// The clock's time immediately before the request was sent.
    pub requested_at: Timestamp,
    /// Lifetime in seconds, as returned (always positive), but at most [`MAX_TOKEN_LIFETIME`].
    pub expires_in: i64,
    /// `requested_at + expires_in`.
    pub expires_at: Timestamp,
}

/// What `oauth2/read` says about a token. Used to enrich status, not for scheduling
/// (`expires` has no time zone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub client_id: Option<String>,
    pub territory: Option<String>,
    pub domain: Option<String>,
    pub uid: Option<String>,
    pub scope: Option<String>,
    pub api_version: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` as returned, no time zone.
    pub expires: Option<String>,
}

/// A token obtained, and how.
#[derive(Clone, Debug)]
pub struct Minted {
    pub grant: TokenGrant,
    /// What `oauth2/read` said about a token from the password grant.
    pub info: Option<TokenInfo>,
    /// The refusal of the refresh grant, when the password grant stood in.
    pub fallback_from: Option<NsApiError>,
    /// The API node that issued it.
    pub served_by: ApiBaseUrl,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names() {
        assert_eq!(Grant::Password.as_str(), "password");
        assert_eq!(Grant::RefreshToken.as_str(), "refresh_token");
        assert_eq!(RefreshMethod::Get.as_str(), "GET");
        assert_eq!(TokenApi::Auto.as_str(), "auto");
        assert_eq!(TokenApi::Jwt.as_str(), "jwt");
        assert_eq!(Grant::Mfa.as_str(), "mfa");
    }
}
