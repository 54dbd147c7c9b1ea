//! Pure: the conditions an NsApiCredential reports. Keeps `lastTransitionTime` when a
//! condition's status does not change, so an unchanged situation yields an identical status and
//! the operator writes nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const DEGRADED: &str = "Degraded";

/// Reasons used in conditions and events.
pub mod reason {
    pub const TOKEN_ISSUED: &str = "TokenIssued";
    pub const TOKEN_REFRESHED: &str = "TokenRefreshed";
    pub const TOKEN_VALID: &str = "TokenValid";
    pub const TOKEN_EXPIRED: &str = "TokenExpired";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const SUSPENDED: &str = "Suspended";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const MFA_REQUIRED: &str = "MfaRequired";
    pub const API_UNAVAILABLE: &str = "ApiUnavailable";
    pub const API_REQUEST_REJECTED: &str = "ApiRequestRejected";
    pub const REFRESH_FALLBACK: &str = "RefreshFallback";
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// When, and for which generation, conditions are being set.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub generation: Option<i64>,
    pub now: Timestamp,
}

impl Stamp {
    /// Sets a condition, keeping its `lastTransitionTime` unless its status flips.
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
}
