//! The pure layer: values and decisions, no IO. Nothing here talks to Kubernetes, to
//! NetSapiens or to a socket, or reads a clock: time comes in as `now`. Everything above may
//! use it; it uses nothing above it (`tests/layers.rs` checks both).
//!
//! - the resource: `crd` (types, schema, CEL rules), `conditions` (types and the one list of
//!   reasons);
//! - the NetSapiens vocabulary: `token` (grants and the tokens they return), `api_error` (the
//!   typed error that says whether retrying can help), `credentials` (values that never print),
//!   `totp` (an MFA user's one-time passcodes, never one twice), `base_url`;
//! - the decisions: `policy` (is the spec acceptable), `inputs` (credentials read from the input
//!   Secrets), `schedule` (when to mint, backoff), `token_secret` (the desired output Secret),
//!   `template` (the keys a tokenSecret.template renders, in a bounded sandbox),
//!   `restarts` (which workloads to restart, which pods keep an old token), `status` (status,
//!   Events, metric values and requeue after a pass);
//! - helpers: `clock` (where `now` comes from, how times are written), `text`, `build` (this
//!   binary's version and commit).

pub mod api_error;
pub mod base_url;
pub mod build;
pub mod clock;
pub mod conditions;
pub mod crd;
pub mod credentials;
pub mod inputs;
pub mod policy;
pub mod restarts;
pub mod schedule;
pub mod status;
pub mod template;
pub mod text;
pub mod token;
pub mod token_secret;
pub mod totp;
