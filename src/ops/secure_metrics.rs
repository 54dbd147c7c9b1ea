//! `/metrics` over HTTPS on a listener of its own (`--metrics-addr`), opt-in: the serving
//! certificate and key are read from PEM files at start (a Secret mounted into the pod; they are
//! not reloaded: a renewed certificate takes effect when the pod restarts), and with
//! `--metrics-auth=kubernetes` every scrape must carry a Bearer token that the Kubernetes API
//! authenticates and authorises for `get /metrics` (`metrics_auth`). The probes stay on the
//! plain HTTP port (`admin`), which then no longer serves `/metrics`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::ops::admin;
use crate::ops::metrics_auth::Authorizer;
use crate::telemetry::metrics::Metrics;

/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes at once; more connections are closed at once.
const MAX_HANDSHAKES: usize = 64;

/// Who may read the HTTPS `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAuth {
    /// Anyone who reaches the port (TLS only).
    None,
    /// A Bearer token that a TokenReview accepts, whose user a SubjectAccessReview allows
    /// `get` on the non-resource URL /metrics.
    Kubernetes,
}

/// The server configuration for the certificate chain in `cert_file` and the key in `key_file`
/// (PEM). An error names the file and what is wrong with it, never its content.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("--metrics-tls-cert-file {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--metrics-tls-cert-file {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--metrics-tls-cert-file {}: no PEM certificate in it",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("--metrics-tls-key-file {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "--metrics-tls-cert-file {} and --metrics-tls-key-file {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    // The server speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands out connections once their TLS handshake is done. Handshakes run
/// beside each other (a slow or silent client holds up no one), each for at most
/// [`HANDSHAKE_TIMEOUT`].
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    // The server is gone: stop accepting.
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: pause rather than spin.
                            tracing::debug!(%error, "metrics: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "metrics: too many TLS handshakes at once; closing");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "metrics: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "metrics: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[derive(Clone)]
pub struct SecureState {
    pub metrics: Arc<Metrics>,
    /// `None` with `--metrics-auth=none`.
    pub authorizer: Option<Arc<Authorizer>>,
}

/// Only `/metrics`; everything else is 404.
pub fn router(state: SecureState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<SecureState>, headers: HeaderMap) -> Response {
    if let Some(authorizer) = &state.authorizer
        && let Err(refused) = authorizer.check(&headers).await
    {
        return refused;
    }
    admin::metrics_response(&state.metrics).into_response()
}

/// Serves `/metrics` over TLS until `shutdown` resolves.
pub async fn serve(
    listener: TlsListener,
    state: SecureState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
