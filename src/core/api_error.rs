//! The client's error type: what went wrong, in words a user can act on, and whether retrying
//! can help. Messages are built in `nsapi::classify` from text that `nsapi::redact` made safe.

use std::time::Duration;

/// How long to wait after a web firewall's HTML 403 when it gives no `Retry-After`: such
/// firewalls ban an IP that keeps hammering the token endpoint, so a fast retry makes it worse.
pub const FIREWALL_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// `Retry-After` values above this are clamped: a typo or a hostile server must not park a
/// credential for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// What kind of failure, i.e. what the caller should do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Retrying later can help: back off (honour `retry_after` when given).
    Transient,
    /// The credentials were refused: back off long; retry when an input Secret changes.
    Authentication,
    /// The refresh grant was refused: fall back to a password grant now.
    RefreshRejected,
    /// The subscriber has MFA enabled: no unattended token is possible for this user.
    MfaRequired,
    /// Cannot work as configured: report, and wait for a change.
    Permanent,
    /// The server's TLS certificate is not trusted: a CA is missing (report, retry rarely).
    TlsUntrusted,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Authentication => "authentication",
            ErrorKind::RefreshRejected => "refresh_rejected",
            ErrorKind::MfaRequired => "mfa_required",
            ErrorKind::Permanent => "permanent",
            ErrorKind::TlsUntrusted => "tls_untrusted",
        }
    }
}

/// A failed NetSapiens API call. Messages are actionable and contain no secret, no query
/// string and no URL user info.
///
/// There is deliberately no `source()`: the underlying `reqwest::Error` can carry the request
/// URL (with the refresh grant's query string), so its text is rendered, redacted, into
/// `message` instead of being handed out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NsApiError {
    /// Network error, timeout, 408, 429, 5xx, a web firewall's HTML 403, an unusable 2xx body.
    #[error("{message}")]
    Transient {
        message: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        /// Low-cardinality cause: `connect_failed` and `connect_timeout` (nothing was sent),
        /// `timeout` (sent, then given up on), `network`, `rate_limited`, `server_error`,
        /// `firewall`, `malformed_response`, `unexpected_status`.
        label: &'static str,
    },
    /// The API refused the credentials (or, for `read_token`, the access token).
    #[error("{message}")]
    Authentication {
        message: String,
        status: Option<u16>,
        /// `authentication`, `permission_denied` (v2 `Invalid Scope`) or `token_refused`.
        label: &'static str,
    },
    /// The refresh grant was refused with a client error: fall back to the password grant.
    #[error("{message}")]
    RefreshRejected {
        message: String,
        status: Option<u16>,
    },
    /// The answer was an `mfa_required` intermediate token, not a usable one.
    #[error("{message}")]
    MfaRequired { message: String },
    /// The server's certificate is not trusted; the message names it.
    #[error("{message}")]
    TlsUntrusted { message: String },
    /// Can never work as configured (wrong URL, endpoint absent, unsupported request).
    #[error("{message}")]
    Permanent {
        message: String,
        status: Option<u16>,
        /// `not_found`, `redirect`, `method_not_allowed`, `unsupported`, `client_error`,
        /// `invalid_request`, `client_setup`.
        label: &'static str,
    },
}

impl NsApiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NsApiError::Transient { .. } => ErrorKind::Transient,
            NsApiError::Authentication { .. } => ErrorKind::Authentication,
            NsApiError::RefreshRejected { .. } => ErrorKind::RefreshRejected,
            NsApiError::MfaRequired { .. } => ErrorKind::MfaRequired,
            NsApiError::Permanent { .. } => ErrorKind::Permanent,
            NsApiError::TlsUntrusted { .. } => ErrorKind::TlsUntrusted,
        }
    }

    /// The server's `Retry-After` (seconds or HTTP date, clamped to [`MAX_RETRY_AFTER`]), or
    /// [`FIREWALL_BACKOFF`] for a firewall's 403. Only transient errors carry one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NsApiError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            NsApiError::Transient { status, .. }
            | NsApiError::Authentication { status, .. }
            | NsApiError::RefreshRejected { status, .. }
            | NsApiError::Permanent { status, .. } => *status,
            NsApiError::MfaRequired { .. } => Some(200),
            NsApiError::TlsUntrusted { .. } => None,
        }
    }

    /// A low-cardinality label for metrics (see each variant's `label`).
    /// The request never reached the server (no connection was made), so nothing it carried
    /// was used: a refresh token in it can still be sent.
    pub fn was_not_sent(&self) -> bool {
        matches!(
            self,
            NsApiError::Transient {
                label: "connect_failed" | "connect_timeout",
                ..
            }
        )
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            NsApiError::Transient { label, .. }
            | NsApiError::Authentication { label, .. }
            | NsApiError::Permanent { label, .. } => label,
            NsApiError::RefreshRejected { .. } => "refresh_rejected",
            NsApiError::MfaRequired { .. } => "mfa_required",
            NsApiError::TlsUntrusted { .. } => "tls_untrusted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_statuses_and_labels() {
        let transient = NsApiError::Transient {
            message: "m".into(),
            status: Some(503),
            retry_after: Some(Duration::from_secs(7)),
            label: "server_error",
        };
        assert_eq!(transient.kind(), ErrorKind::Transient);
        assert_eq!(transient.status(), Some(503));
        assert_eq!(transient.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(transient.metric_label(), "server_error");
        let mfa = NsApiError::MfaRequired {
            message: "m".into(),
        };
        assert_eq!(
            (mfa.kind(), mfa.status()),
            (ErrorKind::MfaRequired, Some(200))
        );
        assert_eq!(mfa.metric_label(), "mfa_required");
        assert_eq!(mfa.retry_after(), None);
        let refused = NsApiError::RefreshRejected {
            message: "the refresh token was refused".into(),
            status: Some(400),
        };
        assert_eq!(refused.kind().as_str(), "refresh_rejected");
        assert_eq!(refused.to_string(), "the refresh token was refused");
    }
}
