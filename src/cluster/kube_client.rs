//! The Kubernetes client. Every request except a watch gets a deadline for its response
//! headers (connecting and sending included), and its body a limit on how long the reader may
//! wait for the next piece, so a half-open connection can never hang a reconcile or a Lease
//! renewal. Watches are long-lived by design: the API server ends them (`timeoutSeconds`), and
//! the watcher's idle timeout catches a dead one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Layer, Service};

/// Builds a client from `config` whose non-watch requests time out after `timeout`.
pub fn build(mut config: kube::Config, timeout: Duration) -> Result<kube::Client, kube::Error> {
    ignore_environment_proxy(&mut config);
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&DeadlineLayer { timeout }).build())
}

/// Builds a client for a person's tool (the CLI) as kubectl connects: through the kubeconfig's
/// `proxy-url`, or else `HTTPS_PROXY`, except to hosts `NO_PROXY` names and to loopback
/// addresses (Go's `ProxyFromEnvironment`, which kubectl uses, never proxies those).
pub fn build_like_kubectl(
    mut config: kube::Config,
    timeout: Duration,
) -> Result<kube::Client, kube::Error> {
    let from_env = environment_proxy();
    if from_env.is_some() && config.proxy_url == from_env {
        let host = config.cluster_url.host().unwrap_or_default().to_owned();
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|v| !v.trim().is_empty())
            .unwrap_or_default();
        if !proxied_by_environment(&host, &no_proxy) {
            config.proxy_url = None;
        }
    }
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&DeadlineLayer { timeout }).build())
}

/// Whether Go's `ProxyFromEnvironment` would send a request to `host` through `HTTPS_PROXY`,
/// given `NO_PROXY` (comma-separated hosts, `.domain` or `domain` suffixes, `*`).
fn proxied_by_environment(host: &str, no_proxy: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return false;
    }
    !no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bare = entry.trim_start_matches('.');
        entry == "*" || (!bare.is_empty() && (host == bare || host.ends_with(&format!(".{bare}"))))
    })
}

/// `HTTPS_PROXY` (or `https_proxy`), as the kubeconfig loader reads it.
fn environment_proxy() -> Option<http::Uri> {
    ["HTTPS_PROXY", "https_proxy"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<http::Uri>().ok())
}

/// `HTTPS_PROXY` is for the NetSapiens API (a cluster's egress proxy); the operator reaches
/// the Kubernetes API directly. The kubeconfig loader takes the variable as the API server's
/// proxy when the kubeconfig names none: that proxy is dropped here. A `proxy-url` in the
/// kubeconfig itself is used.
fn ignore_environment_proxy(config: &mut kube::Config) {
    let from_env = environment_proxy();
    if from_env.is_some() && config.proxy_url == from_env {
        tracing::debug!(
            "HTTPS_PROXY is used for the NetSapiens API only, not for the Kubernetes API"
        );
        config.proxy_url = None;
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::proxied_by_environment;

    #[test]
    fn no_proxy_and_loopback_as_go_reads_them() {
        for host in ["localhost", "127.0.0.1", "[::1]", "127.8.9.10"] {
            assert!(!proxied_by_environment(host, ""), "{host}");
        }
        assert!(proxied_by_environment("api.example.com", ""));
        assert!(proxied_by_environment(
            "api.example.com",
            "other.com,example.org"
        ));
        for no_proxy in [
            "example.com",
            ".example.com",
            "api.example.com:6443",
            " *",
            "x, example.com",
        ] {
            assert!(
                !proxied_by_environment("api.example.com", no_proxy),
                "{no_proxy}"
            );
        }
        assert!(proxied_by_environment("notexample.com", "example.com"));
    }
}

/// Builds a client from the environment (in-cluster config or KUBECONFIG), as `kubectl` would.
pub async fn infer(timeout: Duration) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    build(config, timeout)
}

/// A request that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("the Kubernetes API did not answer within {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Puts a deadline on every request that is not a watch.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    pub timeout: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

/// Whether the request opens a watch (`?watch=true` or `?watch=1`).
fn is_watch(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    })
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<DeadlineBody<ResBody>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let timeout = self.timeout;
        let deadline = (!is_watch(request.uri())).then(|| Instant::now() + timeout);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match deadline {
                Some(at) => tokio::time::timeout_at(at, response)
                    .await
                    .map_err(|_| DeadlineExceeded(timeout))?,
                None => response.await,
            }
            .map_err(Into::into)?;
            Ok(response.map(|inner| DeadlineBody {
                inner,
                limited: deadline.is_some(),
                waiting: None,
                timeout,
            }))
        })
    }
}

/// A response body that fails when its reader has waited `timeout` for the next piece. The
/// clock runs only while the reader waits: a reader that pauses (a watcher in backoff, say) and
/// finds the rest already buffered is not failed.
pub struct DeadlineBody<B> {
    inner: B,
    /// False for a watch.
    limited: bool,
    /// When the reader started waiting for the next piece.
    waiting: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.waiting = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if !self.limited {
            return Poll::Pending;
        }
        let timeout = self.timeout;
        let sleep = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(DeadlineExceeded(timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A service that answers at once with a body that never ends, or never answers at all.
    #[derive(Clone)]
    struct Stuck {
        answer: bool,
    }

    struct Endless;

    impl Body for Endless {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    impl Service<Request<()>> for Stuck {
        type Response = Response<Endless>;
        type Error = Infallible;
        type Future = BoxFuture<Result<Response<Endless>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            let answer = self.answer;
            Box::pin(async move {
                if !answer {
                    std::future::pending::<()>().await;
                }
                Ok(Response::new(Endless))
            })
        }
    }

    fn request(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out() {
        let mut service = DeadlineLayer {
            timeout: Duration::from_secs(10),
        }
        .layer(Stuck { answer: false });
        let error = service
            .call(request("/api/v1/namespaces/a/secrets/b"))
            .await
            .err()
            .expect("timed out");
        assert!(
            error.to_string().contains("did not answer within 10s"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_flowing_times_out() {
        let mut service = DeadlineLayer {
            timeout: Duration::from_secs(10),
        }
        .layer(Stuck { answer: true });
        let response = service
            .call(request("/api/v1/namespaces/a/secrets/b"))
            .await
            .expect("headers arrive");
        let mut body = response.into_body();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Err(_))));
    }

    /// A body whose every piece is already there.
    struct Buffered(Vec<Bytes>);

    impl Body for Buffered {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_pauses_still_gets_what_arrived() {
        let mut body = DeadlineBody {
            inner: Buffered(vec![Bytes::from_static(b"b"), Bytes::from_static(b"a")]),
            limited: true,
            waiting: None,
            timeout: Duration::from_secs(10),
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        for expected in [&b"a"[..], b"b"] {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let data = frame.unwrap().unwrap().into_data().unwrap();
            assert_eq!(&data[..], expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_has_no_deadline() {
        let mut service = DeadlineLayer {
            timeout: Duration::from_secs(10),
        }
        .layer(Stuck { answer: true });
        let response = service
            .call(request("/api/v1/secrets?watch=true&resourceVersion=5"))
            .await
            .unwrap();
        let mut body = response.into_body();
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await;
        assert!(waited.is_err(), "a watch body was cut off");
    }

    #[test]
    fn watches_are_recognised() {
        for (uri, watch) in [
            ("/api/v1/secrets?watch=true", true),
            ("/api/v1/secrets?labelSelector=a&watch=1", true),
            ("/api/v1/secrets?watch=false", false),
            ("/api/v1/secrets?watchx=true", false),
            ("/api/v1/secrets", false),
        ] {
            assert_eq!(is_watch(&uri.parse().unwrap()), watch, "{uri}");
        }
    }
}
