//! People and tools: the command line (`cli`, also `kubectl nscred`), the health and metrics
//! server (`admin`), and the opt-in HTTPS `/metrics` (`secure_metrics`) with its Kubernetes
//! authentication and authorisation (`metrics_auth`). The top layer: it may use every layer
//! below, nothing uses it.

pub mod admin;
pub mod cli;
pub mod metrics_auth;
pub mod secure_metrics;
