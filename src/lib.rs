//! nsapi-token-operator: keeps a NetSapiens API OAuth2 Bearer token in a Kubernetes Secret,
//! always valid. The binary in `main.rs` wires these modules together.
#![forbid(unsafe_code)]

pub mod clock;
pub mod nsapi;
