//! People and tools: the command line (`cli`, also `kubectl nscred`) and the health and metrics
//! server (`admin`). The top layer: it may use every layer below, nothing uses it.

pub mod admin;
pub mod cli;
