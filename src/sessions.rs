//! The refresh token of each credential's session, held in operator memory only: never in a
//! Secret that pods can mount. A session is taken out before its refresh token is sent, so each
//! refresh token is used at most once.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::nsapi::{Confidential, TokenApi};

/// A refresh token with what it was obtained with.
pub struct Session {
    pub refresh_token: Confidential,
    /// The inputs of the grant that returned it (see `inputs::fingerprint`): a session is only
    /// used while the inputs are unchanged.
    pub inputs_fingerprint: String,
    /// The token API that answered (`V1` or `V2`); the refresh goes to the same one.
    pub api: TokenApi,
}

/// Sessions by credential UID.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// Takes the session out: whatever happens next, its refresh token is not sent twice.
    pub fn take(&self, uid: &str) -> Option<Session> {
        self.lock().remove(uid)
    }

    pub fn keep(&self, uid: &str, session: Session) {
        self.lock().insert(uid.to_owned(), session);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map half-updated: take it anyway.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_taken_once() {
        let sessions = Sessions::default();
        sessions.keep(
            "uid-1",
            Session {
                refresh_token: Confidential::from("rt"),
                inputs_fingerprint: "v1:x".into(),
                api: TokenApi::V1,
            },
        );
        assert_eq!(sessions.len(), 1);
        let taken = sessions.take("uid-1").unwrap();
        assert_eq!(taken.refresh_token.expose(), "rt");
        assert!(sessions.take("uid-1").is_none());
        assert!(sessions.is_empty());
    }
}
