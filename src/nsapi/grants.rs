//! Obtaining a token for one credential: the refresh grant while this operator holds a refresh
//! token for the same inputs, otherwise (or when the server refuses the refresh) the password
//! grant, and for a user with MFA enforced its second step with a TOTP passcode. Each refresh
//! token and each passcode is sent at most once (a request that never connected was not
//! sent); every request is counted in the metrics.

use jiff::{SignedDuration, Timestamp};
use tracing::{debug, info};

use crate::core::api_error::{ErrorKind, NsApiError};
use crate::core::base_url::ApiBaseUrl;
use crate::core::clock::{Clock, later};
use crate::core::credentials::{ClientCredentials, SubscriberCredentials};
use crate::core::policy::ValidSpec;
use crate::core::schedule::{self, MintReason};
use crate::core::token::{Grant, Minted, TokenApi, TokenGrant};
use crate::core::token_secret::StoredToken;
use crate::nsapi::NsApiClient;
use crate::nsapi::client::{Login, MfaChallenge};
use crate::nsapi::nodes::{Answers, NodeHealth, fails_over, shows_working};
use crate::nsapi::ratelimit::RateLimiter;
use crate::nsapi::sessions::{RefreshSession, Sessions};
use crate::telemetry::metrics::Metrics;

/// What the API said about the token in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// It knows the token.
    Accepted,
    /// It refused the token (401): revoked on the portal, or by a newer login.
    Refused,
    /// The check failed otherwise (outage, timeout): no reason to replace a token; tried
    /// again soon.
    Unknown,
    /// The check cannot work as configured (a permission error such as v2's `Invalid Scope`,
    /// a wrong path): the token stays, and the next check waits a whole interval.
    Unusable,
}

/// After a token check that neither passed nor failed (an outage), the next one is tried this
/// much later.
const UNKNOWN_CHECK_RETRY: SignedDuration = SignedDuration::from_secs(60);

/// What a pass's token check found.
pub struct CheckPass {
    /// When to check next.
    pub next_check: Timestamp,
    /// When the API last accepted or refused the token, if it did in this pass.
    pub verified_at: Option<Timestamp>,
    /// The API refused the token: it must be replaced at once.
    pub revoked: bool,
    /// The API refused the token, but it refused too many fresh tokens in the last hour to
    /// be believed: the token stays, and the check itself looks wrong.
    pub suspect: bool,
}

/// What obtaining a token for one credential needs.
pub struct Grants<'a> {
    pub nsapi: &'a NsApiClient,
    pub sessions: &'a Sessions,
    pub metrics: &'a Metrics,
    pub limiter: &'a RateLimiter,
    pub health: &'a NodeHealth,
    /// Told when a node answers (credentials waiting out its outage are woken).
    pub answers: &'a dyn Answers,
    /// How `nsapi` reaches the nodes: the digest of the credential's CA bundle (`""` for the
    /// operator's roots). Node health is shared only between credentials that reach a node
    /// the same way.
    pub trust: &'a str,
    pub clock: &'a dyn Clock,
    /// The credential's UID: the key of its session.
    pub uid: &'a str,
    /// When the credential's token expires (now, when it has none): its place in the queue of
    /// the rate limit.
    pub deadline: Timestamp,
}

impl Grants<'_> {
    /// Gets a token: the refresh grant when this operator holds a refresh token for these
    /// inputs, else (or when the refresh is refused) the password grant. Each request goes to
    /// the API nodes in turn (see `nodes`) until one answers.
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
            // One node only: a refresh token that may have been consumed (a timeout, a 5xx)
            // is never sent again, not even to another node.
            let node = self.order(valid)[0];
            self.wait_turn(node).await;
            let started = std::time::Instant::now();
            let cookie = self.sessions.cookie(self.uid);
            let result = nsapi
                .refresh_grant(
                    node,
                    session.api,
                    valid.refresh_method,
                    client,
                    &session.refresh_token,
                    cookie.as_ref(),
                )
                .await;
            metrics.token_request(
                Grant::RefreshToken,
                &node.host_label(),
                result.as_ref().err(),
                started.elapsed(),
            );
            self.record(node, result.as_ref().err());
            match result {
                Ok(grant) => {
                    // A refresh answer without a cookie leaves the session's cookie in force.
                    if grant.session_cookie.is_some() {
                        self.sessions
                            .set_cookie(self.uid, grant.session_cookie.clone());
                    }
                    match &grant.refresh_token {
                        Some(_) => self.remember(&grant, fingerprint),
                        // A refresh JWT is single use: without a new one, the next rotation
                        // logs in again.
                        None if session.api == TokenApi::Jwt => {}
                        // No new OAuth refresh token means the one just used stays valid (RFC
                        // 6749 section 6): keep it for the next rotation.
                        None => self.sessions.keep_refresh(self.uid, session),
                    }
                    return Ok(Minted {
                        grant,
                        info: None,
                        fallback_from: None,
                        served_by: node.clone(),
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
                Err(e) => {
                    // No connection was made: the refresh token is unspent, and the next
                    // attempt refreshes with it rather than logging in again.
                    if e.was_not_sent() {
                        self.sessions.keep_refresh(self.uid, session);
                    }
                    // Another node may answer a password grant. Otherwise the refresh token,
                    // if it was sent, may or may not have been consumed: it is not sent again.
                    if valid.fallbacks.is_empty() || !fails_over(&e) {
                        return Err(e);
                    }
                    info!(error = %e, "refresh grant failed; a password grant goes to the next node");
                }
            }
        }
        let (login, node) = self
            .on_nodes(valid, Grant::Password, |node| async move {
                nsapi
                    .password_login(&node, valid.token_api, client, subscriber)
                    .await
            })
            .await?;
        let grant = match login {
            Login::Token(grant) => grant,
            Login::Mfa(challenge) => {
                self.answer_mfa(&node, challenge, client, subscriber)
                    .await?
            }
        };
        self.remember(&grant, fingerprint);
        self.sessions
            .set_cookie(self.uid, grant.session_cookie.clone());
        // Inspect the new token for status (territory, uid) when the grant did not say them
        // (v1 answers often do not); a failure here costs nothing. A JWT says them in its
        // claims, or not at all.
        let info = if (grant.territory.is_some() && grant.uid.is_some())
            || grant.api == TokenApi::Jwt
        {
            None
        } else {
            self.wait_turn(&node).await;
            match nsapi.read_token(&node, &grant.access_token).await {
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
            served_by: node,
        })
    }

    /// Completes an MFA user's login with a TOTP passcode (`spec.mfa.totpSecretRef`), on the
    /// node that set the challenge and on no other: a passcode may have been used even by a
    /// request that failed, and none is sent twice (when this seed's current passcode was
    /// already sent, the next one is waited for, at most a step). Without a seed, or for a
    /// challenge a TOTP app cannot answer, the login ends in `MfaRequired`.
    async fn answer_mfa(
        &self,
        node: &ApiBaseUrl,
        challenge: MfaChallenge,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
    ) -> Result<TokenGrant, NsApiError> {
        let Some(seed) = subscriber
            .totp
            .as_ref()
            .filter(|_| challenge.takes_a_totp_passcode())
        else {
            return Err(challenge.unanswered);
        };
        let unix = u64::try_from(self.clock.now().as_second()).unwrap_or(0);
        let (step, wait) = self.sessions.reserve_passcode_step(seed.key(), unix);
        if wait > 0 {
            debug!(
                wait_secs = wait,
                "this passcode was sent already; waiting for the next"
            );
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        }
        let passcode = seed.passcode(step);
        self.wait_turn(node).await;
        let started = std::time::Instant::now();
        let result = self
            .nsapi
            .mfa_grant(node, &challenge, client, subscriber, &passcode)
            .await;
        self.metrics.token_request(
            Grant::Mfa,
            &node.host_label(),
            result.as_ref().err(),
            started.elapsed(),
        );
        self.record(node, result.as_ref().err());
        result
    }

    /// Checks the token in place with the API when a check is due (`spec.verifyInterval`,
    /// `last`: when one last passed). A check that fails for another reason than a refusal
    /// never replaces the token: it is tried again a minute later (or an interval later, if
    /// shorter).
    pub async fn check_if_due(
        &self,
        valid: &ValidSpec,
        token: &StoredToken,
        interval: SignedDuration,
        last: Option<Timestamp>,
    ) -> CheckPass {
        let now = self.clock.now();
        let retry = self.sessions.check_retry_at(self.uid);
        let due = schedule::next_verify(last, interval, now).max(retry.unwrap_or(now));
        if due > now || !token.times.is_valid_at(now) {
            return CheckPass {
                next_check: due,
                verified_at: None,
                revoked: false,
                suspect: false,
            };
        }
        let check = self.check_token(valid, token).await;
        let retry_at =
            (check == TokenCheck::Unknown).then(|| later(now, interval.min(UNKNOWN_CHECK_RETRY)));
        let answered = matches!(check, TokenCheck::Accepted | TokenCheck::Refused);
        self.sessions.set_check_retry(self.uid, retry_at);
        let refused = check == TokenCheck::Refused;
        let believed =
            refused && schedule::revocation_believed(&self.sessions.revocations(self.uid), now);
        if believed {
            self.sessions.record_revocation(self.uid, now);
        }
        CheckPass {
            next_check: retry_at.unwrap_or(later(now, interval)),
            verified_at: answered.then_some(now),
            revoked: believed,
            suspect: refused && !believed,
        }
    }

    /// Asks the API about the token in place (`spec.verifyInterval`), on the nodes in turn.
    pub async fn check_token(&self, valid: &ValidSpec, token: &StoredToken) -> TokenCheck {
        let nsapi = self.nsapi;
        let cookie = self.sessions.cookie(self.uid);
        let cookie = cookie.as_ref();
        let jwt = valid.token_api == TokenApi::Jwt;
        let result = self
            .on_nodes(valid, None, |node| async move {
                if jwt {
                    nsapi.read_jwt(&node, &token.access_token, cookie).await
                } else {
                    nsapi.read_token(&node, &token.access_token).await
                }
            })
            .await;
        match result {
            Ok(_) => TokenCheck::Accepted,
            Err(error) if error.kind() == ErrorKind::Authentication => {
                info!(%error, "the API refused the token in place");
                TokenCheck::Refused
            }
            Err(error) if error.kind() == ErrorKind::Permanent => {
                info!(%error, "the token check cannot work as configured; the token stays");
                TokenCheck::Unusable
            }
            Err(error) => {
                info!(%error, "the token check failed; the token stays");
                TokenCheck::Unknown
            }
        }
    }

    /// Sends one request to the API nodes in turn until one answers, or fails in a way every
    /// node would: its result, and the node that gave it. `grant` names the request in the
    /// metrics (`None`: not a token request).
    async fn on_nodes<T, F, Fut>(
        &self,
        valid: &ValidSpec,
        grant: impl Into<Option<Grant>>,
        mut send: F,
    ) -> Result<(T, ApiBaseUrl), NsApiError>
    where
        F: FnMut(ApiBaseUrl) -> Fut,
        Fut: Future<Output = Result<T, NsApiError>>,
    {
        let grant = grant.into();
        let order = self.order(valid);
        let last = order.len() - 1;
        for (i, node) in order.into_iter().enumerate() {
            self.wait_turn(node).await;
            let started = std::time::Instant::now();
            let result = send(node.clone()).await;
            if let Some(grant) = grant {
                self.metrics.token_request(
                    grant,
                    &node.host_label(),
                    result.as_ref().err(),
                    started.elapsed(),
                );
            }
            self.record(node, result.as_ref().err());
            match result {
                Ok(value) => return Ok((value, node.clone())),
                Err(error) if i < last && fails_over(&error) => {
                    info!(node = %node, %error, "API node failed; trying the next one");
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("a spec has at least one API node")
    }

    /// The nodes to try, in order.
    fn order<'v>(&self, valid: &'v ValidSpec) -> Vec<&'v ApiBaseUrl> {
        let nodes: Vec<&ApiBaseUrl> = valid.nodes().collect();
        self.health.order(self.trust, &nodes, self.clock.now())
    }

    /// Remembers how a node did (only where there are other nodes to prefer).
    fn record(&self, node: &ApiBaseUrl, error: Option<&NsApiError>) {
        if shows_working(error) {
            self.answers.answered(self.trust, node, self.uid);
        }
        match error {
            None => self.health.answered(self.trust, node),
            Some(error) if fails_over(error) => {
                self.health.failed(self.trust, node, self.clock.now())
            }
            Some(_) => self.health.answered(self.trust, node),
        }
    }

    /// Waits for the rate limit of the API host.
    async fn wait_turn(&self, node: &ApiBaseUrl) {
        let waited = self.limiter.acquire(node.host(), self.deadline).await;
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
