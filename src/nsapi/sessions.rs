//! What the operator holds in memory per credential, and nowhere else:
//! - the refresh token of its session (never in a Secret that pods can mount). It is taken out
//!   before it is sent, so each refresh token is used at most once;
//! - the newest token it obtained. A token obtained but not yet written (the Kubernetes write
//!   failed) is written on the next pass instead of obtaining another one, and an output Secret
//!   that someone edited or deleted is restored from it without calling NetSapiens;
//! - after a token check that failed for a reason other than a refusal (`spec.verifyInterval`),
//!   when to try the next one;
//! - the session cookie a `v2/jwt` answer set (`tokenApi: jwt`), sent back with the JWT's
//!   refresh and checks.
//!
//! All of it is forgotten when the credential is deleted. Beside the sessions, by the digest of
//! a TOTP seed (not by credential: two credentials may share an MFA user), the last passcode
//! step sent, so that no passcode is sent twice.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::core::credentials::Confidential;
use crate::core::token::Minted;
use crate::core::token::TokenApi;
use crate::core::token_secret::StoredToken;

/// A refresh token with what it was obtained with.
pub struct RefreshSession {
    pub refresh_token: Confidential,
    /// The inputs of the grant that returned it (see `inputs::fingerprint`): a session is only
    /// used while the inputs are unchanged.
    pub inputs_fingerprint: String,
    /// The token API that answered (`V1`, `V2` or `Jwt`); the refresh goes to the same one.
    pub api: TokenApi,
}

/// The newest token obtained for a credential.
#[derive(Clone)]
pub struct HeldToken {
    pub stored: StoredToken,
    /// How it was obtained, while it is not yet written (its status is still to be reported).
    /// Boxed: rarely there, and about 600 bytes that every session would otherwise keep room
    /// for.
    pub unwritten: Option<Box<Minted>>,
}

impl HeldToken {
    /// Whether this token should be in the output Secret rather than `in_place`: obtained with
    /// the inputs the credential has now (`fingerprint`), still valid, and not older.
    pub fn supersedes(
        &self,
        in_place: Option<&StoredToken>,
        fingerprint: &str,
        now: jiff::Timestamp,
    ) -> bool {
        self.stored.inputs_fingerprint == fingerprint
            && self.stored.times.is_valid_at(now)
            && in_place.is_none_or(|t| self.stored.times.issued_at >= t.times.issued_at)
    }
}

#[derive(Default)]
struct Session {
    refresh: Option<RefreshSession>,
    token: Option<HeldToken>,
    check_retry_at: Option<jiff::Timestamp>,
    /// When tokens were replaced because a check found them refused (the last hour's, at most
    /// `MAX_REVOCATIONS_PER_HOUR`).
    revocations: Vec<jiff::Timestamp>,
    /// The session cookie of the newest `v2/jwt` answer that set one.
    cookie: Option<Confidential>,
}

/// Sessions by credential UID. Boxed: a session is large, and a table of a fleet keeps up to
/// twice as many slots as sessions.
#[derive(Default)]
pub struct Sessions {
    by_uid: Mutex<HashMap<String, Box<Session>>>,
    /// The last TOTP step whose passcode was sent, by the digest of the seed.
    passcode_steps: Mutex<HashMap<String, u64>>,
}

impl Sessions {
    /// Reserves the step whose passcode to send for the seed with digest `seed_key` at
    /// `unix_secs` (see `totp::next_passcode_step`): the step, and how many seconds to wait
    /// for it. Reserved before it is sent, so that two passes never send the same passcode.
    pub fn reserve_passcode_step(&self, seed_key: &str, unix_secs: u64) -> (u64, u64) {
        let mut steps = self
            .passcode_steps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = steps.get(seed_key).copied();
        let (step, wait) = crate::core::totp::next_passcode_step(unix_secs, last);
        steps.insert(seed_key.to_owned(), step);
        // Steps older than a few minutes can never come back: forget their seeds.
        let now = crate::core::totp::step_of(unix_secs);
        steps.retain(|_, s| s.saturating_add(10) >= now);
        (step, wait)
    }

    /// The session cookie of the credential's newest JWT (`tokenApi: jwt`), if the server set
    /// one.
    pub fn cookie(&self, uid: &str) -> Option<Confidential> {
        self.lock().get(uid).and_then(|s| s.cookie.clone())
    }

    /// Records the session cookie of a token just obtained (`None`: it came without one).
    pub fn set_cookie(&self, uid: &str, cookie: Option<Confidential>) {
        self.with(uid, |s| s.cookie = cookie);
    }

    /// Takes the refresh token out: whatever happens next, it is not sent twice.
    pub fn take_refresh(&self, uid: &str) -> Option<RefreshSession> {
        self.with(uid, |s| s.refresh.take())
    }

    pub fn keep_refresh(&self, uid: &str, refresh: RefreshSession) {
        self.with(uid, |s| s.refresh = Some(refresh));
    }

    /// Holds a token just obtained, before it is written.
    pub fn hold_unwritten(&self, uid: &str, stored: StoredToken, minted: Minted) {
        self.with(uid, |s| {
            s.token = Some(HeldToken {
                stored,
                unwritten: Some(Box::new(minted)),
            })
        });
    }

    /// Records that the held token is now in the output Secret.
    pub fn written(&self, uid: &str, stored: &StoredToken) {
        self.with(uid, |s| {
            s.token = Some(HeldToken {
                stored: stored.clone(),
                unwritten: None,
            })
        });
    }

    /// After an inconclusive token check: the next one is not tried before `at` (`None` clears
    /// it).
    pub fn set_check_retry(&self, uid: &str, at: Option<jiff::Timestamp>) {
        self.with(uid, |s| s.check_retry_at = at);
    }

    /// When tokens of this credential were replaced for a refused check.
    pub fn revocations(&self, uid: &str) -> Vec<jiff::Timestamp> {
        self.lock()
            .get(uid)
            .map(|s| s.revocations.clone())
            .unwrap_or_default()
    }

    /// Records a replacement for a refused check at `at`, keeping only the most recent few.
    pub fn record_revocation(&self, uid: &str, at: jiff::Timestamp) {
        self.with(uid, |s| {
            s.revocations.push(at);
            let keep = crate::core::schedule::MAX_REVOCATIONS_PER_HOUR;
            if s.revocations.len() > keep {
                s.revocations.drain(..s.revocations.len() - keep);
            }
        });
    }

    pub fn check_retry_at(&self, uid: &str) -> Option<jiff::Timestamp> {
        self.lock().get(uid).and_then(|s| s.check_retry_at)
    }

    pub fn held_token(&self, uid: &str) -> Option<HeldToken> {
        self.lock().get(uid).and_then(|s| s.token.clone())
    }

    /// Forgets everything about a credential (deleted, or its namespace is going away).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// How many credentials the operator holds anything for.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut map = self.lock();
        let session = map.entry(uid.to_owned()).or_default();
        let out = f(session);
        if session.refresh.is_none()
            && session.token.is_none()
            && session.revocations.is_empty()
            && session.cookie.is_none()
        {
            map.remove(uid);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Box<Session>>> {
        // A panic while holding the lock cannot leave the map half-updated: take it anyway.
        self.by_uid
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schedule::TokenTimes;
    use crate::core::token::{Grant, TokenGrant};

    #[test]
    fn no_passcode_step_is_reserved_twice_for_one_seed() {
        let sessions = Sessions::default();
        // Two passes in the same step: the second waits for the next step.
        assert_eq!(
            sessions.reserve_passcode_step("seed-a", 3_000_010),
            (100_000, 0)
        );
        assert_eq!(
            sessions.reserve_passcode_step("seed-a", 3_000_011),
            (100_001, 19)
        );
        // Another seed is not held back.
        assert_eq!(
            sessions.reserve_passcode_step("seed-b", 3_000_011),
            (100_000, 0)
        );
        // Later, the current step again.
        assert_eq!(
            sessions.reserve_passcode_step("seed-a", 3_000_100),
            (100_003, 0)
        );
        // Old seeds are forgotten.
        sessions.reserve_passcode_step("seed-c", 3_100_000);
        assert_eq!(sessions.passcode_steps.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_session_cookie_is_kept_and_forgotten_with_the_credential() {
        let sessions = Sessions::default();
        assert_eq!(sessions.cookie("u"), None);
        sessions.set_cookie("u", Some(Confidential::from("s=1")));
        assert_eq!(sessions.cookie("u").unwrap().expose(), "s=1");
        sessions.forget("u");
        assert_eq!(sessions.cookie("u"), None);
        assert!(sessions.is_empty());
    }

    fn stored(token: &str) -> StoredToken {
        StoredToken {
            access_token: Confidential::from(token),
            token_type: "Bearer".into(),
            times: TokenTimes {
                issued_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                expires_at: "2026-01-01T11:00:00Z".parse().unwrap(),
            },
            api_base_url: "https://portal.example.com/ns-api/".into(),
            domain: None,
            scope: None,
            inputs_fingerprint: "v1:x".into(),
        }
    }

    fn minted() -> Minted {
        Minted {
            grant: TokenGrant {
                access_token: Confidential::from("at"),
                refresh_token: None,
                token_type: "Bearer".into(),
                scope: None,
                domain: None,
                territory: None,
                uid: None,
                api_version: None,
                legacy: None,
                grant: Grant::Password,
                api: TokenApi::V1,
                session_cookie: None,
                requested_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                expires_in: 3600,
                expires_at: "2026-01-01T11:00:00Z".parse().unwrap(),
            },
            info: None,
            fallback_from: None,
            served_by: crate::core::base_url::ApiBaseUrl::parse(
                "https://portal.example.com/",
                false,
            )
            .unwrap(),
        }
    }

    #[test]
    fn a_refresh_token_is_taken_once() {
        let sessions = Sessions::default();
        sessions.keep_refresh(
            "uid-1",
            RefreshSession {
                refresh_token: Confidential::from("rt"),
                inputs_fingerprint: "v1:x".into(),
                api: TokenApi::V1,
            },
        );
        assert_eq!(sessions.len(), 1);
        let taken = sessions.take_refresh("uid-1").unwrap();
        assert_eq!(taken.refresh_token.expose(), "rt");
        assert!(sessions.take_refresh("uid-1").is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn an_unwritten_token_is_held_until_written_and_everything_is_forgotten() {
        let sessions = Sessions::default();
        sessions.hold_unwritten("uid-1", stored("a"), minted());
        let held = sessions.held_token("uid-1").unwrap();
        assert!(held.unwritten.is_some());
        sessions.written("uid-1", &held.stored);
        let held = sessions.held_token("uid-1").unwrap();
        assert!(held.unwritten.is_none());
        assert_eq!(held.stored.access_token.expose(), "a");
        sessions.forget("uid-1");
        assert!(sessions.held_token("uid-1").is_none());
        assert!(sessions.is_empty());
    }
}
