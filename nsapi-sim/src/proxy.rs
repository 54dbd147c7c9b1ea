//! A loopback HTTP proxy for proxy tests: `CONNECT host:port` tunnels (what clients use for
//! `https://` URLs) and absolute-form plain-HTTP requests (`GET http://host:port/path`), to
//! loopback targets only. Anything else is refused with a 403 and counted, without a DNS
//! lookup or a connection attempt: the proxy never reaches beyond this machine.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use nsapi_sim::proxy::ConnectProxy;
//! let proxy = ConnectProxy::start().await?;
//! let url = proxy.proxy_url(); // "http://127.0.0.1:PORT"
//! // ... a client configured with this proxy talks to a simulator ...
//! assert_eq!(proxy.tunnels(), 0);
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! It never logs or keeps a header's value (`Proxy-Authorization` is dropped before a plain
//! request is forwarded), only the targets asked for.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection to a target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    tunnels: AtomicU64,
    forwarded: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    targets: Mutex<Vec<String>>,
}

impl Counters {
    fn target(&self, t: &str) {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(t.to_owned());
    }
}

struct Running {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A running loopback proxy. Cheap to clone; it stops on [`ConnectProxy::shutdown`] or when
/// the last handle is dropped (open tunnels are cut).
#[derive(Clone)]
pub struct ConnectProxy {
    inner: Arc<Running>,
}

impl std::fmt::Debug for ConnectProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectProxy")
            .field("proxy_url", &self.proxy_url())
            .finish()
    }
}

impl ConnectProxy {
    /// Listen on a free port of 127.0.0.1.
    pub async fn start() -> io::Result<ConnectProxy> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Listen on `addr` (keep it on loopback).
    pub async fn start_on(addr: SocketAddr) -> io::Result<ConnectProxy> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, counters.clone(), stop_rx));
        Ok(ConnectProxy {
            inner: Arc::new(Running {
                addr,
                counters,
                stop,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ADDR`, for a client's proxy setting.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `CONNECT` tunnels opened so far.
    pub fn tunnels(&self) -> u64 {
        self.inner.counters.tunnels.load(Ordering::SeqCst)
    }

    /// Absolute-form plain-HTTP requests forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.inner.counters.forwarded.load(Ordering::SeqCst)
    }

    /// Requests refused with 403 because their target is not on loopback.
    pub fn refused(&self) -> u64 {
        self.inner.counters.refused.load(Ordering::SeqCst)
    }

    /// Requests answered 502 because the loopback target did not accept the connection.
    pub fn failed(&self) -> u64 {
        self.inner.counters.failed.load(Ordering::SeqCst)
    }

    /// Every target asked for, as `host:port`, in order (refused ones included).
    pub fn targets(&self) -> Vec<String> {
        self.inner
            .counters
            .targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Zero the counters and forget the targets.
    pub fn reset(&self) {
        let c = &self.inner.counters;
        for n in [&c.tunnels, &c.forwarded, &c.refused, &c.failed] {
            n.store(0, Ordering::SeqCst);
        }
        c.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Stop listening, cut open tunnels and wait (up to 5 s) for the proxy to end.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let counters = counters.clone();
                    conns.spawn(async move {
                        if let Err(e) = serve(client, &counters).await {
                            tracing::debug!(error = %e, "proxy connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Read up to the end of the request head; returns the head (without the blank line) and
/// whatever bytes followed it.
async fn read_head(client: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf[end + 4..].to_vec();
            buf.truncate(end);
            let head = String::from_utf8(buf)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "head is not UTF-8"))?;
            return Ok((head, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(client: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(text.as_bytes()).await?;
    client.shutdown().await
}

/// The loopback socket addresses a `host` names, or `None` if it is not a loopback host.
/// `localhost` is mapped to 127.0.0.1 and ::1 without a lookup; every other name is refused.
fn loopback_addrs(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback().then(|| vec![SocketAddr::new(ip, port)]);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]
    })
}

/// Split `host:port` (`[v6]:port` too); `default_port` when there is none.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{v6}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port?,
    };
    (!host.is_empty()).then_some((host, port))
}

async fn connect_any(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for addr in addrs {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
        {
            return Some(stream);
        }
    }
    None
}

async fn serve(mut client: TcpStream, counters: &Counters) -> io::Result<()> {
    let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return answer(&mut client, "400 Bad Request", &format!("{e}\n")).await,
        Err(_) => return answer(&mut client, "408 Request Timeout", "").await,
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return answer(&mut client, "400 Bad Request", "bad request line\n").await;
    };

    // Where to, and (for a plain request) what to send there.
    let connect = method.eq_ignore_ascii_case("CONNECT");
    let (authority, path) = if connect {
        (target.to_owned(), None)
    } else if let Some(after) = target.strip_prefix("http://") {
        let cut = after.find(['/', '?']).unwrap_or(after.len());
        let path = match &after[cut..] {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        (after[..cut].to_owned(), Some(path))
    } else {
        return answer(
            &mut client,
            "400 Bad Request",
            "expected CONNECT host:port or an absolute http:// URL\n",
        )
        .await;
    };
    let Some((host, port)) = split_authority(&authority, (!connect).then_some(80)) else {
        return answer(&mut client, "400 Bad Request", "bad target\n").await;
    };
    let target = format!("{host}:{port}");
    counters.target(&target);
    let Some(addrs) = loopback_addrs(&host, port) else {
        counters.refused.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(%target, "proxy refused a target off loopback");
        return answer(
            &mut client,
            "403 Forbidden",
            "this proxy reaches loopback targets only\n",
        )
        .await;
    };
    let Some(mut upstream) = connect_any(&addrs).await else {
        counters.failed.fetch_add(1, Ordering::SeqCst);
        return answer(
            &mut client,
            "502 Bad Gateway",
            "the target refused the connection\n",
        )
        .await;
    };
    let _ = upstream.set_nodelay(true);

    match path {
        None => {
            counters.tunnels.fetch_add(1, Ordering::SeqCst);
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
        }
        Some(path) => {
            counters.forwarded.fetch_add(1, Ordering::SeqCst);
            // Origin-form, without the hop-by-hop and proxy headers, one request per connection.
            let mut out = format!("{method} {path} {version}\r\n");
            for line in lines {
                let name = line.split(':').next().unwrap_or_default().trim();
                let hop = [
                    "proxy-connection",
                    "proxy-authorization",
                    "connection",
                    "keep-alive",
                ]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h));
                if !hop {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
            out.push_str("Connection: close\r\n\r\n");
            upstream.write_all(out.as_bytes()).await?;
        }
    }
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_pass() {
        assert!(loopback_addrs("127.0.0.1", 1).is_some());
        assert!(loopback_addrs("127.3.4.5", 1).is_some());
        assert!(loopback_addrs("[::1]", 1).is_some());
        assert!(loopback_addrs("localhost", 1).is_some());
        assert!(loopback_addrs("LocalHost.", 1).is_some());
        assert!(loopback_addrs("api.localhost", 1).is_some());
        for host in [
            "203.0.113.7",
            "10.0.0.1",
            "[2001:db8::1]",
            "example.com",
            "localhost.example.com",
        ] {
            assert!(loopback_addrs(host, 1).is_none(), "{host}");
        }
    }

    #[test]
    fn splits_authorities() {
        assert_eq!(
            split_authority("127.0.0.1:443", None),
            Some(("127.0.0.1".into(), 443))
        );
        assert_eq!(
            split_authority("[::1]:8443", None),
            Some(("[::1]".into(), 8443))
        );
        assert_eq!(
            split_authority("localhost", Some(80)),
            Some(("localhost".into(), 80))
        );
        assert_eq!(
            split_authority("[::1]", Some(80)),
            Some(("[::1]".into(), 80))
        );
        assert_eq!(split_authority("localhost", None), None);
        assert_eq!(split_authority("host:port", None), None);
        assert_eq!(split_authority(":80", None), None);
    }
}
