//! Kubernetes IO: the watches and the work queue (`controller`), what the watch keeps of each
//! credential (`watched`), when its next pass is due (`timers`), the credential names these
//! tables share (`names`), one pass over one credential (`reconciler`), recording what it
//! decided (`record`, `events`), the output Secret (`output_secret`), what every pass shares
//! (`context`), the credentials waiting out an outage of their API host (`outages`), the
//! Secret-to-credential `index`, `namespaces` being deleted, restart targets and
//! consumers (`consumers`), CA bundles read from ConfigMaps and Secrets (`trust`), the client
//! with request deadlines (`kube_client`), Lease election (`leader`), the sweep that starts a
//! pass a credential was owed and never got (`sweep`), and the TokenReview and
//! SubjectAccessReview of a `/metrics` scrape (`access_review`). Every decision is taken in
//! `core`; NetSapiens calls go through `nsapi`.

pub mod access_review;
pub mod consumers;
pub mod context;
pub mod controller;
pub mod events;
pub mod index;
pub mod kube_client;
pub mod leader;
pub mod names;
pub mod namespaces;
pub mod outages;
pub mod output_secret;
pub mod reconciler;
pub mod record;
pub mod sweep;
pub mod timers;
pub mod trust;
pub mod watched;

/// Errors that end a reconcile pass early; it is retried. Problems with a credential itself
/// (bad spec, missing Secret, refused login) are not errors: they become conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the NsApiCredential CRD is not served (is it installed? `kubectl apply -f deploy/crds/`): {0}"
    )]
    CrdNotInstalled(#[source] kube::Error),
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    /// `spec.tokenSecret.template` could not be rendered: the user's to fix.
    #[error("{0}")]
    Template(#[from] crate::core::template::TemplateError),
}

impl Error {
    /// A low-cardinality label for metrics (one of
    /// [`RECONCILE_ERROR_LABELS`](crate::telemetry::metrics::RECONCILE_ERROR_LABELS)).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CrdNotInstalled(_) => "crd_not_installed",
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::MissingField(_) => "missing_field",
            Error::Template(_) => "template",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::RECONCILE_ERROR_LABELS;

    #[test]
    fn every_error_label_is_one_the_metric_starts_at_zero() {
        let errors = [
            Error::CrdNotInstalled(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::Kube(kube::Error::Api(Box::new(kube::core::Status::failure(
                "x", "y",
            )))),
            Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::MissingField("uid"),
            Error::Template(crate::core::template::TemplateError {
                key: "k".into(),
                why: "x".into(),
            }),
        ];
        let mut labels: Vec<_> = errors.iter().map(Error::metric_label).collect();
        labels.push("internal"); // a panicked pass (reconciler::internal_error)
        labels.sort_unstable();
        let mut all = RECONCILE_ERROR_LABELS.to_vec();
        all.sort_unstable();
        assert_eq!(labels, all);
    }
}
