//! Who may scrape the HTTPS `/metrics` (`--metrics-auth=kubernetes`): the request's Bearer token
//! is reviewed by the Kubernetes API (TokenReview, then SubjectAccessReview for `get /metrics`,
//! in `cluster::access_review`), and the answer is cached for a short while, so that a
//! Prometheus scraping every 15 s costs two API calls a minute, not two per scrape.
//!
//! The cache is keyed by the SHA-256 of the token (the token itself is not kept), bounded in
//! size, and forgets an allowed token after [`ALLOW_TTL`], a refused one after [`DENY_TTL`]: a
//! scraper that was just granted access gets in within 10 s, one whose access was revoked (or
//! whose token was deleted) is refused within a minute. Review errors (the API server did not
//! answer) are not cached: the scrape fails with 503 and the next one asks again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, Semaphore};

use crate::cluster::access_review::{self, Access};

/// How long an allowed token is trusted without asking again.
pub const ALLOW_TTL: Duration = Duration::from_secs(60);
/// How long a refused (401 or 403) token is refused without asking again.
pub const DENY_TTL: Duration = Duration::from_secs(10);
/// At most this many decisions are cached (one per distinct token).
pub const CACHE_CAPACITY: usize = 1024;
/// Deadline of each review call (TokenReview, SubjectAccessReview), and of the wait for a turn.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Reviews in flight at once: a flood of requests with made-up tokens cannot become a flood of
/// calls to the API server.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 4;
/// A longer Authorization header is refused without a review.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The path the SubjectAccessReview asks about.
pub const METRICS_PATH: &str = "/metrics";

/// The cache key of a token: its SHA-256.
pub type TokenKey = [u8; 32];

pub fn token_key(token: &str) -> TokenKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Decisions by token, each until it expires. Pure: the time is passed in.
#[derive(Debug)]
pub struct DecisionCache {
    entries: HashMap<TokenKey, (Access, Instant)>,
    capacity: usize,
    allow_ttl: Duration,
    deny_ttl: Duration,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache::new(CACHE_CAPACITY, ALLOW_TTL, DENY_TTL)
    }
}

impl DecisionCache {
    pub fn new(capacity: usize, allow_ttl: Duration, deny_ttl: Duration) -> DecisionCache {
        DecisionCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            allow_ttl,
            deny_ttl,
        }
    }

    /// The decision for `key` if it has not expired at `now` (an expired one is dropped).
    pub fn get(&mut self, key: &TokenKey, now: Instant) -> Option<Access> {
        match self.entries.get(key) {
            Some((access, expires)) if now < *expires => Some(access.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `access` for `key` from `now`. When full, expired entries go first, then the
    /// one closest to expiry.
    pub fn insert(&mut self, key: TokenKey, access: Access, now: Instant) {
        let ttl = match access {
            Access::Allowed { .. } => self.allow_ttl,
            Access::Forbidden { .. } | Access::Unauthenticated => self.deny_ttl,
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| *k)
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key, (access, now + ttl));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_LEN)
        .then_some(token)
}

/// Reviews the Bearer tokens of scrapes against the Kubernetes API, with the cache above.
pub struct Authorizer {
    client: kube::Client,
    cache: Mutex<DecisionCache>,
    turns: Semaphore,
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Authorizer {
        Authorizer {
            client,
            cache: Mutex::new(DecisionCache::default()),
            turns: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    /// `Ok` when the request may read `/metrics`; otherwise the response to send (401, 403, or
    /// 503 when the review itself failed).
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = bearer_token(headers) else {
            return Err(unauthorized());
        };
        let key = token_key(token);
        let cached = self.cache.lock().await.get(&key, Instant::now());
        let access = match cached {
            Some(access) => access,
            None => {
                let Ok(_turn) = tokio::time::timeout(REVIEW_TIMEOUT, self.turns.acquire()).await
                else {
                    tracing::warn!("too many /metrics authorisation reviews waiting; refusing");
                    return Err(unavailable());
                };
                let reviewed =
                    access_review::review(&self.client, token, METRICS_PATH, REVIEW_TIMEOUT).await;
                match reviewed {
                    Ok(access) => {
                        self.cache
                            .lock()
                            .await
                            .insert(key, access.clone(), Instant::now());
                        access
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not review the token of a /metrics request");
                        return Err(unavailable());
                    }
                }
            }
        };
        match access {
            Access::Allowed { .. } => Ok(()),
            Access::Forbidden { user } => {
                tracing::debug!(%user, "refused /metrics: no RBAC grant for get /metrics");
                Err((StatusCode::FORBIDDEN, "Forbidden\n").into_response())
            }
            Access::Unauthenticated => Err(unauthorized()),
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "Unauthorized\n",
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "could not check the token; try again\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Access {
        Access::Allowed {
            user: "system:serviceaccount:monitoring:prometheus".into(),
        }
    }

    fn forbidden() -> Access {
        Access::Forbidden {
            user: "system:serviceaccount:x:y".into(),
        }
    }

    #[test]
    fn allowed_decisions_last_a_minute_refusals_ten_seconds() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        let (a, f, u) = (token_key("a"), token_key("f"), token_key("u"));
        cache.insert(a, allowed(), t0);
        cache.insert(f, forbidden(), t0);
        cache.insert(u, Access::Unauthenticated, t0);
        let later = t0 + Duration::from_secs(9);
        assert_eq!(cache.get(&a, later), Some(allowed()));
        assert_eq!(cache.get(&f, later), Some(forbidden()));
        assert_eq!(cache.get(&u, later), Some(Access::Unauthenticated));
        let after_deny = t0 + DENY_TTL;
        assert_eq!(cache.get(&f, after_deny), None);
        assert_eq!(cache.get(&u, after_deny), None);
        assert_eq!(cache.get(&a, after_deny), Some(allowed()));
        assert_eq!(
            cache.get(&a, t0 + ALLOW_TTL - Duration::from_millis(1)),
            Some(allowed())
        );
        assert_eq!(cache.get(&a, t0 + ALLOW_TTL), None);
        assert!(cache.is_empty(), "expired entries are dropped when read");
    }

    #[test]
    fn a_new_decision_replaces_the_old_one() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::default();
        let k = token_key("t");
        cache.insert(k, forbidden(), t0);
        cache.insert(k, allowed(), t0 + Duration::from_secs(5));
        assert_eq!(cache.get(&k, t0 + Duration::from_secs(30)), Some(allowed()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_expired_then_soonest_to_expire() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(3, ALLOW_TTL, DENY_TTL);
        cache.insert(token_key("refused"), forbidden(), t0); // expires at 10 s
        cache.insert(token_key("a"), allowed(), t0);
        cache.insert(token_key("b"), allowed(), t0 + Duration::from_secs(1));
        // Full; at 11 s the refusal has expired and makes room.
        let t11 = t0 + Duration::from_secs(11);
        cache.insert(token_key("c"), allowed(), t11);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&token_key("refused"), t0), None);
        // Full of live entries: the one closest to expiry ("a") goes.
        cache.insert(token_key("d"), allowed(), t11);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&token_key("a"), t11), None);
        for kept in ["b", "c", "d"] {
            assert_eq!(cache.get(&token_key(kept), t11), Some(allowed()), "{kept}");
        }
        // Many distinct tokens never grow it past its capacity.
        for i in 0..100 {
            cache.insert(token_key(&format!("x{i}")), Access::Unauthenticated, t11);
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn keys_are_digests_not_tokens() {
        assert_ne!(token_key("a"), token_key("b"));
        assert_eq!(token_key("a"), token_key("a"));
        let mut cache = DecisionCache::default();
        cache.insert(token_key("secret-token"), allowed(), Instant::now());
        assert!(!format!("{cache:?}").contains("secret-token"));
    }

    #[test]
    fn only_a_bearer_header_carries_a_token() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_token(&with("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer_token(&with("Bearer ")), None);
        assert_eq!(bearer_token(&with("Bearer")), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer_token(&with(&long)), None);
    }
}
