//! The NetSapiens API client: password and refresh grants (v1 and v2), token inspection,
//! base-URL normalisation and a typed error that says whether retrying can help.
//! It knows nothing of Kubernetes, and never prints a secret or an unredacted URL.

mod base_url;
mod client;
mod error;
mod secret;
mod token;

pub use base_url::{ApiBaseUrl, BaseUrlError, redact_url};
pub use client::{NsApiClient, NsApiClientConfig};
pub use error::{ErrorKind, FIREWALL_BACKOFF, MAX_RETRY_AFTER, NsApiError};
pub use secret::{ClientCredentials, SecretString, SubscriberCredentials};
pub use token::{Grant, RefreshMethod, TokenApi, TokenGrant, TokenInfo};
