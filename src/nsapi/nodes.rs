//! Which API nodes to try, in what order (`spec.apiBaseUrl`, then `spec.fallbackApiBaseUrls`):
//! a node that failed transiently is skipped for a while, then one request probes it again
//! (claimed, so that only one caller probes at a time); a success makes it preferred again.
//! Shared by the credentials that reach a node the same way (the same URL and the same trusted
//! CA bundle): one outage is learned once, and one tenant's unusable CA bundle never marks a
//! node down for the others. In memory only. Also how an answer is read for a node: worth
//! another node (`fails_over`), the node down (`is_outage`), the node working (`shows_working`).

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use crate::core::api_error::{ErrorKind, NsApiError};
use crate::core::base_url::ApiBaseUrl;
use crate::core::clock::later;

/// How long a node that failed is passed over before a request probes it again.
pub const PROBE_AFTER: SignedDuration = SignedDuration::from_secs(60);

/// Whether another node might answer where this one failed: the node is unreachable, slow,
/// failing (5xx), blocking us (a firewall page) or presents a certificate we refuse. A refused
/// login, MFA, a request that can never work, and a 429 (slow down) are the same on every node
/// of a cluster: trying another would only lock the account faster, or hammer the cluster.
pub fn fails_over(error: &NsApiError) -> bool {
    match error.kind() {
        ErrorKind::Transient => error.metric_label() != "rate_limited",
        ErrorKind::TlsUntrusted => true,
        ErrorKind::Authentication
        | ErrorKind::RefreshRejected
        | ErrorKind::MfaRequired
        | ErrorKind::Permanent => false,
    }
}

/// Whether `error` says the host is down (rather than that it answered): worth waking the
/// credential as soon as the host answers someone else (`cluster::outages`).
pub fn is_outage(error: &NsApiError) -> bool {
    error.kind() == ErrorKind::Transient
        && error.retry_after().is_none()
        && matches!(
            error.metric_label(),
            "connect_failed" | "connect_timeout" | "timeout" | "network" | "server_error"
        )
}

/// Told when a node answers: with a token, or with an answer a working server gives (a refused
/// login, say), not with an outage's, a firewall's or a rate limit's.
pub trait Answers: Send + Sync {
    /// `node`, reached through `trust`, answered the credential `uid`.
    fn answered(&self, trust: &str, node: &ApiBaseUrl, uid: &str);
}

/// Whether a request's result shows the node working: a token, or an answer that is not an
/// outage's, a firewall's, a rate limit's or an untrusted certificate's.
pub fn shows_working(result: Option<&NsApiError>) -> bool {
    result
        .is_none_or(|error| !matches!(error.kind(), ErrorKind::Transient | ErrorKind::TlsUntrusted))
}

/// How long a node's failure is remembered at most, once its time out is over and nobody
/// probed it again (its credentials were deleted or changed): the map stays bounded.
const FORGET_AFTER: SignedDuration = SignedDuration::from_hours(1);

/// The health of API nodes, by base URL as reached through one trust (the digest of a
/// credential's CA bundle, `""` for the operator's own roots).
#[derive(Debug, Default)]
pub struct NodeHealth(Mutex<HashMap<(String, String), Timestamp>>);

impl NodeHealth {
    /// The order to try `nodes` in (the primary first): those passed over come last. A node
    /// whose time out is over is tried in its place, and passed over by everyone else for
    /// another [`PROBE_AFTER`] unless it answers.
    pub fn order<'n>(
        &self,
        trust: &str,
        nodes: &[&'n ApiBaseUrl],
        now: Timestamp,
    ) -> Vec<&'n ApiBaseUrl> {
        if nodes.len() < 2 {
            return nodes.to_vec();
        }
        let mut down = self.lock();
        let (mut ready, mut passed_over) = (Vec::new(), Vec::new());
        for node in nodes {
            match down.get_mut(&key(trust, node)) {
                Some(until) if *until > now => passed_over.push(*node),
                Some(until) => {
                    // Its time out is over: this caller probes it.
                    *until = later(now, PROBE_AFTER);
                    ready.push(*node);
                }
                None => ready.push(*node),
            }
        }
        ready.extend(passed_over);
        ready
    }

    /// A node failed in a way another node might not.
    pub fn failed(&self, trust: &str, node: &ApiBaseUrl, now: Timestamp) {
        let mut down = self.lock();
        down.retain(|_, until| later(*until, FORGET_AFTER) > now);
        down.insert(key(trust, node), later(now, PROBE_AFTER));
    }

    /// A node answered.
    pub fn answered(&self, trust: &str, node: &ApiBaseUrl) {
        let mut down = self.lock();
        if !down.is_empty() {
            down.remove(&key(trust, node));
        }
    }

    /// How many nodes are remembered as failed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Timestamp>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(trust: &str, node: &ApiBaseUrl) -> (String, String) {
    (trust.to_owned(), node.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ApiBaseUrl {
        ApiBaseUrl::parse(s, false).unwrap()
    }

    fn outage(label: &'static str, retry_after: Option<u64>) -> NsApiError {
        NsApiError::Transient {
            message: "m".into(),
            status: None,
            retry_after: retry_after.map(std::time::Duration::from_secs),
            label,
        }
    }

    #[test]
    fn only_a_host_that_is_down_is_an_outage() {
        for label in [
            "connect_failed",
            "connect_timeout",
            "timeout",
            "network",
            "server_error",
        ] {
            assert!(is_outage(&outage(label, None)), "{label}");
        }
        // Told when to come back, or answered (badly): not woken by someone else's answer.
        assert!(!is_outage(&outage("server_error", Some(30))));
        assert!(!is_outage(&outage("firewall", Some(900))));
        for label in ["rate_limited", "malformed_response", "unexpected_status"] {
            assert!(!is_outage(&outage(label, None)), "{label}");
        }
        let refused = NsApiError::Authentication {
            message: "m".into(),
            status: Some(401),
            label: "authentication",
        };
        assert!(!is_outage(&refused));
    }

    #[test]
    fn a_failed_node_is_passed_over_then_probed_by_one_caller() {
        let (ny, dal) = (
            url("https://ny.example.com/"),
            url("https://dal.example.com/"),
        );
        let nodes = [&ny, &dal];
        let health = NodeHealth::default();
        let t0: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(health.order("", &nodes, t0), [&ny, &dal]);
        health.failed("", &ny, t0);
        // Passed over (tried last) during its time out.
        assert_eq!(
            health.order("", &nodes, t0 + SignedDuration::from_secs(30)),
            [&dal, &ny]
        );
        // Then one caller probes it; the next caller still passes it over.
        let later = t0 + PROBE_AFTER;
        assert_eq!(health.order("", &nodes, later), [&ny, &dal]);
        assert_eq!(health.order("", &nodes, later), [&dal, &ny]);
        // It answered: preferred again.
        health.answered("", &ny);
        assert_eq!(health.order("", &nodes, later), [&ny, &dal]);
    }

    #[test]
    fn a_node_is_down_only_for_those_who_reach_it_the_same_way() {
        let (ny, dal) = (
            url("https://ny.example.com/"),
            url("https://dal.example.com/"),
        );
        let nodes = [&ny, &dal];
        let health = NodeHealth::default();
        let t0: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        // One tenant's CA bundle does not trust ny: ny is down for that bundle only.
        health.failed("digest-of-a-bad-bundle", &ny, t0);
        assert_eq!(
            health.order("digest-of-a-bad-bundle", &nodes, t0),
            [&dal, &ny]
        );
        assert_eq!(health.order("", &nodes, t0), [&ny, &dal]);
        assert_eq!(health.order("another-bundle", &nodes, t0), [&ny, &dal]);
    }

    #[test]
    fn failures_nobody_probes_again_are_forgotten() {
        let health = NodeHealth::default();
        let t0: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        for i in 0..10 {
            health.failed(&format!("bundle-{i}"), &url("https://ny.example.com/"), t0);
        }
        assert_eq!(health.len(), 10);
        let much_later = t0 + PROBE_AFTER + FORGET_AFTER;
        health.failed("", &url("https://dal.example.com/"), much_later);
        assert_eq!(health.len(), 1);
    }

    #[test]
    fn only_failures_another_node_might_not_have_fail_over() {
        let transient = |label| NsApiError::Transient {
            message: String::new(),
            status: None,
            retry_after: None,
            label,
        };
        assert!(fails_over(&transient("timeout")));
        assert!(fails_over(&transient("network")));
        assert!(fails_over(&transient("server_error")));
        assert!(fails_over(&transient("firewall")));
        assert!(!fails_over(&transient("rate_limited")));
        assert!(fails_over(&NsApiError::TlsUntrusted {
            message: String::new()
        }));
        assert!(!fails_over(&NsApiError::Authentication {
            message: String::new(),
            status: Some(401),
            label: "authentication",
        }));
        assert!(!fails_over(&NsApiError::MfaRequired {
            message: String::new()
        }));
    }
}
