//! nsapi-token-operator: keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret,
//! always valid. The binary in `main.rs` wires these modules together.
//!
//! How data flows through one reconcile pass:
//!
//! ```text
//! controller ──(a credential or a Secret it uses changed, or its requeue came)──> reconciler
//! reconciler reads the credential, the output Secret, the input Secrets, then asks:
//!   output_secret the token in place (read back from the output Secret's record)
//!   policy        is the spec acceptable to this operator (URL, allowed hosts)?
//!   inputs        the credentials from the input Secrets, and their fingerprint
//!   schedule      is a token due now, or when?                           (pure, takes `now`)
//!   trust         the NetSapiens client that trusts the credential's CA bundle
//!   grants        refresh grant with the session's refresh token, else password grant;
//!                 a due token check (spec.verifyInterval)
//!     nodes       which API node to ask first (fallbackApiBaseUrls)
//!     nsapi       the HTTP calls and their typed errors                  (no Kubernetes)
//!     sessions    the refresh token held in memory between passes
//!   token_secret  the output Secret to write                             (pure)
//!   output_secret writes it: create, patch or nothing
//!   status        the status, Events, metric values and requeue          (pure, takes `now`)
//! reconciler writes the output Secret, the Events, the metrics and the status.
//! ```
//!
//! After a new token, `consumers` restarts the workloads that read it only at start and names
//! pods that never see a new one; `record` then writes the metrics, the Events (through a
//! recorder renewed every two minutes) and the status.
//!
//! Around it: `crd` (the resource's types), `conditions` (condition types and reasons),
//! `controller` (watches, the Secret `index`, error policy), `namespaces` (namespaces being
//! deleted), `ratelimit` (per-host request budget), `kube_client` (request deadlines), `leader`
//! (Lease election), `admin` (health and metrics server), `metrics`, `telemetry` (logging),
//! `clock` (where `now` comes from), `text` (string helpers), `cli` (the command line for
//! people).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod consumers;
pub mod controller;
pub mod crd;
pub mod grants;
pub mod index;
pub mod inputs;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod namespaces;
pub mod nodes;
pub mod nsapi;
pub mod output_secret;
pub mod policy;
#[cfg(test)]
mod properties;
pub mod ratelimit;
pub mod reconciler;
pub mod record;
pub mod schedule;
pub mod sessions;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod token_secret;
pub mod trust;

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
    /// Every value of [`Error::metric_label`].
    pub const METRIC_LABELS: [&'static str; 4] = [
        "crd_not_installed",
        "kube_api",
        "kube_client",
        "missing_field",
    ];

    /// A low-cardinality label for metrics (one of [`Error::METRIC_LABELS`]).
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

/// Makes rustls' ring provider the process default, which the Kubernetes client and the
/// NetSapiens client both use. Harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
