//! The HTTP side: builds each token request as NSAPI.md describes it, sends it with a timeout
//! and no redirects, and hands status, headers and body to the pure classification in
//! `classify.rs` and parsing in `answer.rs`. Nothing here formats a secret or an unredacted URL.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, HeaderMap, HeaderValue, SET_COOKIE};
use reqwest::redirect;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::answer::{
    GrantBodyError, body_is_json, parse_grant_body, parse_jwt_body, parse_jwt_info,
    parse_token_info,
};
use super::classify::{
    Exchange, Operation, TransportFailure, classify_grant_body, classify_status,
    classify_transport, malformed, v2_absent,
};
use super::redact::{redact_url, render_error_chain};
use super::tls;
use crate::core::api_error::NsApiError;
use crate::core::base_url::ApiBaseUrl;
use crate::core::clock::Clock;
use crate::core::credentials::{
    ClientAuth, ClientCredentials, Confidential, SubscriberCredentials,
};
use crate::core::token::{Grant, RefreshMethod, TokenApi, TokenGrant, TokenInfo};
use crate::core::totp::Passcode;

/// Bodies are read up to this size; a token answer is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// How the client talks to the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsApiClientConfig {
    /// Limit for connecting and for each whole request, body included. Default 15 s.
    pub timeout: Duration,
    /// Default `nsapi-token-operator/<version> (+<repository URL>)`.
    pub user_agent: String,
    /// CA certificates trusted beside the system's (the operator's `--ca-file`).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for NsApiClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            user_agent: format!(
                "nsapi-token-operator/{} (+{})",
                env!("CARGO_PKG_VERSION"),
                env!("CARGO_PKG_REPOSITORY")
            ),
            extra_roots: Vec::new(),
        }
    }
}

/// A NetSapiens API client. Cheap to clone (the connection pool and clock are shared).
#[derive(Clone)]
pub struct NsApiClient {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    user_agent: String,
    /// The roots this client trusts: the system's, `extra_roots`, and a CA bundle's.
    roots: Arc<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for NsApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NsApiClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a password login answered: a token, or (for a user with MFA enforced) the challenge
/// that the `mfa` grant answers.
#[derive(Debug)]
pub enum Login {
    Token(TokenGrant),
    Mfa(MfaChallenge),
}

/// An MFA user's intermediate answer to the password grant.
#[derive(Debug)]
pub struct MfaChallenge {
    /// The intermediate token, which the `mfa` grant sends back.
    pub intermediate: Confidential,
    /// The endpoint that answered (`V1`, `V2` or `Jwt`): the second step goes to the same one.
    pub api: TokenApi,
    /// The `mfa_type` the server named, if any (`authenticator` for a TOTP app).
    pub mfa_type: Option<String>,
    /// The session cookie the answer set, if any.
    pub session_cookie: Option<Confidential>,
    /// What the operator says when it cannot answer the challenge (no seed, or not an
    /// authenticator): `MfaRequired`.
    pub unanswered: NsApiError,
}

impl MfaChallenge {
    /// Whether a TOTP passcode can answer it: the server named an authenticator app (or TOTP),
    /// or named nothing.
    pub fn takes_a_totp_passcode(&self) -> bool {
        self.mfa_type.as_deref().is_none_or(|t| {
            ["authenticator", "totp", "google", "app"]
                .iter()
                .any(|known| t.eq_ignore_ascii_case(known))
        })
    }
}

/// What a token request carries besides the client.
#[derive(Clone, Copy)]
enum GrantRequest<'a> {
    Password(&'a SubscriberCredentials),
    Refresh(&'a Confidential, RefreshMethod),
    /// The second step of an MFA user's login (NSAPI.md "MFA, second step").
    Mfa {
        subscriber: &'a SubscriberCredentials,
        intermediate: &'a Confidential,
        passcode: &'a Passcode,
    },
}

impl GrantRequest<'_> {
    fn grant(self) -> Grant {
        match self {
            GrantRequest::Password(_) => Grant::Password,
            GrantRequest::Refresh(..) => Grant::RefreshToken,
            GrantRequest::Mfa { .. } => Grant::Mfa,
        }
    }

    fn operation(self) -> Operation {
        match self {
            GrantRequest::Password(_) => Operation::PasswordGrant,
            GrantRequest::Refresh(..) => Operation::RefreshGrant,
            GrantRequest::Mfa { .. } => Operation::MfaGrant,
        }
    }

    /// The `grant_type` plus the grant's own fields, in the order the guide lists them. With
    /// Basic client authentication the client id and secret are in the header only.
    fn fields<'a>(&'a self, client: &'a ClientCredentials) -> Vec<(&'static str, &'a str)> {
        let mut fields = vec![("grant_type", self.grant().as_str())];
        if client.auth == ClientAuth::Body {
            fields.push(("client_id", client.client_id.as_str()));
            fields.push(("client_secret", client.client_secret.expose()));
        }
        match self {
            GrantRequest::Password(subscriber) => {
                fields.push(("username", subscriber.username.as_str()));
                fields.push(("password", subscriber.password.expose()));
            }
            GrantRequest::Refresh(token, _) => fields.push(("refresh_token", token.expose())),
            GrantRequest::Mfa {
                subscriber,
                intermediate,
                passcode,
            } => {
                fields.push(("username", subscriber.username.as_str()));
                fields.push(("password", subscriber.password.expose()));
                fields.push(("mfa_vendor", "google"));
                fields.push(("mfa_type", "authenticator"));
                fields.push(("passcode", passcode.expose()));
                fields.push(("ns_id_type", "subscriber"));
                fields.push(("access_token", intermediate.expose()));
            }
        }
        fields
    }

    /// Every secret value the request sends, to scrub from whatever comes back: the Basic
    /// credentials (base64, empty with body authentication) and a session cookie too.
    fn secrets<'a>(
        &'a self,
        client: &'a ClientCredentials,
        basic: &'a BasicCredentials,
        cookie: Option<&'a Confidential>,
    ) -> Vec<&'a str> {
        let mut secrets = vec![client.client_secret.expose(), basic.encoded.expose()];
        match self {
            GrantRequest::Password(subscriber) => secrets.push(subscriber.password.expose()),
            GrantRequest::Refresh(token, _) => secrets.push(token.expose()),
            GrantRequest::Mfa {
                subscriber,
                intermediate,
                passcode,
            } => secrets.extend([
                subscriber.password.expose(),
                intermediate.expose(),
                passcode.expose(),
            ]),
        }
        secrets.extend(cookie.map(Confidential::expose));
        secrets
    }
}

/// The client's HTTP Basic credentials (RFC 6749 2.3.1):
/// `base64(urlencode(client_id) ":" urlencode(client_secret))`, form-urlencoded as Appendix B
/// says. Empty with body authentication.
struct BasicCredentials {
    encoded: Confidential,
}

impl BasicCredentials {
    fn of(client: &ClientCredentials) -> Self {
        let encoded = match client.auth {
            ClientAuth::Body => String::new(),
            ClientAuth::Basic => {
                let form = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let pair = format!(
                    "{}:{}",
                    form(&client.client_id),
                    form(client.client_secret.expose())
                );
                base64::engine::general_purpose::STANDARD.encode(pair)
            }
        };
        Self {
            encoded: Confidential::new(encoded),
        }
    }

    /// Adds the `Authorization` header (marked sensitive) when Basic is in use.
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.encoded.is_empty() {
            return request;
        }
        match HeaderValue::from_str(&format!("Basic {}", self.encoded.expose())) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
            // base64 is always a valid header value.
            Err(_) => request,
        }
    }
}

/// An answer, read in full (up to [`MAX_BODY`]).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    requested_at: Timestamp,
}

/// A v2 failure, split by whether it means "no v2 here" (so `Auto` may fall back to v1).
enum V2Failure {
    Absent(NsApiError),
    Failed(NsApiError),
}

impl NsApiClient {
    /// Builds the client: timeouts, no redirects, `Accept: application/json`, the User-Agent.
    /// Installs rustls' ring provider as the process default if none is installed yet.
    pub fn new(config: NsApiClientConfig, clock: Arc<dyn Clock>) -> Result<Self, NsApiError> {
        crate::nsapi::tls::install_crypto_provider();
        let mut roots = tls::system_roots();
        roots.extend(config.extra_roots);
        Self::build(clock, config.timeout, config.user_agent, Arc::new(roots))
    }

    /// The same client trusting the certificates of a CA bundle too (`spec.caBundle`). It has
    /// its own connection pool.
    pub fn with_ca_bundle(&self, bundle: &[CertificateDer<'static>]) -> Result<Self, NsApiError> {
        let mut roots = (*self.roots).clone();
        roots.extend(bundle.iter().cloned());
        Self::build(
            self.clock.clone(),
            self.timeout,
            self.user_agent.clone(),
            Arc::new(roots),
        )
    }

    fn build(
        clock: Arc<dyn Clock>,
        timeout: Duration,
        user_agent: String,
        roots: Arc<Vec<CertificateDer<'static>>>,
    ) -> Result<Self, NsApiError> {
        let setup_failed = |detail: String| NsApiError::Permanent {
            message: format!(
                "could not set up the HTTP client for the NetSapiens API ({detail}): check the configured user agent and the TLS setup (--ca-file, spec.caBundle)"
            ),
            status: None,
            label: "client_setup",
        };
        let tls = tls::client_config(tls::root_store(&roots)).map_err(setup_failed)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect could carry the credentials to another host: never follow one.
            .redirect(redirect::Policy::none())
            .referer(false)
            .user_agent(user_agent.as_str())
            .default_headers(headers)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|err| setup_failed(render_error_chain(&err.without_url())))?;
        Ok(Self {
            http,
            clock,
            timeout,
            user_agent,
            roots,
        })
    }

    /// Gets a token with the subscriber's username and password. A user with MFA enforced
    /// ends in [`NsApiError::MfaRequired`] (see [`Self::password_login`] to answer it).
    pub async fn password_grant(
        &self,
        base: &ApiBaseUrl,
        api: TokenApi,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
    ) -> Result<TokenGrant, NsApiError> {
        match self.password_login(base, api, client, subscriber).await? {
            Login::Token(grant) => Ok(grant),
            Login::Mfa(challenge) => Err(challenge.unanswered),
        }
    }

    /// Logs in with the subscriber's username and password: a token, or the MFA challenge of a
    /// user with MFA enforced.
    #[tracing::instrument(name = "nsapi_password_grant", skip_all, fields(api = api.as_str(), host = base.host()))]
    pub async fn password_login(
        &self,
        base: &ApiBaseUrl,
        api: TokenApi,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
    ) -> Result<Login, NsApiError> {
        self.token_grant(base, api, client, GrantRequest::Password(subscriber), None)
            .await
    }

    /// Answers an MFA challenge with a passcode (`grant_type=mfa`), at the endpoint that set it.
    /// A refused passcode is an [`NsApiError::Authentication`], as a refused password is.
    #[tracing::instrument(name = "nsapi_mfa_grant", skip_all, fields(api = challenge.api.as_str(), host = base.host()))]
    pub async fn mfa_grant(
        &self,
        base: &ApiBaseUrl,
        challenge: &MfaChallenge,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
        passcode: &Passcode,
    ) -> Result<TokenGrant, NsApiError> {
        let request = GrantRequest::Mfa {
            subscriber,
            intermediate: &challenge.intermediate,
            passcode,
        };
        let login = self
            .token_grant(
                base,
                challenge.api,
                client,
                request,
                challenge.session_cookie.as_ref(),
            )
            .await?;
        match login {
            Login::Token(grant) => Ok(grant),
            // Asked for MFA again: not a token, and not answered twice in one pass.
            Login::Mfa(again) => Err(again.unanswered),
        }
    }

    /// Gets a new token with a refresh token (a refresh JWT with `Jwt`, sent with the session
    /// cookie, if the server set one). `method` applies to v1 only (v2 always POSTs JSON). A
    /// client error comes back as [`NsApiError::RefreshRejected`].
    #[tracing::instrument(name = "nsapi_refresh_grant", skip_all, fields(api = api.as_str(), method = method.as_str(), host = base.host()))]
    pub async fn refresh_grant(
        &self,
        base: &ApiBaseUrl,
        api: TokenApi,
        method: RefreshMethod,
        client: &ClientCredentials,
        refresh_token: &Confidential,
        cookie: Option<&Confidential>,
    ) -> Result<TokenGrant, NsApiError> {
        let request = GrantRequest::Refresh(refresh_token, method);
        match self.token_grant(base, api, client, request, cookie).await? {
            Login::Token(grant) => Ok(grant),
            Login::Mfa(challenge) => Err(challenge.unanswered),
        }
    }

    /// Asks `oauth2/read?format=json` what the server knows about `access_token`.
    #[tracing::instrument(name = "nsapi_read_token", skip_all, fields(host = base.host()))]
    pub async fn read_token(
        &self,
        base: &ApiBaseUrl,
        access_token: &Confidential,
    ) -> Result<TokenInfo, NsApiError> {
        let mut url = base.endpoint("oauth2/read");
        url.query_pairs_mut().append_pair("format", "json");
        self.read(url, TokenApi::V1, access_token, None, parse_token_info)
            .await
    }

    /// Asks `GET v2/jwt` for the claims of a JWT (with the session cookie, if there is one):
    /// the check of `tokenApi: jwt`.
    #[tracing::instrument(name = "nsapi_read_jwt", skip_all, fields(host = base.host()))]
    pub async fn read_jwt(
        &self,
        base: &ApiBaseUrl,
        jwt: &Confidential,
        cookie: Option<&Confidential>,
    ) -> Result<TokenInfo, NsApiError> {
        let url = base.endpoint("v2/jwt");
        self.read(url, TokenApi::Jwt, jwt, cookie, parse_jwt_info)
            .await
    }

    async fn read(
        &self,
        url: url::Url,
        api: TokenApi,
        access_token: &Confidential,
        cookie: Option<&Confidential>,
        parse: fn(&[u8]) -> Option<TokenInfo>,
    ) -> Result<TokenInfo, NsApiError> {
        let mut secrets = vec![access_token.expose()];
        secrets.extend(cookie.map(Confidential::expose));
        let mut ex = Exchange {
            op: Operation::ReadToken,
            api,
            url: url.as_str(),
            secrets: &secrets,
            now: self.clock.now(),
        };
        let request = with_cookie(
            self.http
                .get(url.clone())
                .bearer_auth(access_token.expose()),
            cookie,
        );
        let answer = self.send(request, &mut ex).await?;
        if !(200..=299).contains(&answer.status) {
            return Err(classify_status(
                &ex,
                answer.status,
                &answer.headers,
                &answer.body,
            ));
        }
        parse(&answer.body).ok_or_else(|| {
            malformed(
                &ex,
                answer.status,
                "the body is not a JSON object (an older server may answer XML)",
            )
        })
    }

    async fn token_grant(
        &self,
        base: &ApiBaseUrl,
        api: TokenApi,
        client: &ClientCredentials,
        request: GrantRequest<'_>,
        cookie: Option<&Confidential>,
    ) -> Result<Login, NsApiError> {
        let result = match api {
            TokenApi::V1 => self.grant_v1(base, client, request).await,
            TokenApi::V2 => match self.grant_v2(base, client, request).await {
                Ok(login) => Ok(login),
                Err(V2Failure::Absent(err) | V2Failure::Failed(err)) => Err(err),
            },
            TokenApi::Auto => match self.grant_v2(base, client, request).await {
                Ok(login) => Ok(login),
                Err(V2Failure::Absent(err)) => {
                    tracing::debug!(
                        v2_status = err.status(),
                        "API v2 token endpoint absent, falling back to v1"
                    );
                    self.grant_v1(base, client, request).await
                }
                Err(V2Failure::Failed(err)) => Err(err),
            },
            TokenApi::Jwt => self.grant_jwt(base, client, request, cookie).await,
        };
        match &result {
            Ok(Login::Token(grant)) => tracing::debug!(
                grant = grant.grant.as_str(),
                api = grant.api.as_str(),
                expires_in = grant.expires_in,
                "token granted"
            ),
            Ok(Login::Mfa(challenge)) => tracing::debug!(
                grant = request.grant().as_str(),
                api = challenge.api.as_str(),
                "the subscriber has MFA enforced: an intermediate token came back"
            ),
            Err(err) => tracing::debug!(
                grant = request.grant().as_str(),
                kind = err.kind().as_str(),
                reason = err.metric_label(),
                status = err.status(),
                "token request failed"
            ),
        }
        result
    }

    async fn grant_v1(
        &self,
        base: &ApiBaseUrl,
        client: &ClientCredentials,
        request: GrantRequest<'_>,
    ) -> Result<Login, NsApiError> {
        let mut url = base.endpoint("oauth2/token/");
        let fields = request.fields(client);
        let get = matches!(request, GrantRequest::Refresh(_, RefreshMethod::Get));
        if get {
            url.query_pairs_mut().extend_pairs(fields.iter().copied());
        }
        let basic = BasicCredentials::of(client);
        let secrets = request.secrets(client, &basic, None);
        let mut ex = Exchange {
            op: request.operation(),
            api: TokenApi::V1,
            url: url.as_str(),
            secrets: &secrets,
            now: self.clock.now(),
        };
        let builder = basic.apply(if get {
            self.http.get(url.clone())
        } else {
            self.http.post(url.clone()).form(&fields)
        });
        let answer = self.send(builder, &mut ex).await?;
        finish_grant(&ex, request.grant(), answer, parse_grant_body)
    }

    async fn grant_v2(
        &self,
        base: &ApiBaseUrl,
        client: &ClientCredentials,
        request: GrantRequest<'_>,
    ) -> Result<Login, V2Failure> {
        let url = base.endpoint("v2/tokens");
        let basic = BasicCredentials::of(client);
        let secrets = request.secrets(client, &basic, None);
        let mut ex = Exchange {
            op: request.operation(),
            api: TokenApi::V2,
            url: url.as_str(),
            secrets: &secrets,
            now: self.clock.now(),
        };
        let builder = basic.apply(
            self.http
                .post(url.clone())
                .json(&json_fields(&request, client)),
        );
        let answer = self
            .send(builder, &mut ex)
            .await
            .map_err(V2Failure::Failed)?;
        let absent = v2_absent(answer.status, body_is_json(&answer.body));
        finish_grant(&ex, request.grant(), answer, parse_grant_body).map_err(|err| {
            if absent {
                V2Failure::Absent(err)
            } else {
                V2Failure::Failed(err)
            }
        })
    }

    /// `POST v2/jwt`: the same JSON fields as `v2/tokens`; the answer is a JWT (and a refresh
    /// JWT, and a session cookie, where the server gives them).
    async fn grant_jwt(
        &self,
        base: &ApiBaseUrl,
        client: &ClientCredentials,
        request: GrantRequest<'_>,
        cookie: Option<&Confidential>,
    ) -> Result<Login, NsApiError> {
        let url = base.endpoint("v2/jwt");
        let basic = BasicCredentials::of(client);
        let secrets = request.secrets(client, &basic, cookie);
        let mut ex = Exchange {
            op: request.operation(),
            api: TokenApi::Jwt,
            url: url.as_str(),
            secrets: &secrets,
            now: self.clock.now(),
        };
        let builder = with_cookie(
            basic.apply(
                self.http
                    .post(url.clone())
                    .json(&json_fields(&request, client)),
            ),
            cookie,
        );
        let answer = self.send(builder, &mut ex).await?;
        // A server that sets no new cookie keeps the session of the one sent.
        let session_cookie = session_cookie(&answer.headers).or_else(|| cookie.cloned());
        let parse = |body: &[u8], grant, _api, at| parse_jwt_body(body, grant, at);
        let mut login = finish_grant(&ex, request.grant(), answer, parse)?;
        match &mut login {
            Login::Token(grant) => grant.session_cookie = session_cookie,
            Login::Mfa(challenge) => challenge.session_cookie = session_cookie,
        }
        Ok(login)
    }

    /// Sends the request and reads the answer. `requested_at` is read immediately before
    /// sending; `ex.now` is updated when the answer arrives.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        ex: &mut Exchange<'_>,
    ) -> Result<Answer, NsApiError> {
        let endpoint = redact_url(ex.url);
        let requested_at = self.clock.now();
        let started = Instant::now();
        let result = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_capped(&mut response).await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ex.now = self.clock.now();
        match result {
            Ok((status, headers, body)) => {
                tracing::debug!(%endpoint, status, elapsed_ms, "NetSapiens API answered");
                Ok(Answer {
                    status,
                    headers,
                    body,
                    requested_at,
                })
            }
            Err(err) => {
                let err = err.without_url();
                let failure = if let Some(untrusted) = tls::untrusted_in(&err) {
                    TransportFailure::UntrustedCertificate(untrusted.to_string())
                } else if err.is_connect() {
                    // No connection, so nothing of the request reached the server.
                    TransportFailure::Connect {
                        timeout: err.is_timeout(),
                    }
                } else if err.is_timeout() {
                    TransportFailure::Timeout
                } else if err.is_builder() {
                    TransportFailure::InvalidRequest
                } else {
                    TransportFailure::Network
                };
                let detail = render_error_chain(&err);
                tracing::debug!(%endpoint, elapsed_ms, ?failure, "NetSapiens API request failed");
                Err(classify_transport(ex, failure, self.timeout, &detail))
            }
        }
    }
}

/// A 2xx becomes a token, or an MFA challenge, or a malformed-body error; anything else is
/// classified.
fn finish_grant(
    ex: &Exchange<'_>,
    grant: Grant,
    answer: Answer,
    parse: impl FnOnce(&[u8], Grant, TokenApi, Timestamp) -> Result<TokenGrant, GrantBodyError>,
) -> Result<Login, NsApiError> {
    if !(200..=299).contains(&answer.status) {
        return Err(classify_status(
            ex,
            answer.status,
            &answer.headers,
            &answer.body,
        ));
    }
    match parse(&answer.body, grant, ex.api, answer.requested_at) {
        Ok(token) => Ok(Login::Token(token)),
        Err(problem) => {
            let error =
                classify_grant_body(ex, answer.status, &answer.headers, &answer.body, &problem);
            match problem {
                GrantBodyError::MfaRequired {
                    mfa_type,
                    intermediate: Some(intermediate),
                    ..
                } => Ok(Login::Mfa(MfaChallenge {
                    intermediate,
                    api: ex.api,
                    mfa_type,
                    session_cookie: None,
                    unanswered: error,
                })),
                _ => Err(error),
            }
        }
    }
}

/// A grant's fields as the JSON object of `v2/tokens` and `v2/jwt`.
fn json_fields(
    request: &GrantRequest<'_>,
    client: &ClientCredentials,
) -> serde_json::Map<String, serde_json::Value> {
    request
        .fields(client)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect()
}

/// Adds the session cookie (marked sensitive), if there is one.
fn with_cookie(
    request: reqwest::RequestBuilder,
    cookie: Option<&Confidential>,
) -> reqwest::RequestBuilder {
    match cookie.map(|c| HeaderValue::from_str(c.expose())) {
        Some(Ok(mut value)) => {
            value.set_sensitive(true);
            request.header(COOKIE, value)
        }
        _ => request,
    }
}

/// The `name=value` of the first cookie an answer sets (its attributes dropped), if any.
fn session_cookie(headers: &HeaderMap) -> Option<Confidential> {
    let set = headers.get(SET_COOKIE)?.to_str().ok()?;
    let pair = set.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    (!name.trim().is_empty() && !value.trim().is_empty()).then(|| Confidential::from(pair))
}

async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::SystemClock;

    #[test]
    fn default_config() {
        let config = NsApiClientConfig::default();
        assert_eq!(config.timeout, Duration::from_secs(15));
        assert!(
            config.user_agent.starts_with(concat!(
                "nsapi-token-operator/",
                env!("CARGO_PKG_VERSION"),
                " (+http"
            )),
            "{}",
            config.user_agent
        );
        assert!(config.user_agent.ends_with(')'));
    }

    #[test]
    fn client_builds_and_debug_is_plain() {
        let client = NsApiClient::new(NsApiClientConfig::default(), Arc::new(SystemClock)).unwrap();
        let _clone = client.clone();
        assert!(format!("{client:?}").contains("NsApiClient"));
        // Installing the provider twice is harmless.
        NsApiClient::new(NsApiClientConfig::default(), Arc::new(SystemClock)).unwrap();
    }

    #[test]
    fn a_bad_user_agent_is_a_permanent_error() {
        let config = NsApiClientConfig {
            user_agent: "bad\nagent".to_owned(),
            ..NsApiClientConfig::default()
        };
        let err = NsApiClient::new(config, Arc::new(SystemClock)).unwrap_err();
        assert_eq!(err.metric_label(), "client_setup");
    }

    #[test]
    fn grant_fields_follow_the_guide() {
        let client = ClientCredentials {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            auth: ClientAuth::Body,
        };
        let none = BasicCredentials::of(&client);
        let subscriber = SubscriberCredentials {
            username: "111@abc-company".into(),
            password: "pw".into(),
            totp: None,
        };
        let password = GrantRequest::Password(&subscriber);
        assert_eq!(
            password.fields(&client),
            [
                ("grant_type", "password"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
                ("username", "111@abc-company"),
                ("password", "pw"),
            ]
        );
        assert_eq!(
            password.secrets(&client, &none, None),
            ["csecret", "", "pw"]
        );
        let refresh_token = Confidential::from("rtok");
        let refresh = GrantRequest::Refresh(&refresh_token, RefreshMethod::Get);
        assert_eq!(
            refresh.fields(&client),
            [
                ("grant_type", "refresh_token"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
                ("refresh_token", "rtok"),
            ]
        );
        assert_eq!(
            refresh.secrets(&client, &none, None),
            ["csecret", "", "rtok"]
        );
    }

    #[test]
    fn basic_client_auth_moves_the_client_to_the_header() {
        // RFC 6749 2.3.1: each part form-urlencoded, then base64 of `id:secret`.
        let client = ClientCredentials {
            client_id: "my client".into(),
            client_secret: "s3cr:t/+&=".into(),
            auth: ClientAuth::Basic,
        };
        let basic = BasicCredentials::of(&client);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.encoded.expose())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client:s3cr%3At%2F%2B%26%3D"
        );
        let subscriber = SubscriberCredentials {
            username: "111@abc-company".into(),
            password: "pa55w0rd".into(),
            totp: None,
        };
        let password = GrantRequest::Password(&subscriber);
        assert_eq!(
            password.fields(&client),
            [
                ("grant_type", "password"),
                ("username", "111@abc-company"),
                ("password", "pa55w0rd"),
            ]
        );
        let secrets = password.secrets(&client, &basic, None);
        assert_eq!(secrets[0], "s3cr:t/+&=");
        assert_eq!(secrets[1], basic.encoded.expose());
        assert_eq!(secrets[2], "pa55w0rd");
        // The header, if a server echoed it, is scrubbed from what it says.
        let echo = format!("bad header Authorization: Basic {}", basic.encoded.expose());
        let shown = crate::nsapi::redact::scrub(&echo, &secrets).unwrap();
        assert!(!shown.contains(basic.encoded.expose()), "{shown}");
        let token = Confidential::from("rtok");
        let refresh = GrantRequest::Refresh(&token, RefreshMethod::Get);
        assert_eq!(
            refresh.fields(&client),
            [("grant_type", "refresh_token"), ("refresh_token", "rtok")]
        );
    }

    #[test]
    fn the_mfa_step_sends_what_the_vendor_documents_and_scrubs_all_of_it() {
        let client = ClientCredentials {
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            auth: ClientAuth::Body,
        };
        let subscriber = SubscriberCredentials {
            username: "111@abc-company".into(),
            password: "pw".into(),
            totp: None,
        };
        let intermediate = Confidential::from("mfa-intermediate");
        let seed = crate::core::totp::TotpSeed::parse("JBSWY3DPEHPK3PXP").unwrap();
        let passcode = seed.passcode(1);
        let mfa = GrantRequest::Mfa {
            subscriber: &subscriber,
            intermediate: &intermediate,
            passcode: &passcode,
        };
        assert_eq!(mfa.grant(), Grant::Mfa);
        assert_eq!(
            mfa.fields(&client),
            [
                ("grant_type", "mfa"),
                ("client_id", "cid"),
                ("client_secret", "csecret"),
                ("username", "111@abc-company"),
                ("password", "pw"),
                ("mfa_vendor", "google"),
                ("mfa_type", "authenticator"),
                ("passcode", passcode.expose()),
                ("ns_id_type", "subscriber"),
                ("access_token", "mfa-intermediate"),
            ]
        );
        let none = BasicCredentials::of(&client);
        let cookie = Confidential::from("PHPSESSID=abc123");
        let secrets = mfa.secrets(&client, &none, Some(&cookie));
        for sent in [
            "csecret",
            "pw",
            "mfa-intermediate",
            passcode.expose(),
            "PHPSESSID=abc123",
        ] {
            assert!(secrets.contains(&sent), "{sent} is not scrubbed");
        }
    }

    #[test]
    fn the_session_cookie_is_the_first_name_and_value() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_cookie(&headers), None);
        headers.insert(
            SET_COOKIE,
            HeaderValue::from_static("nssession=abc123; Path=/; HttpOnly"),
        );
        assert_eq!(
            session_cookie(&headers).unwrap().expose(),
            "nssession=abc123"
        );
        headers.insert(SET_COOKIE, HeaderValue::from_static("=novalue; Path=/"));
        assert_eq!(session_cookie(&headers), None);
        headers.insert(SET_COOKIE, HeaderValue::from_static("name=; Path=/"));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn a_challenge_takes_a_totp_passcode_only_from_an_authenticator() {
        let challenge = |mfa_type: Option<&str>| MfaChallenge {
            intermediate: "i".into(),
            api: TokenApi::V2,
            mfa_type: mfa_type.map(str::to_owned),
            session_cookie: None,
            unanswered: NsApiError::MfaRequired {
                message: String::new(),
            },
        };
        for yes in [None, Some("authenticator"), Some("TOTP"), Some("google")] {
            assert!(challenge(yes).takes_a_totp_passcode(), "{yes:?}");
        }
        for no in [Some("sms"), Some("email"), Some("duo")] {
            assert!(!challenge(no).takes_a_totp_passcode(), "{no:?}");
        }
    }

    #[test]
    fn refresh_get_url_percent_encodes_the_at_sign() {
        let base = ApiBaseUrl::parse("https://portal.example.com", false).unwrap();
        let mut url = base.endpoint("oauth2/token/");
        url.query_pairs_mut()
            .extend_pairs([("client_id", "a@b"), ("refresh_token", "x y+z")]);
        assert_eq!(
            url.as_str(),
            "https://portal.example.com/ns-api/oauth2/token/?client_id=a%40b&refresh_token=x+y%2Bz"
        );
        assert_eq!(
            redact_url(url.as_str()),
            "https://portal.example.com/ns-api/oauth2/token/?[redacted]"
        );
    }
}
