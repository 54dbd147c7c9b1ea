//! The admin API under `/_sim/`: read counters, inject faults, add users and clients, change
//! settings and ask whether a token is valid. JSON in and out. It exists for tests and demos;
//! it has no authentication, so bind the simulator to loopback. It reaches state and nodes
//! through `server` only, and must not import `api` or `node`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fault::FaultEntry;
use crate::model::Subscriber;
use crate::server::{Node, NodeId, NodeState, Shared};
use crate::store::SettingsPatch;

type St = State<Arc<Shared>>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok\n" }))
        .route("/_sim/stats", get(stats).delete(reset_stats))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route(
            "/_sim/settings",
            get(settings).put(update_settings).patch(update_settings),
        )
        .route("/_sim/clients", post(add_client))
        .route("/_sim/subscribers", post(add_subscriber))
        .route("/_sim/subscribers/{username}/password", put(set_password))
        .route(
            "/_sim/tokens/valid",
            get(token_valid_query).post(token_valid_body),
        )
        .route("/_sim/tokens/revoke", post(revoke))
        .route("/_sim/tokens/expire", post(expire))
        .route("/_sim/refresh-tokens/revoke", post(revoke_refresh))
        .route("/_sim/nodes", get(list_nodes).post(add_node))
        .route("/_sim/nodes/{index}", get(node_info).put(set_node_state))
        .route("/_sim/nodes/{index}/stats", get(node_stats))
        .route("/_sim/tls/ca.pem", get(ca_pem))
        .route("/_sim/tls/untrusted-ca.pem", get(untrusted_ca_pem))
}

fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

async fn stats(State(sh): St) -> Response {
    Json(sh.lock().stats()).into_response()
}

async fn reset_stats(State(sh): St) -> StatusCode {
    sh.lock().reset_stats();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sh): St) -> Response {
    Json(sh.lock().faults.list()).into_response()
}

/// One fault object or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<FaultEntry>),
    One(FaultEntry),
}

async fn add_faults(State(sh): St, Json(body): Json<Value>) -> Response {
    let entries = match serde_json::from_value::<OneOrMany>(body) {
        Ok(OneOrMany::Many(v)) => v,
        Ok(OneOrMany::One(e)) => vec![e],
        Err(e) => return bad_request(format!("not a fault: {e}")),
    };
    if let Some(err) = entries.iter().find_map(|e| e.fault.validate().err()) {
        return bad_request(err);
    }
    let nodes = sh.node_list().len();
    if let Some(node) = entries.iter().find_map(|e| e.node.filter(|n| *n >= nodes)) {
        return bad_request(format!("no node {node}: there are {nodes}"));
    }
    let mut st = sh.lock();
    for e in entries {
        st.faults.push_on(e.fault, e.times, e.node);
    }
    Json(st.faults.list()).into_response()
}

async fn clear_faults(State(sh): St) -> StatusCode {
    sh.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn settings(State(sh): St) -> Response {
    Json(sh.lock().settings.clone()).into_response()
}

async fn update_settings(State(sh): St, Json(body): Json<Value>) -> Response {
    let patch: SettingsPatch = match serde_json::from_value(body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("invalid settings: {e}")),
    };
    if let Err(e) = patch.validate() {
        return bad_request(e);
    }
    let mut st = sh.lock();
    patch.apply(&mut st.settings);
    Json(st.settings.clone()).into_response()
}

#[derive(Deserialize)]
struct ClientBody {
    id: String,
    secret: String,
}

async fn add_client(State(sh): St, Json(c): Json<ClientBody>) -> StatusCode {
    sh.lock().add_client(&c.id, &c.secret);
    StatusCode::NO_CONTENT
}

async fn add_subscriber(State(sh): St, Json(s): Json<Subscriber>) -> StatusCode {
    sh.lock().add_subscriber(s);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

async fn set_password(
    State(sh): St,
    Path(username): Path<String>,
    Json(b): Json<PasswordBody>,
) -> Response {
    if sh.lock().set_password(&username, &b.password) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such subscriber"})),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

fn validity(sh: &Shared, token: &str) -> Response {
    let answer = sh.lock().token_valid(token, Instant::now());
    let body = match answer {
        Ok(_) => json!({"valid": true}),
        Err(reason) => json!({"valid": false, "reason": reason}),
    };
    Json(body).into_response()
}

async fn token_valid_query(State(sh): St, Query(t): Query<TokenBody>) -> Response {
    validity(&sh, &t.token)
}

async fn token_valid_body(State(sh): St, Json(t): Json<TokenBody>) -> Response {
    validity(&sh, &t.token)
}

async fn revoke(State(sh): St, Json(t): Json<TokenBody>) -> Response {
    let found = sh.lock().revoke(&t.token);
    Json(json!({"found": found})).into_response()
}

async fn expire(State(sh): St, Json(t): Json<TokenBody>) -> Response {
    let found = sh
        .lock()
        .expire(&t.token, Instant::now(), SystemTime::now());
    Json(json!({"found": found})).into_response()
}

async fn revoke_refresh(State(sh): St) -> StatusCode {
    sh.lock().revoke_all_refresh();
    StatusCode::NO_CONTENT
}

fn no_node(index: usize) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no node {index}")})),
    )
        .into_response()
}

async fn list_nodes(State(sh): St) -> Response {
    let nodes: Vec<_> = sh.nodes().iter().map(|n| n.info(&sh)).collect();
    Json(nodes).into_response()
}

/// Start one more node (on a free port of the first node's address).
async fn add_node(State(sh): St) -> Response {
    let Some(first) = sh.node(0) else {
        return no_node(0);
    };
    let addr = std::net::SocketAddr::new(first.addr.ip(), 0);
    match Node::start(&sh, addr).await {
        Ok(node) => (StatusCode::CREATED, Json(node.info(&sh))).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("cannot listen: {e}")})),
        )
            .into_response(),
    }
}

async fn node_info(State(sh): St, Path(index): Path<usize>) -> Response {
    match sh.node(index) {
        Some(node) => Json(node.info(&sh)).into_response(),
        None => no_node(index),
    }
}

async fn node_stats(State(sh): St, Path(index): Path<usize>) -> Response {
    match sh.lock().node_stats(index) {
        Some(stats) => Json(stats).into_response(),
        None => no_node(index),
    }
}

/// Change a node's state. A node cannot be taken down through itself (the answer would be
/// lost with the connection, and nothing could bring it back up through it): use another
/// node's admin URL.
async fn set_node_state(
    State(sh): St,
    Extension(NodeId(via)): Extension<NodeId>,
    Path(index): Path<usize>,
    Json(body): Json<Value>,
) -> Response {
    let state: NodeState = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => return bad_request(format!("invalid node state: {e}")),
    };
    if let Err(e) = state.validate() {
        return bad_request(e);
    }
    let Some(node) = sh.node(index) else {
        return no_node(index);
    };
    if state == NodeState::Down && index == via {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "a node cannot be taken down through its own admin URL: use another node's"})),
        )
            .into_response();
    }
    // Run the change in its own task, so that it completes even if this request's connection
    // goes away.
    let shared = sh.clone();
    let changed = tokio::spawn(async move {
        node.set_state(&shared, state).await?;
        Ok::<_, std::io::Error>(node.info(&shared))
    })
    .await;
    match changed {
        Ok(Ok(info)) => Json(info).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("cannot listen: {e}")})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

fn pem_response(pem: Option<&str>) -> Response {
    match pem {
        Some(pem) => (
            [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
            pem.to_owned(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "the simulator does not serve TLS"})),
        )
            .into_response(),
    }
}

async fn ca_pem(State(sh): St) -> Response {
    pem_response(sh.tls().map(|t| t.ca_pem()))
}

async fn untrusted_ca_pem(State(sh): St) -> Response {
    pem_response(sh.tls().map(|t| t.untrusted_ca_pem()))
}
