//! nsapi-token-operator: keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret,
//! always valid. The binary in `main.rs` wires these modules together.
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod crd;
pub mod inputs;
pub mod leader;
pub mod metrics;
pub mod nsapi;
pub mod reconciler;
pub mod schedule;
pub mod status;
pub mod telemetry;
pub mod token_secret;

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
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CrdNotInstalled(_) => "crd_not_installed",
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::MissingField(_) => "missing_field",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
