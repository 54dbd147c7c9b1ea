//! Pure: the vocabulary of a credential's status: the condition types, the one list of reasons
//! (for conditions and Events alike), a problem the user must fix, and how a condition is set
//! in a list. Deciding which condition applies is `core::status`'s job.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// True while the output Secret holds a valid token.
pub const READY: &str = "Ready";
/// True while something fails, even though the token may still be valid.
pub const DEGRADED: &str = "Degraded";
/// With `spec.rolloutRestartTargets`: True when every target was restarted for the current
/// token.
pub const ROLLOUT_RESTART: &str = "RolloutRestart";
/// True while pods read the token in a way that never sees a new one (env vars, `subPath`).
pub const CONSUMERS_CANNOT_REFRESH: &str = "ConsumersCannotRefresh";
/// True while an optional setting (a fallback node, `verifyInterval`) is invalid and ignored;
/// the token keeps rotating with what is valid.
pub const SETTINGS_IGNORED: &str = "SettingsIgnored";

/// Every reason the operator puts on a condition or an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A new token came from the password grant.
    TokenIssued,
    /// A new token came from the refresh grant.
    TokenRefreshed,
    /// The token in place is valid; nothing needed doing.
    TokenValid,
    /// The token in place has expired and no new one could be obtained.
    TokenExpired,
    /// The refresh grant was refused and the password grant stood in.
    RefreshFallback,
    /// Degraded is False: nothing fails.
    AsExpected,
    /// `spec.suspend` is true.
    Suspended,
    /// The spec cannot work (a bad URL or duration the schema let through, plain http).
    InvalidSpec,
    /// The API host is not in the operator's allow-list.
    ApiHostNotAllowed,
    /// A referenced input Secret does not exist.
    SecretMissing,
    /// A referenced key is missing, empty or not text.
    KeyMissing,
    /// A Secret with the output name exists and belongs to someone else.
    SecretConflict,
    /// The NetSapiens API refused the credentials.
    AuthenticationFailed,
    /// The subscriber has MFA enabled.
    MfaRequired,
    /// The NetSapiens API is down, slow, rate-limiting or answered nonsense.
    ApiUnavailable,
    /// The NetSapiens API refused the request as configured (wrong URL or token API).
    ApiRequestRejected,
    /// The API's TLS certificate is not trusted (a private CA missing from the trust).
    TlsUntrusted,
    /// `spec.caBundle` names a missing object or key, or holds no usable certificate.
    CaBundleInvalid,
    /// A new token was asked for with the renewal annotation.
    RenewRequested,
    /// The API refused the token in place before it expired (revoked on the portal).
    TokenRevoked,
    /// The rollout-restart targets were restarted for the current token.
    RolloutRestarted,
    /// A rollout-restart target does not exist.
    RestartTargetMissing,
    /// A rollout-restart target could not be restarted (RBAC, a conflict, ...).
    RestartFailed,
    /// A rollout-restart target was not restarted: it neither references the output Secret nor
    /// carries the `nsapi.io/allow-restart-by` annotation for the credential.
    RestartNotConsented,
    /// A target was restarted less than a minute ago: the next restart waits.
    RestartPending,
    /// Pods read the token through env vars or a `subPath` mount.
    ConsumersCannotRefresh,
    /// Every pod that reads the token gets the new one.
    ConsumersRefresh,
    /// An optional setting is invalid and ignored until it is fixed.
    InvalidSetting,
    /// A pass ended in an internal error (a bug); the operator goes on with other credentials.
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenIssued => "TokenIssued",
            Reason::TokenRefreshed => "TokenRefreshed",
            Reason::TokenValid => "TokenValid",
            Reason::TokenExpired => "TokenExpired",
            Reason::RefreshFallback => "RefreshFallback",
            Reason::AsExpected => "AsExpected",
            Reason::Suspended => "Suspended",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ApiHostNotAllowed => "ApiHostNotAllowed",
            Reason::SecretMissing => "SecretMissing",
            Reason::KeyMissing => "KeyMissing",
            Reason::SecretConflict => "SecretConflict",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::MfaRequired => "MfaRequired",
            Reason::ApiUnavailable => "ApiUnavailable",
            Reason::ApiRequestRejected => "ApiRequestRejected",
            Reason::TlsUntrusted => "TlsUntrusted",
            Reason::CaBundleInvalid => "CaBundleInvalid",
            Reason::RenewRequested => "RenewRequested",
            Reason::TokenRevoked => "TokenRevoked",
            Reason::RolloutRestarted => "RolloutRestarted",
            Reason::RestartTargetMissing => "RestartTargetMissing",
            Reason::RestartFailed => "RestartFailed",
            Reason::RestartNotConsented => "RestartNotConsented",
            Reason::RestartPending => "RestartPending",
            Reason::ConsumersCannotRefresh => "ConsumersCannotRefresh",
            Reason::ConsumersRefresh => "ConsumersRefresh",
            Reason::InvalidSetting => "InvalidSetting",
            Reason::InternalError => "InternalError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the user must fix before the operator can act; no request is sent until then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    /// Says what to fix; never contains a secret value.
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// When, and for which generation, conditions are being set.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub generation: Option<i64>,
    pub now: Timestamp,
}

impl Stamp {
    /// Sets a condition, keeping its `lastTransitionTime` unless its status flips, so that an
    /// unchanged situation yields an identical status and nothing is written.
    pub fn set(
        self,
        conditions: &mut Vec<Condition>,
        type_: &str,
        status: bool,
        reason: &str,
        message: &str,
    ) {
        let status = if status { "True" } else { "False" }.to_owned();
        let existing = conditions.iter_mut().find(|c| c.type_ == type_);
        let last_transition_time = match &existing {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(self.now.round(jiff::Unit::Second).unwrap_or(self.now)),
        };
        let condition = Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: self.generation,
            last_transition_time,
        };
        match existing {
            Some(c) => *c = condition,
            None => conditions.push(condition),
        }
    }
}

/// True when the condition exists with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(generation: i64, now: &str) -> Stamp {
        Stamp {
            generation: Some(generation),
            now: t(now),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        at(1, "2026-01-01T10:00:00Z").set(&mut conditions, READY, true, "TokenIssued", "a");
        at(2, "2026-01-01T11:00:00Z").set(&mut conditions, READY, true, "TokenRefreshed", "b");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "TokenRefreshed");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(
            conditions[0].last_transition_time.0,
            t("2026-01-01T10:00:00Z")
        );
        at(2, "2026-01-01T12:00:00.4Z").set(&mut conditions, READY, false, "TokenExpired", "c");
        assert_eq!(conditions[0].status, "False");
        assert_eq!(
            conditions[0].last_transition_time.0,
            t("2026-01-01T12:00:00Z")
        );
        assert!(!is_true(&conditions, READY));
        at(2, "2026-01-01T12:00:00Z").set(&mut conditions, DEGRADED, true, "ApiUnavailable", "d");
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, DEGRADED));
    }

    #[test]
    fn reasons_are_their_names() {
        for reason in [
            Reason::TokenIssued,
            Reason::SecretMissing,
            Reason::ApiHostNotAllowed,
            Reason::ApiRequestRejected,
            Reason::RestartNotConsented,
        ] {
            assert_eq!(format!("{reason:?}"), reason.as_str());
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }
}
