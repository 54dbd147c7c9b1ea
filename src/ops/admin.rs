//! The small HTTP server for probes and metrics: `/healthz` (the process serves), `/readyz`
//! (the controller is running: starts false), `/metrics` (Prometheus text). When `/metrics` is
//! served over HTTPS on its own listener (`secure_metrics`, `--metrics-addr`), this plain
//! server keeps only the probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Whether `/metrics` is served here (false when it is served over HTTPS elsewhere).
    pub serve_metrics: bool,
}

pub fn router(state: AdminState) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    let router = if state.serve_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    metrics_response(&state.metrics)
}

/// The metrics in the OpenMetrics text format, as a response whose body is written piece by
/// piece as it is sent (a fleet's exposition is megabytes; see `metrics::Exposition`).
pub fn metrics_response(metrics: &Metrics) -> impl IntoResponse + use<> {
    let pieces = metrics
        .exposition()
        .map(|piece| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(piece)));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(futures::stream::iter(pieces)),
    )
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the HTTP port. With `reuse_port`, other processes may bind the same port too
/// (`SO_REUSEPORT`): two replicas on the host network of one node then both serve, and the
/// kernel spreads connections between them.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_listeners_share_a_port_only_when_both_ask() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, true).expect("a second SO_REUSEPORT listener");
        assert_eq!(second.local_addr().unwrap(), addr);
        let exclusive = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(bind(exclusive.local_addr().unwrap(), false).is_err());
    }
}
