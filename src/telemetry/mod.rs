//! What the operator tells about itself: the Prometheus metrics every layer above records
//! (`metrics`) and the logging set-up (`logging`). No Kubernetes, no NetSapiens.

pub mod logging;
pub mod metrics;
pub mod queue;
