//! One node's public handle, [`NodeHandle`]: take it down and up, make it answer one status or
//! hang, read its counters, inject faults on it alone. A thin front on [`crate::server`], where
//! nodes listen and serve; it must not reach into `admin` or `api`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::fault::Fault;
use crate::model::Stats;
use crate::server::{Node, NodeState, Running};

/// One node of a running simulator: its own port and base URL over the shared store, its own
/// counters, and controls that leave the other nodes alone. Cheap to clone; it keeps the
/// simulator running like a [`Sim`](crate::Sim) handle.
#[derive(Clone)]
pub struct NodeHandle {
    running: Arc<Running>,
    node: Arc<Node>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("index", &self.node.index)
            .field("base_url", &self.base_url())
            .field("state", &self.state())
            .finish()
    }
}

impl NodeHandle {
    pub(crate) fn new(running: Arc<Running>, node: Arc<Node>) -> Self {
        NodeHandle { running, node }
    }

    /// The node's index (0 is the node [`Sim::start`](crate::Sim::start) binds first).
    pub fn index(&self) -> usize {
        self.node.index
    }

    /// The node's address; it keeps it across down and up.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr
    }

    /// `http://ADDR/ns-api/` (`https` with TLS) for this node.
    pub fn base_url(&self) -> String {
        self.node.base_url(&self.running.shared)
    }

    /// `http://ADDR/_sim/` (`https` with TLS) for this node.
    pub fn admin_url(&self) -> String {
        self.node.admin_url(&self.running.shared)
    }

    /// What the node does now.
    pub fn state(&self) -> NodeState {
        self.node.state()
    }

    /// Go to `state` (see [`NodeState`]). Returns once it is in force: after `Down`, connects
    /// are refused and the node's open connections are closed. Going from down to any other
    /// state listens again on the same port, which fails if something else took the port.
    pub async fn set_state(&self, state: NodeState) -> std::io::Result<()> {
        state
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.node.set_state(&self.running.shared, state).await
    }

    /// Stop accepting: close the listening socket and cut the node's connections.
    pub async fn down(&self) {
        let _ = self.set_state(NodeState::Down).await;
    }

    /// Listen (again, on the same port) and answer normally.
    pub async fn up(&self) -> std::io::Result<()> {
        self.set_state(NodeState::Up).await
    }

    /// Answer every request but the admin API's with `status` and an HTML page.
    pub async fn status(&self, status: u16) -> std::io::Result<()> {
        self.set_state(NodeState::Status { status }).await
    }

    /// Accept connections and read requests but never answer (but the admin API).
    pub async fn hang(&self) -> std::io::Result<()> {
        self.set_state(NodeState::Hang).await
    }

    /// This node's request counters (the same as [`Sim::node_stats`](crate::Sim::node_stats)).
    pub fn stats(&self) -> Stats {
        self.running
            .shared
            .lock()
            .node_stats(self.node.index)
            .unwrap_or_else(|| panic!("nsapi-sim has no node {}", self.node.index))
    }

    /// Activate a fault on this node only.
    pub fn inject(&self, fault: Fault) {
        self.running
            .shared
            .lock()
            .faults
            .push_on(fault, None, Some(self.node.index));
    }

    /// Activate a fault on this node only, for the next `times` requests it applies to.
    pub fn inject_times(&self, fault: Fault, times: u32) {
        self.running
            .shared
            .lock()
            .faults
            .push_on(fault, Some(times), Some(self.node.index));
    }
}
