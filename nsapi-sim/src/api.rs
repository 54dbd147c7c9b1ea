//! The simulated NetSapiens endpoints: v1 `oauth2/token` and `oauth2/read`, v2 `tokens`,
//! `jwt` and `version`, and the 404 of unknown routes.
//! Turns HTTP into [`GrantRequest`]s and store answers into the body shapes real servers send.
//! Never logs a secret: only endpoint, grant type, result and status. It reaches state
//! through `server` only, and must not import `admin` or `node`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::fault::{BodyFault, EarlyAnswer};
use crate::model::{ErrorBody, V1Answer};
use crate::server::{Shared, node_of};
use crate::store::{
    GrantError, GrantKind, GrantRequest, Issued, JwtIssued, JwtLogin, Settings, TokenInfo,
    unix_secs,
};
use crate::wire::{HTML, format_expires, html_response, parse_urlencoded, respond, xml_escape};

/// Largest request body read (a token request is a few hundred bytes).
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    V1,
    V2,
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::V1 => "token",
            Api::V2 => "v2",
        }
    }
}

const JSON: Option<&str> = Some("application/json");

fn json_response(status: u16, v: &Value) -> Response {
    respond(status, JSON, v.to_string())
}

/// What a server without v2 answers on `/v2/tokens`: its front end's HTML page for an unknown
/// path, with the configured status. The stats result is `not_found` for 404 and
/// `absent_<status>` otherwise.
fn v2_absent(status: u16) -> (String, Response) {
    let (key, detail) = match status {
        404 => (
            "not_found".to_owned(),
            "The requested URL was not found on this server.",
        ),
        403 => (
            format!("absent_{status}"),
            "You don't have permission to access this resource.",
        ),
        _ => (
            format!("absent_{status}"),
            "The server encountered an error and could not complete your request.",
        ),
    };
    (key, html_response(status, detail))
}

/// A v2 server's own error answer: `{"code":503,"message":"Service Unavailable"}`.
fn status_json(status: u16) -> Response {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    json_response(status, &json!({"code": status, "message": reason}))
}

pub(crate) async fn v1_token(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    token_endpoint(sh, Api::V1, req).await
}

pub(crate) async fn v2_tokens(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    token_endpoint(sh, Api::V2, req).await
}

async fn token_endpoint(sh: Arc<Shared>, api: Api, req: Request) -> Response {
    let node = node_of(&req);
    let endpoint = api.endpoint();
    let method = req.method().clone();
    let (v2_enabled, v2_absent_status) = {
        let mut st = sh.lock();
        st.tally(node, |s| {
            s.token_requests += 1;
            if api == Api::V2 {
                s.v2_requests += 1;
            }
        });
        (st.settings.v2_enabled, st.settings.v2_absent_status)
    };
    if api == Api::V2 && !v2_enabled {
        let (key, res) = v2_absent(v2_absent_status);
        return finish(&sh, node, endpoint, GrantKind::Missing, &key, res);
    }
    let allowed = match api {
        Api::V1 => method == Method::GET || method == Method::POST,
        Api::V2 => method == Method::POST,
    };
    if !allowed {
        let res = respond(405, Some("text/plain"), "Method Not Allowed");
        return finish(
            &sh,
            node,
            endpoint,
            GrantKind::Missing,
            "method_not_allowed",
            res,
        );
    }
    let basic = basic_auth(req.headers());
    let grant_req = match read_params(req).await {
        Ok(pairs) => GrantRequest {
            basic,
            ..GrantRequest::from_pairs(pairs)
        },
        Err(e) => {
            let err = GrantError::InvalidRequest(e);
            let res = error_response(&sh.lock().settings, api, &err);
            return finish(
                &sh,
                node,
                endpoint,
                GrantKind::Missing,
                err.result_key(),
                res,
            );
        }
    };
    let grant = grant_req.grant();
    let plan = {
        let mut st = sh.lock();
        match grant {
            GrantKind::Password => st.tally(node, |s| s.password_grants += 1),
            GrantKind::Refresh => st.tally(node, |s| s.refresh_grants += 1),
            GrantKind::Mfa => st.tally(node, |s| s.mfa_attempts += 1),
            _ => {}
        }
        st.faults
            .plan_token(&method, grant == GrantKind::Refresh, Instant::now(), node)
    };
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if let Some(early) = plan.early {
        let key = early.result_key();
        let res = match early {
            EarlyAnswer::Hang => {
                sh.count(node, endpoint, grant, &key);
                sh.until_shutdown().await;
                return html_response(503, "The server is shutting down.");
            }
            EarlyAnswer::Status(s) if api == Api::V2 => status_json(s),
            EarlyAnswer::Status(s) => html_response(s, "The server encountered a temporary error."),
            EarlyAnswer::Firewall => respond(
                403,
                HTML,
                "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>\
                 <h1>Forbidden</h1><p>Your request was blocked by the web application firewall. \
                 Your IP address has been logged.</p></body></html>\n",
            ),
            EarlyAnswer::TooManyRequests(secs) => {
                let mut res = html_response(429, "Too many requests, slow down.");
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                res
            }
            EarlyAnswer::InvalidScope => json_response(
                401,
                &json!({"code": 401, "message": "Invalid Scope [APP001]"}),
            ),
            EarlyAnswer::MethodNotAllowed => respond(405, Some("text/plain"), "Method Not Allowed"),
        };
        return finish(&sh, node, endpoint, grant, &key, res);
    }

    let (res, key, ok) = {
        let mut st = sh.lock();
        let outcome = st.grant(
            &grant_req,
            plan.reject_refresh,
            Instant::now(),
            SystemTime::now(),
        );
        let expires_in = match &outcome {
            Ok(issued) => st
                .faults
                .take_expires_in(node)
                .unwrap_or_else(|| Value::from(issued.expires_in)),
            Err(_) => Value::Null,
        };
        match outcome {
            Ok(issued) if issued.mfa => (
                mfa_body(&issued, expires_in, &st.settings),
                "mfa_required",
                false,
            ),
            Ok(issued) => (
                token_body(&issued, expires_in, &st.settings, api),
                "ok",
                true,
            ),
            Err(err) => {
                if err.result_key() == "refresh_reused" {
                    st.tally(node, |s| s.refresh_token_reuse += 1);
                }
                if grant == GrantKind::Mfa {
                    st.tally(node, |s| s.mfa_refusals += 1);
                }
                (
                    error_response(&st.settings, api, &err),
                    err.result_key(),
                    false,
                )
            }
        }
    };
    let (res, key, ok) = match plan.body {
        None => (res, key.to_owned(), ok),
        Some(BodyFault::JsonAsHtml) => (relabel_html(res), key.to_owned(), ok),
        Some(BodyFault::Empty) => (empty_body(res), format!("fault_empty_body_{key}"), false),
        Some(BodyFault::Malformed) => (
            malformed(res).await,
            format!("fault_malformed_json_{key}"),
            false,
        ),
        Some(BodyFault::Truncated) => (
            truncated(res).await,
            format!("fault_truncated_body_{key}"),
            false,
        ),
        Some(BodyFault::Huge { bytes, chunked }) => (
            huge(res, bytes, chunked),
            format!("fault_huge_body_{key}"),
            false,
        ),
        Some(BodyFault::NoToken(body)) => (
            json_response(200, &body.json()),
            format!("fault_no_token_{}_{key}", body.name()),
            false,
        ),
    };
    if ok {
        let mut st = sh.lock();
        match grant {
            GrantKind::Password => st.tally(node, |s| s.password_grants_ok += 1),
            GrantKind::Refresh => st.tally(node, |s| s.refresh_grants_ok += 1),
            _ => {}
        }
    }
    finish(&sh, node, endpoint, grant, &key, res)
}

/// Count the request and log it (without any secret).
fn finish(
    sh: &Shared,
    node: usize,
    endpoint: &str,
    grant: GrantKind,
    result: &str,
    res: Response,
) -> Response {
    sh.count(node, endpoint, grant, result);
    tracing::debug!(
        node,
        endpoint,
        grant = grant.label(),
        result,
        status = res.status().as_u16(),
        "request"
    );
    res
}

/// The request's fields, from the query string and the body (the body wins), whatever the
/// encoding: form, multipart or JSON.
async fn read_params(req: Request) -> Result<Vec<(String, String)>, &'static str> {
    let mut pairs = parse_urlencoded(req.uri().query().unwrap_or("").as_bytes());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|_| "malformed multipart body")?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|_| "malformed multipart body")?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let value = field.text().await.map_err(|_| "malformed multipart body")?;
            pairs.push((name, value));
        }
        return Ok(pairs);
    }
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|_| "request body too large or unreadable")?;
    if body.is_empty() {
        return Ok(pairs);
    }
    if content_type.starts_with("application/json") || content_type.contains("+json") {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
            return Err("the body is not a JSON object");
        };
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                Value::Null => continue,
                other => other.to_string(),
            };
            pairs.push((k, v));
        }
    } else {
        pairs.extend(parse_urlencoded(&body));
    }
    Ok(pairs)
}

/// A token answer, fields in the order the guide shows them, then the newer servers' extras.
#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    expires_in: Value,
    scope: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    legacy: Option<bool>,
    domain: &'a str,
    apiversion: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_vendor: Option<&'static str>,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    territory: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    /// A 44.0.x v1 answer's extras; `expires` is the expiry as an epoch string.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<&'static str>,
    /// v2 (44.1.x) and 44.0.x v1 extras.
    #[serde(skip_serializing_if = "Option::is_none")]
    department: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_email: Option<&'static str>,
    #[serde(rename = "displayName", skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
}

fn to_json<T: Serialize>(status: u16, body: &T) -> Response {
    respond(
        status,
        JSON,
        serde_json::to_string(body).unwrap_or_default(),
    )
}

/// A number as the settings want it: a JSON number, or a string (`"3600"`).
fn number(v: Value, settings: &Settings) -> Value {
    match v {
        Value::Number(n) if settings.numbers_as_strings => Value::String(n.to_string()),
        other => other,
    }
}

/// A successful grant's answer; `expires_in` is the lifetime reported (the real one unless a
/// fault says otherwise). v1 keeps `legacy` (and, as a 44.0.x portal, adds `client_id`, an
/// epoch-string `expires`, `rate_limit`, `login`, `user_email`, `displayName`); v2 answers as
/// a 44.1.x server, without `legacy` and with `client_id`, `department`, `login`,
/// `user_email`, `displayName`.
fn token_body(t: &Issued, expires_in: Value, settings: &Settings, api: Api) -> Response {
    let s = &t.subscriber;
    let user = s.username.split('@').next();
    let v44_0 = api == Api::V1 && settings.v1_answer == V1Answer::V44_0;
    let extras = api == Api::V2 || v44_0;
    to_json(
        200,
        &TokenAnswer {
            access_token: &t.access_token,
            expires_in: number(expires_in, settings),
            scope: &s.scope,
            token_type: "Bearer",
            refresh_token: t.refresh_token.as_deref(),
            legacy: (api == Api::V1).then_some(false),
            domain: &s.domain,
            apiversion: &settings.api_version,
            mfa_type: None,
            mfa_vendor: None,
            username: &s.username,
            user,
            territory: Some(&s.territory),
            uid: Some(&s.uid),
            client_id: extras.then_some(t.client_id.as_str()),
            expires: v44_0.then(|| unix_secs(t.expires_wall).to_string()),
            rate_limit: v44_0.then_some("0"),
            department: (api == Api::V2).then_some(""),
            login: extras.then_some(s.username.as_str()),
            user_email: extras.then_some(""),
            display_name: if extras { user } else { None },
        },
    )
}

/// The intermediate answer for an MFA user: no refresh token, scope `mfa_required`.
fn mfa_body(t: &Issued, expires_in: Value, settings: &Settings) -> Response {
    let s = &t.subscriber;
    to_json(
        200,
        &TokenAnswer {
            access_token: &t.access_token,
            expires_in: number(expires_in, settings),
            scope: "mfa_required",
            token_type: "Bearer",
            refresh_token: None,
            legacy: None,
            domain: &s.domain,
            apiversion: &settings.api_version,
            // A user who can pass the second step uses an authenticator app.
            mfa_type: Some(if s.totp_seed.is_some() {
                "authenticator"
            } else {
                "totp"
            }),
            mfa_vendor: Some("google"),
            username: &s.username,
            user: None,
            territory: None,
            uid: None,
            client_id: None,
            expires: None,
            rate_limit: None,
            department: None,
            login: None,
            user_email: None,
            display_name: None,
        },
    )
}

fn error_response(settings: &Settings, api: Api, err: &GrantError) -> Response {
    let status = err.status(settings);
    if api == Api::V2 {
        return json_response(status, &json!({"code": status, "message": err.message()}));
    }
    v1_error(
        settings.error_body,
        status,
        err.oauth_error(),
        err.message(),
    )
}

/// A v1 error in the configured body shape.
pub(crate) fn v1_error(style: ErrorBody, status: u16, error: &str, message: &str) -> Response {
    let oauth = json!({"error": error, "error_description": message});
    match style {
        ErrorBody::OAuth => json_response(status, &oauth),
        ErrorBody::CodeMessage => {
            json_response(status, &json!({"code": status, "message": message}))
        }
        ErrorBody::Text => respond(
            status,
            Some("text/plain; charset=UTF-8"),
            message.to_owned(),
        ),
        ErrorBody::Html => html_response(status, message),
        ErrorBody::Empty => respond(status, None, Body::empty()),
        ErrorBody::JsonAsHtml => respond(status, HTML, oauth.to_string()),
    }
}

fn relabel_html(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    res
}

fn empty_body(res: Response) -> Response {
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::empty())
}

/// Cut the JSON body in half, as a proxy that drops the connection's tail would.
async fn malformed(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// Announce the whole answer's length but send only its first half, then fail the body so that
/// the connection closes mid-body (after a pause, so the half is flushed to the client first).
async fn truncated(res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
        futures::stream::once(async {
            tokio::time::sleep(TRUNCATE_PAUSE).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "truncated_body fault: closing mid-body",
            ))
        }),
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// How long a truncated answer waits between its half body and closing the connection.
const TRUNCATE_PAUSE: Duration = Duration::from_millis(50);

/// The chunk size a huge body is streamed in.
const HUGE_CHUNK: usize = 64 * 1024;

/// What a huge body is made of after its JSON start.
static FILLER: [u8; HUGE_CHUNK] = [b'0'; HUGE_CHUNK];

/// A body of exactly `bytes` bytes that starts like a token answer and goes on with filler,
/// streamed in chunks of [`HUGE_CHUNK`] (nothing but one static chunk is held in memory).
fn huge(res: Response, bytes: u64, chunked: bool) -> Response {
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if !chunked {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
    }
    const START: &[u8] = b"{\"access_token\":\"";
    let start_len = START
        .len()
        .min(usize::try_from(bytes).unwrap_or(usize::MAX));
    let start = Bytes::from_static(&START[..start_len]);
    let filler = Bytes::from_static(&FILLER);
    let remaining = bytes - start_len as u64;
    let rest = futures::stream::unfold(remaining, move |left| {
        let filler = filler.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(HUGE_CHUNK);
            Some((Ok::<_, std::io::Error>(filler.slice(..n)), left - n as u64))
        }
    });
    let stream = futures::stream::once(async move { Ok(start) }).chain(rest);
    Response::from_parts(parts, Body::from_stream(stream))
}

pub(crate) async fn read(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    let (injected, style) = {
        let mut st = sh.lock();
        st.tally(node, |s| s.read_requests += 1);
        (st.faults.plan_read(node), st.settings.error_body)
    };
    if let Some(status) = injected {
        let res = html_response(status, "The server encountered a temporary error.");
        return finish(
            &sh,
            node,
            "read",
            GrantKind::Missing,
            &format!("fault_{status}"),
            res,
        );
    }
    let as_json = parse_urlencoded(req.uri().query().unwrap_or("").as_bytes())
        .iter()
        .any(|(k, v)| k == "format" && v.eq_ignore_ascii_case("json"));
    let Some(token) = bearer(req.headers()) else {
        let res = v1_error(
            style,
            401,
            "invalid_request",
            "No access token was provided",
        );
        return finish(&sh, node, "read", GrantKind::Missing, "missing_token", res);
    };
    let answer = {
        let st = sh.lock();
        st.read(&token, Instant::now())
            .map(|info| (info, st.settings.api_version.clone()))
    };
    let res = match answer {
        Err(why) => {
            let res = v1_error(
                style,
                401,
                "invalid_token",
                "The access token provided is invalid",
            );
            return finish(&sh, node, "read", GrantKind::Missing, why, res);
        }
        Ok((info, version)) if as_json => respond(200, JSON, read_json(&info, &version)),
        Ok((info, version)) => respond(
            200,
            Some("text/xml; charset=UTF-8"),
            read_xml(&info, &version),
        ),
    };
    finish(&sh, node, "read", GrantKind::Missing, "ok", res)
}

/// The client id and secret of an `Authorization: Basic` header (`None` if absent or not
/// `base64(id:secret)`).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = data_encoding::BASE64
        .decode(encoded.trim().as_bytes())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn read_fields(info: &TokenInfo, version: &str) -> [(&'static str, String); 8] {
    let s = &info.subscriber;
    [
        ("token", info.token.clone()),
        ("client_id", info.client_id.clone()),
        ("territory", s.territory.clone()),
        ("domain", s.domain.clone()),
        ("uid", s.uid.clone()),
        ("expires", format_expires(info.expires_wall)),
        ("scope", s.scope.clone()),
        ("apiversion", version.to_owned()),
    ]
}

/// The JSON read answer, fields in the guide's order.
fn read_json(info: &TokenInfo, version: &str) -> String {
    let fields = read_fields(info, version);
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{}:{}", Value::from(*k), Value::from(v.as_str())));
    }
    out.push('}');
    out
}

fn read_xml(info: &TokenInfo, version: &str) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Oauth>");
    for (k, v) in read_fields(info, version) {
        xml.push_str(&format!("<{k}>{}</{k}>", xml_escape(&v)));
    }
    xml.push_str("</Oauth>\n");
    xml
}

/// An unknown route: under the API base of a server with v2, v2's own JSON
/// `{"code":404,"message":"No Route Found [92]"}`; elsewhere, and without v2, the web
/// server's HTML page.
pub(crate) async fn not_found(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    let path = req.uri().path();
    let base = sh.base_path();
    let under_base = path
        .strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let v2 = sh.lock().settings.v2_enabled;
    if under_base && v2 && !path.starts_with("/_sim/") {
        let res = json_response(404, &json!({"code": 404, "message": "No Route Found [92]"}));
        return finish(&sh, node, "route", GrantKind::Missing, "no_route", res);
    }
    html_response(404, "The requested URL was not found on this server.").into_response()
}

/// `GET v2/version`: `{"apiversion": "..."}` on a server with v2, the v2-absent page without.
pub(crate) async fn v2_version(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    let (v2, absent, version) = {
        let st = sh.lock();
        (
            st.settings.v2_enabled,
            st.settings.v2_absent_status,
            st.settings.api_version.clone(),
        )
    };
    if !v2 {
        let (key, res) = v2_absent(absent);
        return finish(&sh, node, "version", GrantKind::Missing, &key, res);
    }
    let res = json_response(200, &json!({"apiversion": version}));
    finish(&sh, node, "version", GrantKind::Missing, "ok", res)
}

fn v2_error(status: u16, message: &str) -> Response {
    json_response(status, &json!({"code": status, "message": message}))
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether a request that presents a JWT of this session may go on: always, unless the
/// simulator sets a session cookie and requires it back.
fn cookie_ok(settings: &Settings, headers: &HeaderMap, session: Option<&str>) -> bool {
    if !settings.jwt_cookie_required || settings.jwt_cookie.is_empty() {
        return true;
    }
    let sent = cookie_value(headers, &settings.jwt_cookie);
    sent.is_some() && sent.as_deref() == session
}

/// `{"token": JWT[, "refresh_token": refresh JWT]}`, with the session cookie if one is set.
fn jwt_answer(issued: &JwtIssued, settings: &Settings) -> Response {
    let mut body = json!({"token": issued.token});
    if let Some(refresh) = &issued.refresh {
        body["refresh_token"] = json!(refresh);
    }
    let mut res = json_response(200, &body);
    if let Some(session) = issued.session.as_deref()
        && !settings.jwt_cookie.is_empty()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}={session}; Path=/; HttpOnly",
            settings.jwt_cookie
        ))
    {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The v2-absent answer when v2 is off, counted under `jwt`.
fn jwt_v2_off(sh: &Shared, node: usize) -> Option<Response> {
    let (v2, absent) = {
        let st = sh.lock();
        (st.settings.v2_enabled, st.settings.v2_absent_status)
    };
    (!v2).then(|| {
        let (key, res) = v2_absent(absent);
        finish(sh, node, "jwt", GrantKind::Missing, &key, res)
    })
}

/// `POST v2/jwt`: a password login (or its MFA second step) answers `{"token"}`; with a
/// refresh JWT (`grant_type=refresh_token`), a new JWT and refresh JWT.
pub(crate) async fn jwt_post(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    if let Some(res) = jwt_v2_off(&sh, node) {
        return res;
    }
    let headers = req.headers().clone();
    let basic = basic_auth(&headers);
    let grant_req = match read_params(req).await {
        Ok(pairs) => GrantRequest {
            basic,
            ..GrantRequest::from_pairs(pairs)
        },
        Err(e) => {
            let res = v2_error(400, e);
            return finish(&sh, node, "jwt", GrantKind::Missing, "invalid_request", res);
        }
    };
    let grant = grant_req.grant();
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut st = sh.lock();
    if grant == GrantKind::Mfa {
        st.tally(node, |s| s.mfa_attempts += 1);
    }
    let (res, key): (Response, String) = if grant == GrantKind::Refresh {
        let Some(token) = grant_req.refresh_token.as_deref() else {
            drop(st);
            let res = v2_error(400, "refresh_token is required");
            return finish(&sh, node, "jwt", grant, "invalid_request", res);
        };
        let session = st.jwt_session(token);
        if session.is_some() && !cookie_ok(&st.settings, &headers, session.flatten().as_deref()) {
            drop(st);
            let res = v2_error(401, "Session cookie required");
            return finish(&sh, node, "jwt", grant, "cookie_missing", res);
        }
        match st.jwt_refresh(token, now, wall) {
            Ok(issued) => {
                st.tally(node, |s| {
                    s.jwt_issued += 1;
                    s.jwt_refreshed += 1;
                });
                (jwt_answer(&issued, &st.settings), "ok".into())
            }
            Err(err) => (
                v2_error(err.status(&st.settings), err.message()),
                err.result_key().into(),
            ),
        }
    } else {
        match st.jwt_login(&grant_req, now, wall) {
            Ok(JwtLogin::Jwt(issued)) => {
                st.tally(node, |s| s.jwt_issued += 1);
                (jwt_answer(&issued, &st.settings), "ok".into())
            }
            Ok(JwtLogin::Mfa(intermediate)) => {
                let expires_in = Value::from(intermediate.expires_in);
                (
                    mfa_body(&intermediate, expires_in, &st.settings),
                    "mfa_required".into(),
                )
            }
            Err(err) => {
                if grant == GrantKind::Mfa {
                    st.tally(node, |s| s.mfa_refusals += 1);
                }
                (
                    v2_error(err.status(&st.settings), err.message()),
                    err.result_key().into(),
                )
            }
        }
    };
    drop(st);
    finish(&sh, node, "jwt", grant, &key, res)
}

/// Why a request's JWT was refused (always 401): the message and the stats key.
struct Refused(&'static str, &'static str);

impl Refused {
    fn answer(self) -> (Response, &'static str) {
        (v2_error(401, self.0), self.1)
    }
}

/// The claims of the request's valid access JWT (Bearer, and its cookie if required).
fn current_jwt(sh: &Shared, headers: &HeaderMap) -> Result<Value, Refused> {
    let Some(token) = bearer(headers) else {
        return Err(Refused("No token was provided", "missing_token"));
    };
    let st = sh.lock();
    let info = st
        .check_jwt(&token, Instant::now())
        .map_err(|why| Refused("Invalid or expired token", why))?;
    if !cookie_ok(&st.settings, headers, info.session.as_deref()) {
        return Err(Refused("Session cookie required", "cookie_missing"));
    }
    Ok(info.claims)
}

/// `GET v2/jwt`: the claims of the Bearer JWT.
pub(crate) async fn jwt_get(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    if let Some(res) = jwt_v2_off(&sh, node) {
        return res;
    }
    let (res, key) = match current_jwt(&sh, req.headers()) {
        Ok(claims) => (json_response(200, &claims), "ok"),
        Err(refused) => refused.answer(),
    };
    finish(&sh, node, "jwt_read", GrantKind::Missing, key, res)
}

/// `DELETE v2/jwt`: revoke the Bearer JWT (202).
pub(crate) async fn jwt_delete(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let node = node_of(&req);
    if let Some(res) = jwt_v2_off(&sh, node) {
        return res;
    }
    let (res, key) = match current_jwt(&sh, req.headers()) {
        Ok(claims) => {
            let mut st = sh.lock();
            if st.revoke_jwt(claims["jti"].as_str().unwrap_or_default()) {
                st.tally(node, |s| s.jwt_revoked += 1);
            }
            (v2_error(202, "Accepted"), "revoked")
        }
        Err(refused) => refused.answer(),
    };
    finish(&sh, node, "jwt_revoke", GrantKind::Missing, key, res)
}

/// `DELETE v2/jwt/{jti}`: revoke that JWT (202; 404 if unknown), for the holder of a valid one.
pub(crate) async fn jwt_delete_one(
    State(sh): State<Arc<Shared>>,
    Path(jti): Path<String>,
    req: Request,
) -> Response {
    let node = node_of(&req);
    if let Some(res) = jwt_v2_off(&sh, node) {
        return res;
    }
    let (res, key) = match current_jwt(&sh, req.headers()) {
        Ok(_) => {
            let mut st = sh.lock();
            if st.revoke_jwt(&jti) {
                st.tally(node, |s| s.jwt_revoked += 1);
                (v2_error(202, "Accepted"), "revoked")
            } else {
                (v2_error(404, "JWT not found"), "not_found")
            }
        }
        Err(refused) => refused.answer(),
    };
    finish(&sh, node, "jwt_revoke", GrantKind::Missing, key, res)
}
