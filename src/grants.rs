//! Obtaining a token for one credential: the refresh grant while this operator holds a refresh
//! token for the same inputs, otherwise (or when the server refuses the refresh) the password
//! grant. Each refresh token is sent at most once; every request is counted in the metrics.

use jiff::Timestamp;
use tracing::{debug, info};

use crate::metrics::Metrics;
use crate::nsapi::{
    ClientCredentials, ErrorKind, Grant, NsApiClient, NsApiError, SubscriberCredentials,
    TokenGrant, TokenInfo,
};
use crate::policy::ValidSpec;
use crate::ratelimit::RateLimiter;
use crate::schedule::MintReason;
use crate::sessions::{RefreshSession, Sessions};
use crate::token_secret::StoredToken;

/// What the API said about the token in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// It knows the token.
    Accepted,
    /// It refused the token (401): revoked on the portal, or by a newer login.
    Refused,
    /// The check failed otherwise (outage, timeout): no reason to replace a token.
    Unknown,
}

/// A token obtained, and how.
#[derive(Clone, Debug)]
pub struct Minted {
    pub grant: TokenGrant,
    /// What `oauth2/read` said about a token from the password grant.
    pub info: Option<TokenInfo>,
    /// The refusal of the refresh grant, when the password grant stood in.
    pub fallback_from: Option<NsApiError>,
}

/// What obtaining a token for one credential needs.
pub struct Grants<'a> {
    pub nsapi: &'a NsApiClient,
    pub sessions: &'a Sessions,
    pub metrics: &'a Metrics,
    pub limiter: &'a RateLimiter,
    /// The credential's UID: the key of its session.
    pub uid: &'a str,
    /// When the credential's token expires (now, when it has none): its place in the queue of
    /// the rate limit.
    pub deadline: Timestamp,
}

impl Grants<'_> {
    /// Gets a token: the refresh grant when this operator holds a refresh token for these
    /// inputs, else (or when the refresh is refused) the password grant.
    pub async fn obtain(
        &self,
        valid: &ValidSpec,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
        fingerprint: &str,
        why: MintReason,
    ) -> Result<Minted, NsApiError> {
        let (nsapi, metrics) = (self.nsapi, self.metrics);
        let session = self
            .sessions
            .take_refresh(self.uid)
            .filter(|s| s.inputs_fingerprint == fingerprint && !why.needs_password_grant());
        let mut fallback_from = None;
        if let Some(session) = session {
            self.wait_turn(valid).await;
            let started = std::time::Instant::now();
            let result = nsapi
                .refresh_grant(
                    &valid.base_url,
                    session.api,
                    valid.refresh_method,
                    client,
                    &session.refresh_token,
                )
                .await;
            metrics.token_request(
                Grant::RefreshToken,
                result.as_ref().err(),
                started.elapsed(),
            );
            match result {
                Ok(grant) => {
                    match &grant.refresh_token {
                        Some(_) => self.remember(&grant, fingerprint),
                        // No new refresh token means the one just used stays valid (RFC 6749
                        // section 6): keep it for the next rotation.
                        None => self.sessions.keep_refresh(self.uid, session),
                    }
                    return Ok(Minted {
                        grant,
                        info: None,
                        fallback_from: None,
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::RefreshRejected | ErrorKind::Authentication
                    ) =>
                {
                    info!(error = %e, "refresh grant refused; falling back to the password grant");
                    fallback_from = Some(e);
                }
                // The refresh token may or may not have been consumed: it is not sent again.
                Err(e) => return Err(e),
            }
        }
        self.wait_turn(valid).await;
        let started = std::time::Instant::now();
        let result = nsapi
            .password_grant(&valid.base_url, valid.token_api, client, subscriber)
            .await;
        metrics.token_request(Grant::Password, result.as_ref().err(), started.elapsed());
        let grant = result?;
        self.remember(&grant, fingerprint);
        // Inspect the new token for status (territory, uid) when the grant did not say them
        // (v1 answers often do not); a failure here costs nothing.
        let info = if grant.territory.is_some() && grant.uid.is_some() {
            None
        } else {
            self.wait_turn(valid).await;
            match nsapi.read_token(&valid.base_url, &grant.access_token).await {
                Ok(info) => Some(info),
                Err(e) => {
                    debug!(error = %e, "token inspection failed; status lacks territory and uid");
                    None
                }
            }
        };
        Ok(Minted {
            grant,
            info,
            fallback_from,
        })
    }

    /// Asks the API about the token in place (`spec.verifyInterval`).
    pub async fn check_token(&self, valid: &ValidSpec, token: &StoredToken) -> TokenCheck {
        self.wait_turn(valid).await;
        match self
            .nsapi
            .read_token(&valid.base_url, &token.access_token)
            .await
        {
            Ok(_) => TokenCheck::Accepted,
            Err(error) if error.kind() == ErrorKind::Authentication => {
                info!(%error, "the API refused the token in place");
                TokenCheck::Refused
            }
            Err(error) => {
                info!(%error, "the token check failed; the token stays");
                TokenCheck::Unknown
            }
        }
    }

    /// Waits for the rate limit of the API host.
    async fn wait_turn(&self, valid: &ValidSpec) {
        let waited = self
            .limiter
            .acquire(valid.base_url.host(), self.deadline)
            .await;
        self.metrics.rate_limit_wait(waited);
    }

    fn remember(&self, grant: &TokenGrant, fingerprint: &str) {
        if let Some(refresh_token) = &grant.refresh_token {
            self.sessions.keep_refresh(
                self.uid,
                RefreshSession {
                    refresh_token: refresh_token.clone(),
                    inputs_fingerprint: fingerprint.to_owned(),
                    api: grant.api,
                },
            );
        }
    }
}
