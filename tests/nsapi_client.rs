//! The NetSapiens client against the simulator: every grant, API and method over real HTTP,
//! the failure modes the operator must tell apart, and that no error ever shows a secret.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use nsapi_sim::{
    ClientAuth as SimClientAuth, ErrorBody, Fault, RefreshMode, Sim, SimConfig, Subscriber,
};
use nsapi_token_operator::core::api_error::{ErrorKind, FIREWALL_BACKOFF, NsApiError};
use nsapi_token_operator::core::base_url::ApiBaseUrl;
use nsapi_token_operator::core::clock::Clock;
use nsapi_token_operator::core::credentials::{
    ClientAuth, ClientCredentials, Confidential, SubscriberCredentials,
};
use nsapi_token_operator::core::token::{Grant, RefreshMethod, TokenApi, TokenGrant};
use nsapi_token_operator::nsapi::{NsApiClient, NsApiClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "operator-client";
const CLIENT_SECRET: &str = "cl1ent-s3cret-VALUE";
const USERNAME: &str = "111@abc-company";
const PASSWORD: &str = "pa55-w0rd-VALUE!";
const WRONG_PASSWORD: &str = "wr0ng-pa55-VALUE";

/// A clock the test sets, so `requested_at` and `expires_at` can be checked exactly.
struct TestClock(Mutex<Timestamp>);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

fn start_time() -> Timestamp {
    "2030-01-02T03:04:05Z".parse().unwrap()
}

struct Fixture {
    sim: Sim,
    base: ApiBaseUrl,
    api: NsApiClient,
    client: ClientCredentials,
    subscriber: SubscriberCredentials,
}

async fn fixture_with(config: SimConfig, timeout: Duration) -> Fixture {
    let sim = Sim::start(
        config
            .client(CLIENT_ID, CLIENT_SECRET)
            .subscriber(Subscriber::new(USERNAME, PASSWORD)),
    )
    .await
    .expect("simulator starts");
    let base = ApiBaseUrl::parse(&sim.base_url(), true).unwrap();
    let api = NsApiClient::new(
        NsApiClientConfig {
            timeout,
            ..NsApiClientConfig::default()
        },
        Arc::new(TestClock(Mutex::new(start_time()))),
    )
    .unwrap();
    Fixture {
        sim,
        base,
        api,
        client: ClientCredentials {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Confidential::from(CLIENT_SECRET),
            auth: ClientAuth::Body,
        },
        subscriber: SubscriberCredentials {
            username: USERNAME.to_owned(),
            password: Confidential::from(PASSWORD),
            totp: None,
        },
    }
}

async fn fixture() -> Fixture {
    fixture_with(
        SimConfig::new().token_ttl(Duration::from_secs(600)),
        Duration::from_secs(5),
    )
    .await
}

impl Fixture {
    async fn password(&self, api: TokenApi) -> Result<TokenGrant, NsApiError> {
        self.api
            .password_grant(&self.base, api, &self.client, &self.subscriber)
            .await
    }

    async fn refresh(
        &self,
        api: TokenApi,
        method: RefreshMethod,
        refresh_token: &Confidential,
    ) -> Result<TokenGrant, NsApiError> {
        self.api
            .refresh_grant(&self.base, api, method, &self.client, refresh_token, None)
            .await
    }
}

/// Neither Display nor Debug of an error may contain any secret that was sent or issued.
fn assert_no_secret(err: &NsApiError, extra: &[&str]) {
    let shown = format!("{err} | {err:?} | {err:#?}");
    eprintln!("{err}");
    for secret in [CLIENT_SECRET, PASSWORD, WRONG_PASSWORD]
        .iter()
        .chain(extra)
    {
        assert!(!shown.contains(secret), "a secret leaked into {shown}");
    }
    assert!(
        !shown.contains("client_secret="),
        "a query string leaked into {shown}"
    );
}

fn refresh_token_of(grant: &TokenGrant) -> Confidential {
    grant.refresh_token.clone().expect("a refresh token")
}

#[tokio::test]
async fn password_grant_v1_returns_a_valid_token_timed_from_the_request() {
    let f = fixture().await;
    let grant = f.password(TokenApi::V1).await.unwrap();
    assert!(f.sim.is_token_valid(grant.access_token.expose()));
    assert_eq!(grant.grant, Grant::Password);
    assert_eq!(grant.api, TokenApi::V1);
    assert_eq!(grant.token_type, "Bearer");
    assert_eq!(grant.scope.as_deref(), Some("Office Manager"));
    assert_eq!(grant.domain.as_deref(), Some("abc-company"));
    assert_eq!(grant.api_version.as_deref(), Some("Version: 44.1.0"));
    assert_eq!(grant.expires_in, 600);
    assert_eq!(grant.requested_at, start_time());
    assert_eq!(
        grant.expires_at,
        start_time() + SignedDuration::from_secs(600)
    );
    let stats = f.sim.stats();
    assert_eq!(stats.count("token/password/ok"), 1);
    assert_eq!((stats.token_requests, stats.v2_requests), (1, 0));
}

#[tokio::test]
async fn password_grant_v2() {
    let f = fixture().await;
    let grant = f.password(TokenApi::V2).await.unwrap();
    assert!(f.sim.is_token_valid(grant.access_token.expose()));
    assert_eq!(grant.api, TokenApi::V2);
    assert_eq!(grant.territory.as_deref(), Some("sim-territory"));
    assert_eq!(grant.uid.as_deref(), Some(USERNAME));
    let stats = f.sim.stats();
    assert_eq!((stats.token_requests, stats.v2_requests), (1, 1));
}

#[tokio::test]
async fn auto_uses_v2_when_present_and_v1_when_absent() {
    let f = fixture().await;
    assert_eq!(f.password(TokenApi::Auto).await.unwrap().api, TokenApi::V2);
    assert_eq!(f.sim.stats().token_requests, 1);

    f.sim.reset_stats();
    f.sim.set_v2_enabled(false);
    let grant = f.password(TokenApi::Auto).await.unwrap();
    assert_eq!(grant.api, TokenApi::V1);
    assert!(f.sim.is_token_valid(grant.access_token.expose()));
    let stats = f.sim.stats();
    assert_eq!((stats.v2_requests, stats.token_requests), (1, 2));
    assert_eq!(stats.count("token/password/ok"), 1);

    // Asked for v2 explicitly, an absent v2 is a configuration problem.
    let err = f.password(TokenApi::V2).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Permanent, "not_found")
    );
    assert!(err.to_string().contains("tokenApi"), "{err}");
}

#[tokio::test]
async fn refresh_by_get_and_by_post() {
    let f = fixture().await;
    let first = f.password(TokenApi::V1).await.unwrap();

    // A server that refuses POST proves the GET went as a GET, and the other way round.
    f.sim.inject(Fault::MethodNotAllowed {
        method: "POST".into(),
    });
    let by_get = f
        .refresh(TokenApi::V1, RefreshMethod::Get, &refresh_token_of(&first))
        .await
        .unwrap();
    assert_eq!(
        (by_get.grant, by_get.api),
        (Grant::RefreshToken, TokenApi::V1)
    );
    assert!(f.sim.is_token_valid(by_get.access_token.expose()));
    let err = f
        .refresh(
            TokenApi::V1,
            RefreshMethod::Post,
            &refresh_token_of(&by_get),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::RefreshRejected, Some(405))
    );
    assert!(err.to_string().contains("refreshMethod"), "{err}");
    assert_no_secret(&err, &[refresh_token_of(&by_get).expose()]);

    f.sim.clear_faults();
    f.sim.inject(Fault::MethodNotAllowed {
        method: "GET".into(),
    });
    let by_post = f
        .refresh(
            TokenApi::V1,
            RefreshMethod::Post,
            &refresh_token_of(&by_get),
        )
        .await
        .unwrap();
    assert!(f.sim.is_token_valid(by_post.access_token.expose()));
    assert_eq!(f.sim.stats().count("token/refresh_token/ok"), 2);
}

#[tokio::test]
async fn refresh_v2_and_auto() {
    let f = fixture().await;
    let first = f.password(TokenApi::V2).await.unwrap();
    let refreshed = f
        .refresh(TokenApi::V2, RefreshMethod::Get, &refresh_token_of(&first))
        .await
        .unwrap();
    assert_eq!(
        (refreshed.grant, refreshed.api),
        (Grant::RefreshToken, TokenApi::V2)
    );
    assert!(f.sim.is_token_valid(refreshed.access_token.expose()));

    f.sim.set_v2_enabled(false);
    let refreshed = f
        .refresh(
            TokenApi::Auto,
            RefreshMethod::Get,
            &refresh_token_of(&refreshed),
        )
        .await
        .unwrap();
    assert_eq!(refreshed.api, TokenApi::V1);
}

#[tokio::test]
async fn rotated_refresh_tokens_are_returned_and_a_reused_one_is_rejected() {
    let f = fixture_with(
        SimConfig::new().refresh_mode(RefreshMode::Rotate),
        Duration::from_secs(5),
    )
    .await;
    let first = f.password(TokenApi::V1).await.unwrap();
    let used = refresh_token_of(&first);
    let second = f
        .refresh(TokenApi::V1, RefreshMethod::Get, &used)
        .await
        .unwrap();
    assert_ne!(refresh_token_of(&second), used);
    let err = f
        .refresh(TokenApi::V1, RefreshMethod::Get, &used)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshRejected);
    assert_eq!(err.metric_label(), "refresh_rejected");
    assert_no_secret(&err, &[used.expose()]);
}

#[tokio::test]
async fn revoked_refresh_tokens_are_rejected_in_every_api() {
    let f = fixture().await;
    let v1 = f.password(TokenApi::V1).await.unwrap();
    let v2 = f.password(TokenApi::V2).await.unwrap();
    f.sim.revoke_refresh_tokens();
    for (api, method, grant) in [
        (TokenApi::V1, RefreshMethod::Get, &v1),
        (TokenApi::V1, RefreshMethod::Post, &v1),
        (TokenApi::V2, RefreshMethod::Get, &v2),
        (TokenApi::Auto, RefreshMethod::Get, &v2),
    ] {
        let token = refresh_token_of(grant);
        let err = f.refresh(api, method, &token).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::RefreshRejected,
            "{api:?} {method:?}: {err}"
        );
        assert_no_secret(&err, &[token.expose(), grant.access_token.expose()]);
    }
}

#[tokio::test]
async fn a_wrong_password_or_client_secret_is_an_authentication_error() {
    let f = fixture().await;
    let wrong = SubscriberCredentials {
        username: USERNAME.to_owned(),
        password: Confidential::from(WRONG_PASSWORD),
        totp: None,
    };
    for api in [TokenApi::V1, TokenApi::V2, TokenApi::Auto] {
        let err = f
            .api
            .password_grant(&f.base, api, &f.client, &wrong)
            .await
            .unwrap_err();
        assert_eq!(
            (err.kind(), err.status()),
            (ErrorKind::Authentication, Some(401)),
            "{api:?}: {err}"
        );
        assert!(err.to_string().contains("password"), "{err}");
        assert_no_secret(&err, &[]);
    }
    let bad_client = ClientCredentials {
        client_id: CLIENT_ID.to_owned(),
        client_secret: Confidential::from(WRONG_PASSWORD),
        auth: ClientAuth::Body,
    };
    let err = f
        .api
        .password_grant(&f.base, TokenApi::V1, &bad_client, &f.subscriber)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication);
    assert_no_secret(&err, &[]);
}

/// The client's id and secret by HTTP Basic (spec.clientAuth: basic), against a portal that
/// wants only Basic, one that takes either, and one that takes only the fields.
#[tokio::test]
async fn basic_client_auth_for_every_grant_and_api() {
    let f = fixture_with(
        SimConfig::new()
            .token_ttl(Duration::from_secs(600))
            .refresh_mode(RefreshMode::Rotate)
            .client_auth(SimClientAuth::BasicOnly),
        Duration::from_secs(5),
    )
    .await;
    let basic = ClientCredentials {
        auth: ClientAuth::Basic,
        ..f.client.clone()
    };
    // The default (fields in the body) is refused by a Basic-only portal, as a bad client.
    for api in [TokenApi::V1, TokenApi::V2] {
        let err = f.password(api).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{api:?}: {err}");
        assert_no_secret(&err, &[]);
    }
    for api in [TokenApi::V1, TokenApi::V2, TokenApi::Auto] {
        let grant = f
            .api
            .password_grant(&f.base, api, &basic, &f.subscriber)
            .await
            .unwrap_or_else(|e| panic!("{api:?}: {e}"));
        assert!(f.sim.is_token_valid(grant.access_token.expose()));
        let mut token = refresh_token_of(&grant);
        for method in [RefreshMethod::Get, RefreshMethod::Post] {
            let refreshed = f
                .api
                .refresh_grant(&f.base, api, method, &basic, &token, None)
                .await
                .unwrap_or_else(|e| panic!("{api:?} {method:?}: {e}"));
            assert_eq!(refreshed.grant, Grant::RefreshToken);
            assert!(f.sim.is_token_valid(refreshed.access_token.expose()));
            token = refresh_token_of(&refreshed);
        }
    }
    // A wrong secret by Basic is a refused client, and the error shows neither the secret
    // nor the header's base64.
    let wrong = ClientCredentials {
        client_secret: Confidential::from(WRONG_PASSWORD),
        ..basic.clone()
    };
    let err = f
        .api
        .password_grant(&f.base, TokenApi::V1, &wrong, &f.subscriber)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    use base64::Engine as _;
    let header =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{WRONG_PASSWORD}"));
    assert_no_secret(&err, &[&header]);

    // Either way on a portal that takes both; Basic is refused where only the fields count.
    f.sim.set_client_auth(SimClientAuth::BasicOrBody);
    f.password(TokenApi::V1).await.unwrap();
    f.api
        .password_grant(&f.base, TokenApi::V1, &basic, &f.subscriber)
        .await
        .unwrap();
    f.sim.set_client_auth(SimClientAuth::BodyOnly);
    let err = f
        .api
        .password_grant(&f.base, TokenApi::V2, &basic, &f.subscriber)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    f.password(TokenApi::V2).await.unwrap();
}

#[tokio::test]
async fn every_v1_error_body_shape_is_classified_by_status() {
    let f = fixture().await;
    let wrong = SubscriberCredentials {
        username: USERNAME.to_owned(),
        password: Confidential::from(WRONG_PASSWORD),
        totp: None,
    };
    for body in [
        ErrorBody::OAuth,
        ErrorBody::CodeMessage,
        ErrorBody::Text,
        ErrorBody::Html,
        ErrorBody::Empty,
        ErrorBody::JsonAsHtml,
    ] {
        f.sim.set_errors(401, 400, body);
        let err = f
            .api
            .password_grant(&f.base, TokenApi::V1, &f.client, &wrong)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{body:?}: {err}");
        assert_no_secret(&err, &[]);
    }
}

#[tokio::test]
async fn mfa_is_reported_not_returned_as_a_token() {
    let f = fixture().await;
    f.sim
        .add_subscriber(Subscriber::new("mfa@abc-company", PASSWORD).with_mfa(true));
    let subscriber = SubscriberCredentials {
        username: "mfa@abc-company".to_owned(),
        password: Confidential::from(PASSWORD),
        totp: None,
    };
    for api in [TokenApi::V1, TokenApi::V2] {
        let err = f
            .api
            .password_grant(&f.base, api, &f.client, &subscriber)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MfaRequired, "{api:?}: {err}");
        assert!(err.to_string().contains("without MFA"), "{err}");
        assert_no_secret(&err, &[]);
    }
}

#[tokio::test]
async fn invalid_scope_says_the_user_lacks_permission() {
    let f = fixture().await;
    f.sim.inject(Fault::InvalidScope);
    let err = f.password(TokenApi::V2).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Authentication, "permission_denied")
    );
    assert!(err.to_string().contains("lacks permission"), "{err}");
}

#[tokio::test]
async fn server_errors_are_transient() {
    let f = fixture().await;
    f.sim.inject(Fault::Status {
        status: 503,
        count: 1,
    });
    let err = f.password(TokenApi::V1).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.status(), err.metric_label()),
        (ErrorKind::Transient, Some(503), "server_error")
    );
    assert_no_secret(&err, &[]);
    // The fault is spent: the next call works.
    f.password(TokenApi::V1).await.unwrap();

    // A 5xx from v2 is an answer from a v2 that exists: Auto does not fall back.
    f.sim.reset_stats();
    f.sim.inject(Fault::Status {
        status: 502,
        count: 1,
    });
    let err = f.password(TokenApi::Auto).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(f.sim.stats().token_requests, 1);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let f = fixture().await;
    f.sim.inject(Fault::TooManyRequests {
        retry_after_secs: 7,
        count: 1,
    });
    let err = f.password(TokenApi::V1).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Transient, "rate_limited")
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_firewall_page_asks_for_a_long_pause() {
    let f = fixture().await;
    f.sim.inject(Fault::Firewall {
        after: 0,
        window: Duration::from_secs(60),
    });
    let err = f.password(TokenApi::V1).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.status(), err.metric_label()),
        (ErrorKind::Transient, Some(403), "firewall")
    );
    assert_eq!(err.retry_after(), Some(FIREWALL_BACKOFF));
}

#[tokio::test]
async fn a_hanging_server_times_out_without_leaking_the_query_string() {
    let f = fixture_with(SimConfig::new(), Duration::from_secs(1)).await;
    let first = f.password(TokenApi::V1).await.unwrap();
    let refresh_token = refresh_token_of(&first);
    f.sim.inject(Fault::Hang);
    let started = Instant::now();
    let err = f
        .refresh(TokenApi::V1, RefreshMethod::Get, &refresh_token)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (err.kind(), err.metric_label(), err.status()),
        (ErrorKind::Transient, "timeout", None)
    );
    assert!(
        err.to_string().contains("oauth2/token/?[redacted]"),
        "{err}"
    );
    assert_no_secret(&err, &[refresh_token.expose()]);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn unusable_success_bodies_are_transient_and_json_labelled_html_is_fine() {
    let f = fixture().await;
    for fault in [Fault::MalformedJson, Fault::EmptyBody] {
        f.sim.clear_faults();
        f.sim.inject(fault.clone());
        let err = f.password(TokenApi::V1).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.metric_label()),
            (ErrorKind::Transient, "malformed_response"),
            "{fault:?}"
        );
        assert_no_secret(&err, &[]);
    }
    f.sim.clear_faults();
    f.sim.inject(Fault::JsonAsHtml);
    let grant = f.password(TokenApi::Auto).await.unwrap();
    assert_eq!(grant.api, TokenApi::V2);
}

#[tokio::test]
async fn read_token_reports_what_the_server_knows() {
    let f = fixture().await;
    let grant = f.password(TokenApi::V1).await.unwrap();
    let info = f
        .api
        .read_token(&f.base, &grant.access_token)
        .await
        .unwrap();
    assert_eq!(info.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(info.domain.as_deref(), Some("abc-company"));
    assert_eq!(info.territory.as_deref(), Some("sim-territory"));
    assert_eq!(info.uid.as_deref(), Some(USERNAME));
    assert_eq!(info.scope.as_deref(), Some("Office Manager"));
    assert_eq!(info.api_version.as_deref(), Some("Version: 44.1.0"));
    assert!(info.expires.is_some());

    f.sim.revoke_token(grant.access_token.expose());
    let err = f
        .api
        .read_token(&f.base, &grant.access_token)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Authentication, "token_refused")
    );
    assert_no_secret(&err, &[grant.access_token.expose()]);

    let fresh = f.password(TokenApi::V1).await.unwrap();
    f.sim.inject(Fault::ReadStatus {
        status: 500,
        count: 1,
    });
    let err = f
        .api
        .read_token(&f.base, &fresh.access_token)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_no_secret(&err, &[fresh.access_token.expose()]);
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_says_nothing_was_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let f = fixture().await;
    let base = ApiBaseUrl::parse(&format!("http://{addr}/ns-api/"), true).unwrap();
    let err = f
        .api
        .password_grant(&base, TokenApi::V1, &f.client, &f.subscriber)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Transient, "connect_failed")
    );
    assert!(err.was_not_sent());
    assert_no_secret(&err, &[]);
}

/// Serves one canned HTTP answer to each connection, and reports what it was sent.
async fn canned_server(
    answer: &'static str,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let _ = sent.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}/ns-api/"), received)
}

#[tokio::test]
async fn redirects_are_not_followed_and_requests_carry_the_documented_headers() {
    let (url, mut received) = canned_server(
        "HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/steal?token=abc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let f = fixture().await;
    let base = ApiBaseUrl::parse(&url, true).unwrap();
    let err = f
        .api
        .password_grant(&base, TokenApi::V1, &f.client, &f.subscriber)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Permanent, "redirect")
    );
    assert!(
        err.to_string()
            .contains("http://elsewhere.invalid/steal?[redacted]"),
        "{err}"
    );

    let request = received.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        request.starts_with("post /ns-api/oauth2/token/ http/1.1"),
        "{request}"
    );
    assert!(request.contains("accept: application/json"), "{request}");
    assert!(
        request.contains("user-agent: nsapi-token-operator/"),
        "{request}"
    );
    assert!(
        request.contains("content-type: application/x-www-form-urlencoded"),
        "{request}"
    );
    assert!(request.contains("username=111%40abc-company"), "{request}");
    assert!(request.contains("grant_type=password"), "{request}");
}

#[tokio::test]
async fn auto_falls_back_when_v2_serves_an_html_page_with_200() {
    let (url, mut received) = canned_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 31\r\nConnection: close\r\n\r\n<html><body>Login</body></html>",
    )
    .await;
    let f = fixture().await;
    let base = ApiBaseUrl::parse(&url, true).unwrap();
    let err = f
        .api
        .password_grant(&base, TokenApi::Auto, &f.client, &f.subscriber)
        .await
        .unwrap_err();
    // v2 looked absent, so v1 was tried; v1's HTML 200 is not a token either.
    assert_eq!(
        (err.kind(), err.metric_label()),
        (ErrorKind::Transient, "malformed_response")
    );
    let first = received.recv().await.unwrap();
    let second = received.recv().await.unwrap();
    assert!(first.starts_with("POST /ns-api/v2/tokens "), "{first}");
    assert!(
        second.starts_with("POST /ns-api/oauth2/token/ "),
        "{second}"
    );
    assert_no_secret(&err, &[]);
}
