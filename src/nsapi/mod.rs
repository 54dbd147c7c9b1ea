//! The NetSapiens side: everything that talks to the NetSapiens API, and nothing that talks to
//! Kubernetes. Its values (tokens, grants, errors, credentials, base URLs) are `core`'s.
//!
//! The client, which knows nothing of the operator:
//! - `client.rs`: builds and sends requests (HTTP);
//! - `answer.rs`: lenient parsing of the token answers (pure);
//! - `classify.rs`: answers and transport failures to typed errors (pure);
//! - `redact.rs`: scrubbing of server text, URLs and error chains (pure);
//! - `tls.rs`: the rustls set-up and certificate checks that name what was refused.
//!
//! The operator's use of it, one credential at a time:
//! - `grants.rs`: refresh grant with the session's refresh token, else password grant; a due
//!   token check;
//! - `sessions.rs`: the refresh tokens held in memory between passes (each used once);
//! - `nodes.rs`: which API node to ask first (`spec.fallbackApiBaseUrls`);
//! - `ratelimit.rs`: the per-host request budget, earliest expiry first.

pub(crate) mod answer;
pub(crate) mod classify;
mod client;
pub mod grants;
pub mod nodes;
pub mod ratelimit;
mod redact;
pub mod sessions;
pub mod tls;

pub use client::{Login, MfaChallenge, NsApiClient, NsApiClientConfig};
pub use redact::redact_url;
