//! nsapi-token-operator: keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret,
//! always valid. The binary in `main.rs` wires these layers together.
//!
//! The tree is the architecture. Five layers, each a folder; a layer uses only the layers
//! below it (`tests/layers.rs` fails on an arrow upwards, an import circle, or IO in `core`):
//!
//! ```text
//! ops/        people and tools: the CLI (`kubectl nscred`), the health and metrics server
//! cluster/    Kubernetes IO: watches, one pass, recording, the output Secret, leader election
//! nsapi/      NetSapiens IO: the HTTP client, grants, sessions, API nodes, the rate limit
//! telemetry/  what the operator tells about itself: Prometheus metrics, logging
//! core/       pure: the resource's types, the NetSapiens vocabulary, and every decision
//!             (schedule, status, conditions, policy, the desired Secret, restart plans);
//!             no Kubernetes client, no HTTP, no sockets, no clock reads
//! ```
//!
//! How data flows through one reconcile pass:
//!
//! ```text
//! cluster::controller ──(a credential or a Secret it uses changed, or its requeue came)──>
//! cluster::reconciler reads the credential, the output Secret, the input Secrets, then asks:
//!   cluster::output_secret the token in place (read back from the output Secret's record)
//!   core::policy           is the spec acceptable to this operator (URL, allowed hosts)?
//!   core::inputs           the credentials from the input Secrets, and their fingerprint
//!   core::schedule         is a token due now, or when?                      (takes `now`)
//!   cluster::trust         the NetSapiens client that trusts the credential's CA bundle
//!   nsapi::grants          refresh grant with the session's refresh token, else password
//!                          grant; a due token check (spec.verifyInterval)
//!     nsapi::nodes         which API node to ask first (fallbackApiBaseUrls)
//!     nsapi::ratelimit     the per-host request budget
//!     nsapi::NsApiClient   the HTTP calls and their typed errors           (no Kubernetes)
//!     nsapi::sessions      the refresh token held in memory between passes
//!   core::token_secret     the output Secret to write
//!   cluster::output_secret writes it: create, patch or nothing
//!   cluster::consumers     restarts the workloads that read the token only at start, names
//!                          pods that never see a new one (decided by core::restarts)
//!   core::status           the status, Events, metric values and requeue     (takes `now`)
//! cluster::record writes the metrics, the Events (cluster::events) and the status.
//! ```
//!
//! Shared by every pass: `cluster::context` (clients, policy, in-memory state). Around it:
//! `cluster::index` (which credentials use which Secret), `cluster::namespaces` (namespaces
//! being deleted), `cluster::kube_client` (request deadlines), `cluster::leader` (Lease
//! election), `ops::admin` (health and metrics server), `ops::cli`.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod core;
pub mod nsapi;
pub mod ops;
#[cfg(test)]
mod properties;
pub mod telemetry;
