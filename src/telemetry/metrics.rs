//! Prometheus metrics. Labels carry only names, grants and low-cardinality error labels:
//! never a secret, never a URL.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::api_error::NsApiError;
use crate::core::conditions::{
    CONSUMERS_CANNOT_REFRESH, DEGRADED, READY, ROLLOUT_RESTART, SETTINGS_IGNORED,
};
use crate::core::crd::{NsApiCredential, NsApiCredentialStatus};
use crate::core::token::Grant;

/// Every value of the `error` label of `reconcile_errors`: what `cluster::Error::metric_label`
/// returns (a test there keeps the two equal), and `internal` for a pass that panicked.
pub const RECONCILE_ERROR_LABELS: [&str; 6] = [
    "crd_not_installed",
    "internal",
    "kube_api",
    "kube_client",
    "missing_field",
    "template",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    condition: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The condition types exported, and their possible statuses.
const CONDITIONS: [&str; 5] = [
    READY,
    DEGRADED,
    ROLLOUT_RESTART,
    CONSUMERS_CANNOT_REFRESH,
    SETTINGS_IGNORED,
];
const STATUSES: [&str; 3] = ["True", "False", "Unknown"];

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
    refresh_lead: Family<CredentialLabels, Gauge>,
    next_refresh: Family<CredentialLabels, Gauge>,
    token_requests: Family<RequestLabels, Counter>,
    request_seconds: Family<GrantLabels, Histogram>,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    rate_limit_wait: Histogram,
    ready: Family<CredentialLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    failures: Family<CredentialLabels, Gauge>,
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
        let refresh_lead = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "token_refresh_lead_seconds",
            "How long before its expiry a credential's token is due for rotation (spec.refreshBefore as applied); a token closer to expiry than this missed its rotation",
            refresh_lead.clone(),
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
        // Every series at 0 from the start, so that rates and alerts see the first error.
        for label in RECONCILE_ERROR_LABELS {
            let _ = reconcile_errors.get_or_create(&ErrorLabels {
                error: label.to_owned(),
            });
        }
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
        let ready = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_ready",
            "1 while the credential's output Secret holds a valid token (condition Ready=True), else 0",
            ready.clone(),
        );
        let condition = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "credential_condition",
            "1, with the status a credential's condition has (True, False or Unknown) as a label; one series per condition",
            condition.clone(),
        );
        let failures = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_consecutive_failures",
            "Failed token requests of a credential since its last success",
            failures.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The operator's version; always 1", build);
        Self {
            registry,
            ready,
            condition,
            failures,
            rate_limit_wait,
            token_expiry,
            refresh_lead,
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

    /// Records (or clears, with `None`) a credential's expiry, rotation lead and next planned
    /// request.
    pub fn token_times(
        &self,
        credential: &NsApiCredential,
        expires_at: Option<Timestamp>,
        lead: Option<SignedDuration>,
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
        match lead {
            Some(lead) => {
                self.refresh_lead.get_or_create(&labels).set(lead.as_secs());
            }
            None => {
                self.refresh_lead.remove(&labels);
            }
        }
    }

    /// Records a credential's conditions and failure count, as its status says.
    pub fn credential_status(&self, credential: &NsApiCredential, status: &NsApiCredentialStatus) {
        let (namespace, name) = (
            credential.namespace().unwrap_or_default(),
            credential.name_any(),
        );
        let labels = CredentialLabels {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let ready = status.condition(READY).is_some_and(|c| c.status == "True");
        self.ready.get_or_create(&labels).set(i64::from(ready));
        self.failures
            .get_or_create(&labels)
            .set(i64::from(status.consecutive_failures));
        // One series per condition, for the status it has (a fleet of thousands keeps a third
        // of the series that 0-valued ones for the other statuses would need).
        for type_ in CONDITIONS {
            let current = status.condition(type_).map(|c| c.status.as_str());
            for value in STATUSES {
                let series = ConditionLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    condition: type_.to_owned(),
                    status: value.to_owned(),
                };
                if current == Some(value) {
                    self.condition.get_or_create(&series).set(1);
                } else {
                    self.condition.remove(&series);
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
        self.refresh_lead.remove(&labels);
        self.next_refresh.remove(&labels);
        self.ready.remove(&labels);
        self.failures.remove(&labels);
        for type_ in CONDITIONS {
            for value in STATUSES {
                self.condition.remove(&ConditionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    condition: type_.to_owned(),
                    status: value.to_owned(),
                });
            }
        }
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
        assert!(
            text.contains(&format!(
                "nsapi_token_operator_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn conditions_become_series_and_leave_with_the_credential() {
        let m = Metrics::default();
        let mut credential: NsApiCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": "abc", "namespace": "ns"},
            "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                     "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
        }))
        .unwrap();
        let status: NsApiCredentialStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "SecretMissing", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
            "consecutiveFailures": 3,
        }))
        .unwrap();
        credential.status = Some(status.clone());
        m.credential_status(&credential, &status);
        let text = m.encode();
        for line in [
            r#"nsapi_token_operator_credential_ready{namespace="ns",name="abc"} 0"#,
            r#"nsapi_token_operator_credential_condition{namespace="ns",name="abc",condition="Ready",status="False"} 1"#,
            r#"nsapi_token_operator_credential_consecutive_failures{namespace="ns",name="abc"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // Only the status a condition has is a series; when it changes, the old one leaves.
        assert!(
            !text.contains(r#"condition="Ready",status="True""#),
            "{text}"
        );
        let ready: NsApiCredentialStatus = serde_json::from_value(serde_json::json!({
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "TokenIssued", "message": "",
                 "lastTransitionTime": "2026-01-01T00:01:00Z"}
            ],
        }))
        .unwrap();
        m.credential_status(&credential, &ready);
        let text = m.encode();
        assert!(
            text.contains(r#"condition="Ready",status="True"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"condition="Ready",status="False""#),
            "{text}"
        );
        m.forget("ns", "abc");
        assert!(!m.encode().contains("name=\"abc\""));
    }
}
