//! nsapi-sim: an in-process and stand-alone simulator of the NetSapiens API's OAuth2 endpoints.
//!
//! It plays what `shared/NSAPI.md` documents (v1 `oauth2/token`, `oauth2/read`, v2 `tokens`) and
//! every plausible answer to what that document marks unknown (refresh rotation, error shapes,
//! firewalls, ...). It can serve several nodes over one store ([`SimConfig::nodes`],
//! [`Sim::node`]) whose failures are steered one by one, serve HTTPS with a fresh test CA
//! ([`SimConfig::tls`], [`Sim::ca_pem`]), and comes with a loopback proxy
//! ([`proxy::ConnectProxy`]). It is a test tool: it is never linked into the operator binary.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nsapi_sim::{Fault, RefreshMode, Sim, SimConfig, Subscriber};
//! let sim = Sim::start(
//!     SimConfig::new()
//!         .client("client-id", "client-secret")
//!         .subscriber(Subscriber::new("111@abc-company", "s3cret"))
//!         .refresh_mode(RefreshMode::Rotate),
//! )
//! .await?;
//! let base = sim.base_url(); // "http://127.0.0.1:PORT/ns-api/"
//! sim.inject(Fault::Status { status: 503, count: 2 });
//! assert_eq!(sim.stats().token_requests, 0);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

// Layout, lowest first; a module imports only modules of lower layers:
// - duration, wire, tls, model, totp, jwt: leaves (parsing, wire formats, certificates, value
//   types, one-time passcodes, JWT signing);
// - fault, then store (the state, pure), then config (how a simulator starts);
// - server: the shared state, the nodes and their listeners; it names no handler;
// - api (NetSapiens endpoints), admin (`/_sim/`), node (NodeHandle): each on server, not
//   on each other; then routes, the routing table over api and admin;
// - this file: Sim, which starts it all, and the public re-exports.
// proxy stands alone.
mod admin;
mod api;
mod config;
mod duration;
mod fault;
mod jwt;
mod model;
mod node;
pub mod proxy;
mod routes;
mod server;
mod store;
mod tls;
pub mod totp;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

pub use config::SimConfig;
pub use duration::{format_duration, parse_duration};
pub use fault::{Fault, FaultEntry, NoTokenBody};
pub use model::{Client, ClientAuth, ErrorBody, RefreshMode, Stats, Subscriber, V1Answer};
pub use node::NodeHandle;
pub use server::NodeState;

use server::{Node, Running, Shared};
use store::{MIN_TTL, Store};

/// A running simulator: one or more nodes (listeners) over one store. Cheap to clone; the
/// server stops on [`Sim::shutdown`] or when the last handle (or [`NodeHandle`]) is dropped.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Running>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.base_url())
            .field("nodes", &self.inner.shared.node_list().len())
            .finish()
    }
}

/// The address of node `index`: the configured one for node 0; for the others the same IP and
/// a free port if the configured port is 0, else the port plus the index.
fn node_addr(listen: SocketAddr, index: usize) -> std::io::Result<SocketAddr> {
    if index == 0 || listen.port() == 0 {
        return Ok(listen);
    }
    u16::try_from(index)
        .ok()
        .and_then(|i| listen.port().checked_add(i))
        .map(|port| SocketAddr::new(listen.ip(), port))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no port for node {index} after {listen}"),
            )
        })
}

impl Sim {
    /// Bind every node and start serving in the current tokio runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let nodes = config.nodes.max(1);
        if let Some(node) = config
            .faults
            .iter()
            .find_map(|f| f.node.filter(|n| *n >= nodes))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a fault names node {node}, but there are {nodes} nodes"),
            ));
        }
        let base_path = config::normalise_base(&config.base_path);
        let tls = if config.tls {
            Some(tls::Tls::generate()?)
        } else {
            None
        };
        let mut store = Store::new(config.settings());
        for c in &config.clients {
            store.add_client(&c.id, &c.secret);
        }
        for s in &config.subscribers {
            store.add_subscriber(s.clone());
        }
        for f in &config.faults {
            store.faults.push_on(f.fault.clone(), f.times, f.node);
        }
        let (stop, stop_rx) = watch::channel(false);
        let routes = routes::routes(&base_path);
        let shared = Arc::new(Shared::new(store, stop_rx, base_path, tls, routes));
        let sim = Sim {
            inner: Arc::new(Running { shared, stop }),
        };
        for index in 0..nodes {
            // On an error the half-started simulator stops as `sim` is dropped.
            Node::start(&sim.inner.shared, node_addr(config.listen, index)?).await?;
        }
        Ok(sim)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn first_node(&self) -> Arc<Node> {
        self.shared()
            .node(0)
            .expect("a running simulator has a node 0")
    }

    /// The address of node 0.
    pub fn addr(&self) -> SocketAddr {
        self.first_node().addr
    }

    /// Node 0's `http://ADDR/ns-api/` (with the configured base path and a trailing slash;
    /// `https://` with TLS).
    pub fn base_url(&self) -> String {
        self.first_node().base_url(self.shared())
    }

    /// Node 0's `http://ADDR/_sim/`, the admin API (every node serves it).
    pub fn admin_url(&self) -> String {
        self.first_node().admin_url(self.shared())
    }

    /// Node `index` (0 is the first bound).
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node(&self, index: usize) -> NodeHandle {
        let node = self
            .shared()
            .node(index)
            .unwrap_or_else(|| panic!("nsapi-sim has no node {index}"));
        NodeHandle::new(self.inner.clone(), node)
    }

    /// Every node, by index.
    pub fn nodes(&self) -> Vec<NodeHandle> {
        self.shared()
            .nodes()
            .into_iter()
            .map(|n| NodeHandle::new(self.inner.clone(), n))
            .collect()
    }

    /// Start one more node over the same store: on the first node's IP, on a free port.
    pub async fn add_node(&self) -> std::io::Result<NodeHandle> {
        let addr = SocketAddr::new(self.addr().ip(), 0);
        let node = Node::start(&self.inner.shared, addr).await?;
        Ok(NodeHandle::new(self.inner.clone(), node))
    }

    /// The request counters of node `index` alone (they are also in [`Stats::by_node`]).
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node_stats(&self, index: usize) -> Stats {
        self.shared()
            .lock()
            .node_stats(index)
            .unwrap_or_else(|| panic!("nsapi-sim has no node {index}"))
    }

    /// The PEM of the test CA that signs the server certificate (with TLS; `None` without).
    pub fn ca_pem(&self) -> Option<String> {
        self.shared().tls().map(|t| t.ca_pem().to_owned())
    }

    /// The PEM of the other, unknown CA, whose certificate is served while
    /// [`Sim::set_tls_untrusted`] is on (with TLS; `None` without).
    pub fn untrusted_ca_pem(&self) -> Option<String> {
        self.shared().tls().map(|t| t.untrusted_ca_pem().to_owned())
    }

    /// With TLS, serve (to new connections) a certificate for the same names signed by an
    /// unknown CA instead of the test CA, so that clients trusting [`Sim::ca_pem`] fail.
    pub fn set_tls_untrusted(&self, yes: bool) {
        self.shared().lock().settings.tls_untrusted = yes;
    }

    /// Add (or replace) an OAuth client.
    pub fn add_client(&self, id: &str, secret: &str) {
        self.shared().lock().add_client(id, secret);
    }

    /// Add (or replace, by username) a subscriber.
    pub fn add_subscriber(&self, s: Subscriber) {
        self.shared().lock().add_subscriber(s);
    }

    /// Change a subscriber's password (no-op for an unknown user). Existing tokens stay valid.
    pub fn set_password(&self, username: &str, password: &str) {
        self.shared().lock().set_password(username, password);
    }

    /// Change the refresh behaviour for refresh grants from now on.
    pub fn set_refresh_mode(&self, m: RefreshMode) {
        self.shared().lock().settings.refresh_mode = m;
    }

    /// Change the lifetime of access tokens issued from now on (raised to 1 s if shorter).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared().lock().settings.token_ttl = ttl.max(MIN_TTL);
    }

    /// Change the lifetime of refresh tokens issued from now on (`None`: no limit).
    pub fn set_refresh_token_ttl(&self, ttl: Option<Duration>) {
        self.shared().lock().settings.refresh_token_ttl = ttl;
    }

    /// Whether a new password grant revokes the user's earlier tokens.
    pub fn set_password_grant_revokes_previous(&self, yes: bool) {
        self.shared()
            .lock()
            .settings
            .password_grant_revokes_previous = yes;
    }

    /// Status for a bad client and for a bad refresh token, and the body shape of v1 errors.
    pub fn set_errors(&self, bad_client_status: u16, bad_refresh_status: u16, body: ErrorBody) {
        let mut st = self.shared().lock();
        st.settings.bad_client_status = bad_client_status;
        st.settings.bad_refresh_status = bad_refresh_status;
        st.settings.error_body = body;
    }

    /// Enable or disable v2 (disabled: `/v2/tokens` answers the v2-absent status, 404 by
    /// default, with an HTML page).
    pub fn set_v2_enabled(&self, yes: bool) {
        self.shared().lock().settings.v2_enabled = yes;
    }

    /// The status `/v2/tokens` answers with an HTML page while v2 is disabled (404, or e.g.
    /// 403, 500, 502, 503 like a front end that answers unknown paths that way).
    pub fn set_v2_absent_status(&self, status: u16) {
        self.shared().lock().settings.v2_absent_status = status;
    }

    /// How token endpoints take the client id and secret from now on.
    pub fn set_client_auth(&self, mode: ClientAuth) {
        self.shared().lock().settings.client_auth = mode;
    }

    /// Report numbers as strings in token answers from now on (`"expires_in":"3600"`).
    pub fn set_numbers_as_strings(&self, yes: bool) {
        self.shared().lock().settings.numbers_as_strings = yes;
    }

    /// The shape of successful v1 token answers from now on.
    pub fn set_v1_answer(&self, shape: V1Answer) {
        self.shared().lock().settings.v1_answer = shape;
    }

    /// Whether `v2/jwt` answers carry a single-use refresh JWT from now on.
    pub fn set_jwt_refresh(&self, yes: bool) {
        self.shared().lock().settings.jwt_refresh = yes;
    }

    /// The session cookie `v2/jwt` answers set from now on (`""`: none), and whether requests
    /// that present a JWT must send it back.
    pub fn set_jwt_cookie(&self, name: &str, required: bool) {
        let mut st = self.shared().lock();
        st.settings.jwt_cookie = name.to_owned();
        st.settings.jwt_cookie_required = required;
    }

    /// Activate a fault on every node (see [`Fault`] for how long each lasts; use
    /// [`NodeHandle::inject`] for one node).
    pub fn inject(&self, fault: Fault) {
        self.shared().lock().faults.push(fault, None);
    }

    /// Activate a fault for the next `times` requests it applies to only.
    pub fn inject_times(&self, fault: Fault, times: u32) {
        self.shared().lock().faults.push(fault, Some(times));
    }

    /// Remove every active fault.
    pub fn clear_faults(&self) {
        self.shared().lock().faults.clear();
    }

    /// A snapshot of the request counters: every node's together, and each node's in
    /// [`Stats::by_node`].
    pub fn stats(&self) -> Stats {
        self.shared().lock().stats()
    }

    /// Zero the request counters (every node's).
    pub fn reset_stats(&self) {
        self.shared().lock().reset_stats();
    }

    /// Whether this access token would be accepted by `oauth2/read` right now (known, not
    /// expired, not revoked, not an MFA intermediate token), or this JWT by `GET v2/jwt`.
    pub fn is_token_valid(&self, access_token: &str) -> bool {
        self.shared()
            .lock()
            .token_valid(access_token, Instant::now())
            .is_ok()
    }

    /// Revoke an access token (and its refresh token), or a refresh token (and the access
    /// tokens issued with it), or a JWT.
    pub fn revoke_token(&self, token: &str) {
        self.shared().lock().revoke(token);
    }

    /// Make an access token (or a refresh token, or a JWT) expire now.
    pub fn expire_token(&self, token: &str) {
        self.shared()
            .lock()
            .expire(token, Instant::now(), SystemTime::now());
    }

    /// Revoke every refresh token issued so far, so each refresh grant with one of them fails
    /// (tokens issued later work; inject [`Fault::RejectRefresh`] to reject all refreshes).
    pub fn revoke_refresh_tokens(&self) {
        self.shared().lock().revoke_all_refresh();
    }

    /// Every access and refresh token, JWT and session cookie value issued so far, whatever
    /// its state (for tests that check no token leaked into logs, events or status).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared().lock().issued_tokens()
    }

    /// Stop serving on every node (hanging requests are released) and wait, up to 5 s in
    /// all, for the nodes to end.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for node in self.shared().nodes() {
            if let Some(task) = node.take_task().await {
                let abort = task.abort_handle();
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
}
