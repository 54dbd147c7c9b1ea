//! Prometheus metrics. Labels carry only names, grants and low-cardinality error labels:
//! never a secret, never a URL.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::NsApiCredential;
use crate::nsapi::{Grant, NsApiError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    grant: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    grant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

pub struct Metrics {
    registry: Registry,
    token_expiry: Family<CredentialLabels, Gauge>,
    next_refresh: Family<CredentialLabels, Gauge>,
    token_requests: Family<RequestLabels, Counter>,
    request_seconds: Family<GrantLabels, Histogram>,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    rate_limit_wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nsapi_token_operator");
        let token_expiry = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "Unix time at which the current token of a credential expires",
            token_expiry.clone(),
        );
        let next_refresh = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "next_refresh_timestamp_seconds",
            "Unix time of the next planned token request of a credential",
            next_refresh.clone(),
        );
        let token_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token requests sent to the NetSapiens API, by grant and result",
            token_requests.clone(),
        );
        let request_seconds = Family::<GrantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "token_request_duration_seconds",
            "Latency of token requests to the NetSapiens API",
            request_seconds.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed on the Kubernetes API, by error",
            reconcile_errors.clone(),
        );
        let rate_limit_wait = Histogram::new([0.0, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0]);
        registry.register(
            "rate_limit_wait_seconds",
            "Time NetSapiens requests waited for the per-host rate limit",
            rate_limit_wait.clone(),
        );
        Self {
            registry,
            rate_limit_wait,
            token_expiry,
            next_refresh,
            token_requests,
            request_seconds,
            reconciles,
            reconcile_errors,
        }
    }
}

impl Metrics {
    pub fn reconcile(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_error(&self, label: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    pub fn rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_wait.observe(waited.as_secs_f64());
    }

    pub fn token_request(&self, grant: Grant, error: Option<&NsApiError>, took: Duration) {
        let result = error.map_or("ok", |e| e.metric_label());
        self.token_requests
            .get_or_create(&RequestLabels {
                grant: grant.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&GrantLabels {
                grant: grant.as_str().to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records (or clears, with `None`) a credential's expiry and next planned request.
    pub fn token_times(
        &self,
        credential: &NsApiCredential,
        expires_at: Option<Timestamp>,
        next_refresh_at: Option<Timestamp>,
    ) {
        let labels = CredentialLabels {
            namespace: credential.namespace().unwrap_or_default(),
            name: credential.name_any(),
        };
        for (family, at) in [
            (&self.token_expiry, expires_at),
            (&self.next_refresh, next_refresh_at),
        ] {
            match at {
                Some(at) => {
                    family.get_or_create(&labels).set(at.as_second());
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    /// Drops the series of a deleted credential.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = CredentialLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.token_expiry.remove(&labels);
        self.next_refresh.remove(&labels);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::default();
        m.reconcile();
        m.token_request(Grant::Password, None, Duration::from_millis(20));
        let text = m.encode();
        assert!(
            text.contains("nsapi_token_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nsapi_token_operator_token_requests_total{grant="password",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("nsapi_token_operator_token_request_duration_seconds_bucket"));
    }
}
