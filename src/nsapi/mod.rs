//! The NetSapiens API client: password and refresh grants (v1 and v2), token inspection,
//! base-URL normalisation and a typed error that says whether retrying can help.
//! It knows nothing of Kubernetes, and never prints a secret or an unredacted URL.
//!
//! - `client.rs`: builds and sends requests (the only IO here);
//! - `token.rs`: request enums and the typed, leniently parsed answers;
//! - `classify.rs`: answers and transport failures to [`NsApiError`] (pure);
//! - `redact.rs`: scrubbing of server text, URLs and error chains (pure);
//! - `error.rs`, `credentials.rs`, `base_url.rs`: the types those share.

mod base_url;
pub(crate) mod classify;
mod client;
mod credentials;
mod error;
mod redact;
pub mod tls;
pub(crate) mod token;

pub use base_url::{ApiBaseUrl, BaseUrlError};
pub use client::{NsApiClient, NsApiClientConfig};
pub use credentials::{ClientCredentials, Confidential, SubscriberCredentials};
pub use error::{ErrorKind, FIREWALL_BACKOFF, MAX_RETRY_AFTER, NsApiError};
pub use redact::redact_url;
pub use token::{Grant, MAX_TOKEN_LIFETIME, RefreshMethod, TokenApi, TokenGrant, TokenInfo};
