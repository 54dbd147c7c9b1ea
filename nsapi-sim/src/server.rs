//! The running server: the state every request handler and every node shares (the store
//! behind a lock, the stop signal, the base path, TLS, the node list and the routes every node
//! serves) and the nodes themselves, the listeners. Every node has its own loopback port and
//! base URL and shares the one store (clients, subscribers, tokens, settings, faults), like the
//! geo-redundant nodes of one NetSapiens cluster. Each can be taken down (its listening socket
//! closed and its connections cut, so connects are refused) and brought up again on the same
//! port, or made to answer every request with one status or to never answer, without touching
//! the others. The admin API (`/_sim/`) is exempt from a node's status and hang, so tests can
//! steer the simulator through any node that listens.
//!
//! This module knows no handler: the routes are handed to [`Shared::new`] (see
//! [`crate::routes`]), so that `admin`, `api` and `node` can depend on it and not on each other.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::store::{GrantKind, Store};
use crate::tls::Tls;
use crate::wire::html_response;

/// State shared by every request handler, every node and the [`crate::Sim`] handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    shutdown: watch::Receiver<bool>,
    base_path: String,
    tls: Option<Tls>,
    nodes: Mutex<Vec<Arc<Node>>>,
    /// The routing table every node serves, without its state (which is this).
    routes: Router<Arc<Shared>>,
}

impl Shared {
    pub fn new(
        store: Store,
        shutdown: watch::Receiver<bool>,
        base_path: String,
        tls: Option<Tls>,
        routes: Router<Arc<Shared>>,
    ) -> Self {
        Shared {
            store: Mutex::new(store),
            shutdown,
            base_path,
            tls,
            nodes: Mutex::new(Vec::new()),
            routes,
        }
    }

    /// The whole application over this state, as every node serves it.
    pub fn app(self: &Arc<Self>) -> Router {
        self.routes.clone().with_state(self.clone())
    }

    /// The state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count(&self, node: usize, endpoint: &str, grant: GrantKind, result: &str) {
        self.lock().count(node, endpoint, grant, result);
    }

    /// Resolves when the server is told to stop.
    pub async fn until_shutdown(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// A receiver of the stop signal.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The API base path, normalised (`""` or `/x`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The nodes, by index.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.node_list().clone()
    }

    pub fn node(&self, index: usize) -> Option<Arc<Node>> {
        self.node_list().get(index).cloned()
    }

    /// The node list, to read or to append to (never held across an await).
    pub fn node_list(&self) -> MutexGuard<'_, Vec<Arc<Node>>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops the server when the last [`crate::Sim`] or [`crate::NodeHandle`] handle goes.
pub(crate) struct Running {
    pub shared: Arc<Shared>,
    pub stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish when the simulator stops, before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A request extension: the index of the node that received the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeId(pub usize);

/// The node a request arrived on (0 if it carries none).
pub(crate) fn node_of<B>(req: &Request<B>) -> usize {
    req.extensions().get::<NodeId>().map_or(0, |n| n.0)
}

/// What a node does with connections and requests.
///
/// JSON form (`GET`/`PUT /_sim/nodes/{index}`): `{"state":"up"}`, `{"state":"down"}`,
/// `{"state":"status","status":503}`, `{"state":"hang"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    /// Listening and answering normally.
    Up,
    /// Not listening: the socket is closed and open connections are cut, so connects are
    /// refused.
    Down,
    /// Listening, and answering every request (but the admin API's) with this status and an
    /// HTML page, as a node behind a failing load balancer would.
    Status { status: u16 },
    /// Listening, accepting and reading requests (but the admin API's), and never answering
    /// them; requests left hanging stay so until the node goes down or the simulator stops.
    Hang,
}

impl NodeState {
    /// Check the status a [`NodeState::Status`] carries.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            NodeState::Status { status } if !(100..=599).contains(status) => {
                Err(format!("status {status} is not an HTTP status"))
            }
            _ => Ok(()),
        }
    }
}

/// How a listening node answers requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answering {
    Normally,
    Status(u16),
    Hang,
}

/// One listener of the simulator.
pub(crate) struct Node {
    pub index: usize,
    /// Fixed at the first bind: a node comes back up on the same port.
    pub addr: SocketAddr,
    answering: Mutex<Answering>,
    /// The running accept loop, `None` while down. Held for the whole of a state change.
    serving: tokio::sync::Mutex<Option<Serving>>,
    /// Whether `serving` holds a loop, for synchronous reads.
    listening: AtomicBool,
}

struct Serving {
    kill: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What `GET /_sim/nodes` reports about a node.
#[derive(Serialize)]
pub(crate) struct NodeInfo {
    index: usize,
    addr: SocketAddr,
    base_url: String,
    admin_url: String,
    #[serde(flatten)]
    state: NodeState,
}

/// Bind a listening socket with `SO_REUSEADDR`, so that a node can listen again on its port
/// while connections it closed linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Node {
    /// Bind `addr`, add the node to the simulator and start serving.
    pub async fn start(shared: &Arc<Shared>, addr: SocketAddr) -> io::Result<Arc<Node>> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let node = {
            let mut nodes = shared.node_list();
            let node = Arc::new(Node {
                index: nodes.len(),
                addr,
                answering: Mutex::new(Answering::Normally),
                serving: tokio::sync::Mutex::new(None),
                listening: AtomicBool::new(false),
            });
            nodes.push(node.clone());
            node
        };
        shared.lock().add_node_stats(node.index);
        let mut serving = node.serving.lock().await;
        *serving = Some(node.spawn(shared, listener));
        node.listening.store(true, Ordering::SeqCst);
        drop(serving);
        tracing::debug!(node = node.index, %addr, "nsapi-sim node listening");
        Ok(node)
    }

    fn answering(&self) -> Answering {
        *self
            .answering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_answering(&self, a: Answering) {
        *self
            .answering
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = a;
    }

    pub fn state(&self) -> NodeState {
        if !self.listening.load(Ordering::SeqCst) {
            return NodeState::Down;
        }
        match self.answering() {
            Answering::Normally => NodeState::Up,
            Answering::Status(status) => NodeState::Status { status },
            Answering::Hang => NodeState::Hang,
        }
    }

    /// `SCHEME://ADDR/BASE/`.
    pub fn base_url(&self, shared: &Shared) -> String {
        format!("{}://{}{}/", shared.scheme(), self.addr, shared.base_path())
    }

    /// `SCHEME://ADDR/_sim/`.
    pub fn admin_url(&self, shared: &Shared) -> String {
        format!("{}://{}/_sim/", shared.scheme(), self.addr)
    }

    pub fn info(&self, shared: &Shared) -> NodeInfo {
        NodeInfo {
            index: self.index,
            addr: self.addr,
            base_url: self.base_url(shared),
            admin_url: self.admin_url(shared),
            state: self.state(),
        }
    }

    /// Go to `state`. Down waits until the socket is closed and the node's connections are
    /// cut; any other state listens again (on the same port) if the node was down.
    pub async fn set_state(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        state: NodeState,
    ) -> io::Result<()> {
        let mut serving = self.serving.lock().await;
        let answering = match state {
            NodeState::Down => {
                if let Some(running) = serving.take() {
                    self.listening.store(false, Ordering::SeqCst);
                    let _ = running.kill.send(());
                    let _ = running.task.await;
                }
                self.set_answering(Answering::Normally);
                tracing::debug!(node = self.index, "nsapi-sim node down");
                return Ok(());
            }
            NodeState::Up => Answering::Normally,
            NodeState::Status { status } => Answering::Status(status),
            NodeState::Hang => Answering::Hang,
        };
        if serving.is_none() {
            let listener = bind(self.addr)?;
            *serving = Some(self.spawn(shared, listener));
            self.listening.store(true, Ordering::SeqCst);
        }
        self.set_answering(answering);
        tracing::debug!(node = self.index, ?state, "nsapi-sim node state");
        Ok(())
    }

    /// The accept loop's task, taken (for the simulator's shutdown).
    pub async fn take_task(&self) -> Option<JoinHandle<()>> {
        let running = self.serving.lock().await.take()?;
        self.listening.store(false, Ordering::SeqCst);
        Some(running.task)
    }

    fn spawn(self: &Arc<Self>, shared: &Arc<Shared>, listener: TcpListener) -> Serving {
        let (kill, killed) = oneshot::channel();
        let task = tokio::spawn(accept_loop(self.clone(), shared.clone(), listener, killed));
        Serving { kill, task }
    }
}

/// Resolves once the simulator is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accept connections until the node is taken down (then cut them all at once) or the
/// simulator stops (then give them [`STOP_GRACE`] to finish).
async fn accept_loop(
    node: Arc<Node>,
    shared: Arc<Shared>,
    listener: TcpListener,
    mut killed: oneshot::Receiver<()>,
) {
    let app = shared.app();
    let mut stop = shared.shutdown_signal();
    let mut conns = JoinSet::new();
    let stopping = loop {
        tokio::select! {
            _ = &mut killed => break false,
            _ = stopped(&mut stop) => break true,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(serve_connection(tcp, node.clone(), shared.clone(), app.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::debug!(node = node.index, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    };
    drop(listener);
    if stopping {
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
    }
    conns.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, node: Arc<Node>, shared: Arc<Shared>, app: Router) {
    let _ = tcp.set_nodelay(true);
    let acceptor = shared
        .tls()
        .map(|tls| tls.acceptor(shared.lock().settings.tls_untrusted));
    let Some(acceptor) = acceptor else {
        return serve_http(TokioIo::new(tcp), node, shared, app).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_http(TokioIo::new(tls), node, shared, app).await,
        Ok(Err(e)) => tracing::debug!(node = node.index, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(node = node.index, "TLS handshake timed out"),
    }
}

async fn serve_http<I>(io: I, node: Arc<Node>, shared: Arc<Shared>, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut stop = shared.shutdown_signal();
    let service = hyper::service::service_fn(move |req| {
        handle(req, node.clone(), shared.clone(), app.clone())
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// Mark the request with its node, play the node's status or hang (but for the admin API),
/// and hand it to the application.
async fn handle(
    mut req: Request<Incoming>,
    node: Arc<Node>,
    shared: Arc<Shared>,
    app: Router,
) -> Result<Response, Infallible> {
    req.extensions_mut().insert(NodeId(node.index));
    if !req.uri().path().starts_with("/_sim/") {
        match node.answering() {
            Answering::Normally => {}
            Answering::Status(status) => {
                let result = format!("status_{status}");
                shared.count(node.index, "node", GrantKind::Missing, &result);
                return Ok(html_response(
                    status,
                    "The server is temporarily unable to service your request.",
                ));
            }
            Answering::Hang => {
                shared.count(node.index, "node", GrantKind::Missing, "hang");
                shared.until_shutdown().await;
                return Ok(html_response(503, "The server is shutting down."));
            }
        }
    }
    app.oneshot(req).await
}
