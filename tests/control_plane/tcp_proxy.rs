//! A loopback TCP proxy for network faults between a client and a server: it forwards bytes,
//! or stops forwarding while keeping every connection open (a half-open connection, which only
//! a timeout detects), or drops every connection and refuses new ones for a while, or closes
//! its port (a stopped server: connecting is refused).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Bytes flow both ways.
    Forward,
    /// Nothing flows any more and nothing is closed: connections hang.
    Hang,
    /// Every connection is closed, and new ones are closed at once.
    Refuse,
    /// Every connection is closed and so is the port: connecting fails (connection refused)
    /// until another mode opens it again, on the same address.
    Closed,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<ProxyMode>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream` (a loopback address).
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(ProxyMode::Forward);
        let mode = Arc::new(mode);
        let task = tokio::spawn(serve(listener, upstream, mode.clone()));
        TcpProxy { addr, mode, task }
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    /// `https://127.0.0.1:PORT`: for a kubeconfig's `server`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<ProxyMode>>) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    let mut changes = mode.subscribe();
    loop {
        tokio::select! {
            accepted = async { listener.as_ref().unwrap().accept().await }, if listener.is_some() => {
                let Ok((client, _)) = accepted else { continue };
                if *mode.borrow() == ProxyMode::Refuse {
                    drop(client);
                    continue;
                }
                connections.spawn(relay(client, upstream, mode.subscribe()));
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *changes.borrow();
                if matches!(now, ProxyMode::Refuse | ProxyMode::Closed) {
                    connections.abort_all();
                }
                if now == ProxyMode::Closed {
                    listener = None;
                } else if listener.is_none() {
                    listener = Some(TcpListener::bind(addr).await.expect("reopen the proxy's port"));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<ProxyMode>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        if *mode.borrow() == ProxyMode::Hang {
            // Hold both sockets open and move nothing, until the proxy refuses or goes away.
            let _ = mode
                .wait_for(|m| matches!(m, ProxyMode::Refuse | ProxyMode::Closed))
                .await;
            return;
        }
        tokio::select! {
            n = client_read.read(&mut up) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if *mode.borrow() == ProxyMode::Forward && server_write.write_all(&up[..n]).await.is_err() { return },
            },
            n = server_read.read(&mut down) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if *mode.borrow() == ProxyMode::Forward && client_write.write_all(&down[..n]).await.is_err() { return },
            },
            changed = mode.changed() => if changed.is_err() { return },
        }
    }
}
