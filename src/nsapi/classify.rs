//! Pure classification of API answers: status first, the body read leniently for the message
//! only, `Retry-After` honoured. Status, headers and body in; a typed [`NsApiError`] out. Every
//! piece of server text passes through [`scrub`] before it reaches a message: a server may echo
//! the request, and the request holds secrets.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use serde_json::Value;

use super::answer::GrantBodyError;
use super::redact::{redact_url, scrub};
use crate::core::api_error::{FIREWALL_BACKOFF, MAX_RETRY_AFTER, NsApiError};
use crate::core::token::TokenApi;

/// Which call is being classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    PasswordGrant,
    RefreshGrant,
    /// The second step of an MFA user's login.
    MfaGrant,
    ReadToken,
}

impl Operation {
    fn describe(self, api: TokenApi) -> String {
        match self {
            Operation::PasswordGrant => format!("{} password grant", api.as_str()),
            Operation::RefreshGrant => format!("{} refresh grant", api.as_str()),
            Operation::MfaGrant => format!("{} mfa grant (the passcode step)", api.as_str()),
            Operation::ReadToken => "token check".to_owned(),
        }
    }
}

/// The context of one request: what it was, where it went, and which secret values it sent
/// (to scrub from anything the server says back).
pub(crate) struct Exchange<'a> {
    pub op: Operation,
    /// `V1` or `V2`: the endpoint actually called.
    pub api: TokenApi,
    /// The full request URL; it is only ever shown through [`redact_url`].
    pub url: &'a str,
    pub secrets: &'a [&'a str],
    /// For turning an HTTP-date `Retry-After` into a delay.
    pub now: Timestamp,
}

impl Exchange<'_> {
    fn endpoint(&self) -> String {
        redact_url(self.url)
    }

    fn what(&self) -> String {
        self.op.describe(self.api)
    }

    /// `HTTP 401 from https://h/ns-api/oauth2/token/, server said: "..."`
    fn answer(&self, status: u16, server: Option<&str>) -> String {
        let mut out = format!("HTTP {status} from {}", self.endpoint());
        if let Some(text) = server {
            out.push_str(&format!(", server said: \"{text}\""));
        }
        out
    }
}

/// The shape of an error body, reduced to what classification and messages need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// An HTML page (and not JSON labelled `text/html`).
    pub html: bool,
    /// RFC 6749 `error` (e.g. `invalid_grant`), lower-cased, when it is a plain code.
    pub oauth_error: Option<String>,
    /// v2 `code`, when numeric.
    pub code: Option<i64>,
    /// Human text, already scrubbed of secrets and truncated.
    pub text: Option<String>,
}

impl ErrorBody {
    /// Reads any body shape leniently: empty, plain text, HTML, JSON (whatever its
    /// content type), RFC 6749 `{"error","error_description"}`, v2 `{"code","message"}`.
    pub(crate) fn parse(content_type: Option<&str>, body: &[u8], secrets: &[&str]) -> ErrorBody {
        let raw = String::from_utf8_lossy(body);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return ErrorBody::default();
        }
        if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
            return ErrorBody::from_json(&value, secrets);
        }
        let looks_html = content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("html"))
            || trimmed.starts_with('<');
        if looks_html {
            ErrorBody {
                html: true,
                text: scrub(&html_to_text(trimmed), secrets),
                ..ErrorBody::default()
            }
        } else {
            ErrorBody {
                text: scrub(trimmed, secrets),
                ..ErrorBody::default()
            }
        }
    }

    fn from_json(value: &Value, secrets: &[&str]) -> ErrorBody {
        let object = match value {
            Value::Object(object) => object,
            Value::Array(items) => match items.first() {
                Some(Value::Object(object)) => object,
                _ => return ErrorBody::default(),
            },
            Value::String(text) => {
                return ErrorBody {
                    text: scrub(text, secrets),
                    ..ErrorBody::default()
                };
            }
            _ => return ErrorBody::default(),
        };
        let text_of = |v: Option<&Value>| match v {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        };
        // `{"error":{"code":..,"message":..}}` is seen too: look one level down.
        let inner = object.get("error").and_then(Value::as_object);
        let field = |name: &str| object.get(name).or_else(|| inner.and_then(|i| i.get(name)));

        let oauth_error = text_of(object.get("error"))
            .filter(|e| e.len() <= 64 && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(|e| e.to_ascii_lowercase());
        let code = match field("code") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let description = [
            "error_description",
            "message",
            "error_message",
            "detail",
            "msg",
        ]
        .iter()
        .find_map(|name| text_of(field(name)))
        // A free-text `error` with no code-like shape is the message itself.
        .or_else(|| text_of(object.get("error")).filter(|_| oauth_error.is_none()));
        let text = match (&oauth_error, description) {
            (Some(error), Some(description)) => Some(format!("{error}: {description}")),
            (Some(error), None) => Some(error.clone()),
            (None, description) => description,
        };
        ErrorBody {
            html: false,
            oauth_error,
            code,
            text: text.and_then(|t| scrub(&t, secrets)),
        }
    }

    fn has_oauth_error(&self, codes: &[&str]) -> bool {
        self.oauth_error
            .as_deref()
            .is_some_and(|e| codes.contains(&e))
    }

    /// v2's permission error: `401 Invalid Scope [APP001]`.
    fn is_invalid_scope(&self) -> bool {
        self.has_oauth_error(&["invalid_scope"])
            || self.text.as_deref().is_some_and(|t| {
                let t = t.to_ascii_lowercase();
                t.contains("invalid scope") || t.contains("app001")
            })
    }
}

/// Whether a v2 answer means "there is no v2 here" (so `Auto` falls back to v1): 404, 405 or
/// 501 whatever the body; any redirect (old portals send unknown paths to the login page); and
/// a 2xx, 403 or 5xx whose body is not JSON (an HTML page that a server or its front end serves
/// for a path it does not know). A v2 that exists answers in JSON (`{"code","message"}`), so a
/// JSON refusal, a 429 or a network error is its answer: no fallback.
pub(crate) fn v2_absent(status: u16, body_is_json: bool) -> bool {
    matches!(status, 404 | 405 | 501 | 300..=399)
        || (!body_is_json && matches!(status, 200..=299 | 403 | 500..=599))
}

/// Classifies a non-2xx answer. Status first; the body only refines the message (and tells
/// a firewall's HTML 403 from an API refusal, and `invalid_grant` from `invalid_request`).
pub(crate) fn classify_status(
    ex: &Exchange<'_>,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> NsApiError {
    let content_type = header_str(headers, CONTENT_TYPE.as_str());
    let parsed = ErrorBody::parse(content_type, body, ex.secrets);
    let retry_after =
        header_str(headers, RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, ex.now));
    let answer = ex.answer(status, parsed.text.as_deref());
    classify_refusal(ex, status, headers, &parsed, retry_after, &answer)
}

/// The classification proper, shared by a non-2xx answer and a 2xx whose body carries an
/// in-band error (then `status` is the status that error stands for).
fn classify_refusal(
    ex: &Exchange<'_>,
    status: u16,
    headers: &HeaderMap,
    parsed: &ErrorBody,
    retry_after: Option<Duration>,
    answer: &str,
) -> NsApiError {
    let answer = answer.to_owned();
    let what = ex.what();

    match status {
        429 => NsApiError::Transient {
            message: format!(
                "the NetSapiens API is rate-limiting the {what} ({answer}){}: retry later",
                retry_hint(retry_after)
            ),
            status: Some(status),
            retry_after,
            label: "rate_limited",
        },
        408 | 500..=599 => NsApiError::Transient {
            message: format!(
                "the NetSapiens API failed the {what} ({answer}){}: the server is unavailable or overloaded; retry later",
                retry_hint(retry_after)
            ),
            status: Some(status),
            retry_after,
            label: if status == 408 {
                "timeout"
            } else {
                "server_error"
            },
        },
        403 if parsed.html => {
            let retry_after = Some(retry_after.unwrap_or(FIREWALL_BACKOFF));
            NsApiError::Transient {
                message: format!(
                    "the {what} was blocked by an HTML 403 page ({answer}), most likely a web application firewall banning this client's IP after too many requests{}: do not retry soon; if it persists, ask the service provider to allow the operator's egress IP",
                    retry_hint(retry_after)
                ),
                status: Some(status),
                retry_after,
                label: "firewall",
            }
        }
        300..=399 => {
            let target = header_str(headers, LOCATION.as_str())
                .map(|location| format!(" to {}", redact_url(location)))
                .unwrap_or_default();
            NsApiError::Permanent {
                message: format!(
                    "the {what} was answered with a redirect{target} ({}): redirects are not followed, so credentials are never sent elsewhere; set apiBaseUrl to the API's final address",
                    ex.answer(status, None)
                ),
                status: Some(status),
                label: "redirect",
            }
        }
        100..=299 => NsApiError::Transient {
            message: format!("the {what} got an unexpected answer ({answer}): retry later"),
            status: Some(status),
            retry_after,
            label: "unexpected_status",
        },
        _ => match ex.op {
            Operation::PasswordGrant => classify_password_refusal(ex, status, parsed, &answer),
            Operation::MfaGrant => classify_mfa_refusal(ex, status, parsed, &answer),
            Operation::RefreshGrant => classify_refresh_refusal(ex, status, &answer),
            Operation::ReadToken => classify_read_refusal(ex, status, parsed, &answer),
        },
    }
}

fn classify_password_refusal(
    ex: &Exchange<'_>,
    status: u16,
    body: &ErrorBody,
    answer: &str,
) -> NsApiError {
    let what = ex.what();
    let refused = |label: &'static str, message: String| NsApiError::Authentication {
        message,
        status: Some(status),
        label,
    };
    let credentials_refused = || {
        refused(
            "authentication",
            format!(
                "the NetSapiens API refused the credentials for the {what} ({answer}): check the subscriber's username and password and the OAuth client's client_id and client_secret; repeated failures can lock the subscriber's account"
            ),
        )
    };
    match status {
        400 | 401 | 403 if body.is_invalid_scope() => refused(
            "permission_denied",
            format!(
                "the subscriber is not allowed to get an API token ({answer}): the user lacks permission (Invalid Scope) for this OAuth client; use a subscriber with the needed scope, or ask the service provider to enable API access for it"
            ),
        ),
        400 if body.has_oauth_error(&[
            "invalid_request",
            "unsupported_grant_type",
            "unsupported_response_type",
        ]) =>
        {
            NsApiError::Permanent {
                message: format!(
                    "the NetSapiens API does not accept this {what} ({answer}): the server does not support it as sent; try another tokenApi, or ask the service provider"
                ),
                status: Some(status),
                label: "unsupported",
            }
        }
        // NSAPI.md: a bad client answers 400, 401 or 403; 423 is an account lock.
        400 | 401 | 403 | 423 => credentials_refused(),
        404 => NsApiError::Permanent {
            message: not_found_message(ex, answer),
            status: Some(status),
            label: "not_found",
        },
        405 => NsApiError::Permanent {
            message: format!(
                "the endpoint does not accept the {what} ({answer}): check that apiBaseUrl points at the NetSapiens API, https://<portal-host>/ns-api/"
            ),
            status: Some(status),
            label: "method_not_allowed",
        },
        _ => NsApiError::Permanent {
            message: format!(
                "the NetSapiens API rejected the {what} ({answer}): check apiBaseUrl and tokenApi"
            ),
            status: Some(status),
            label: "client_error",
        },
    }
}

/// A refused passcode is a refused login: the same lockout-safe backoff as a wrong password,
/// with what to check for a passcode.
fn classify_mfa_refusal(
    ex: &Exchange<'_>,
    status: u16,
    body: &ErrorBody,
    answer: &str,
) -> NsApiError {
    match status {
        400 | 401 | 403 | 423 if !body.is_invalid_scope() => NsApiError::Authentication {
            message: format!(
                "the NetSapiens API refused the {} ({answer}): check that spec.mfa.totpSecretRef holds this subscriber's authenticator seed, that the subscriber's password is right, and that the operator's clock is correct (passcodes change every 30 s); repeated failures can lock the subscriber's account",
                ex.what()
            ),
            status: Some(status),
            label: "mfa_refused",
        },
        _ => classify_password_refusal(ex, status, body, answer),
    }
}

fn classify_refresh_refusal(ex: &Exchange<'_>, status: u16, answer: &str) -> NsApiError {
    let hint = match (status, ex.api) {
        (405, TokenApi::V1) => "; the server may accept only the other refreshMethod (GET or POST)",
        _ => "",
    };
    NsApiError::RefreshRejected {
        message: format!(
            "the refresh token was refused by the {} ({answer}){hint}: a new password grant is needed",
            ex.what()
        ),
        status: Some(status),
    }
}

fn classify_read_refusal(
    ex: &Exchange<'_>,
    status: u16,
    body: &ErrorBody,
    answer: &str,
) -> NsApiError {
    match status {
        // v2's permission error says nothing about the token: not a revocation.
        401 | 403 if body.is_invalid_scope() => NsApiError::Permanent {
            message: format!(
                "the token check was refused for lack of permission by the {} ({answer}): the subscriber may not read its own token (Invalid Scope); the token stays. Turn spec.verifyInterval off, or give the user the scope",
                ex.what()
            ),
            status: Some(status),
            label: "permission_denied",
        },
        401 | 403 => NsApiError::Authentication {
            message: format!(
                "the access token was refused by the {} ({answer}): it was revoked or has expired; get a new token",
                ex.what()
            ),
            status: Some(status),
            label: "token_refused",
        },
        404 => NsApiError::Permanent {
            message: format!(
                "the token check endpoint was not found ({answer}): check that apiBaseUrl points at the NetSapiens API, https://<portal-host>/ns-api/"
            ),
            status: Some(status),
            label: "not_found",
        },
        _ => NsApiError::Permanent {
            message: format!("the NetSapiens API rejected the {} ({answer})", ex.what()),
            status: Some(status),
            label: "client_error",
        },
    }
}

fn not_found_message(ex: &Exchange<'_>, answer: &str) -> String {
    match ex.api {
        TokenApi::V2 => format!(
            "the API v2 token endpoint was not found ({answer}): this server has no API v2; set tokenApi to v1 or auto"
        ),
        _ => format!(
            "the token endpoint was not found ({answer}): check that apiBaseUrl points at the NetSapiens API, https://<portal-host>/ns-api/"
        ),
    }
}

/// The HTTP status an in-band error stands for: its `code` when that is a 4xx or 5xx, else
/// what RFC 6749 (5.2) answers with its `error` (401 for `invalid_client`, 400 otherwise; the
/// password classification treats 400, 401 and 403 alike). `None`: no usable clue.
fn in_band_status(body: &ErrorBody) -> Option<u16> {
    if let Some(code) = body.code {
        return u16::try_from(code).ok().filter(|c| (400..=599).contains(c));
    }
    match body.oauth_error.as_deref()? {
        "invalid_client" | "unauthorized_client" => Some(401),
        "access_denied" => Some(403),
        "temporarily_unavailable" => Some(503),
        "server_error" => Some(500),
        _ => Some(400),
    }
}

/// A 2xx body that is not a usable token. `body` is read only for an in-band error (a body
/// without a token), and only through [`ErrorBody`], which scrubs what the request sent.
pub(crate) fn classify_grant_body(
    ex: &Exchange<'_>,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    problem: &GrantBodyError,
) -> NsApiError {
    match problem {
        // "A 200 without a token" with an error in it: classified like the refusal it stands
        // for, so a refused password gets the lockout-safe backoff of a 401, never a retry
        // loop, and a refused refresh token falls back to the password grant.
        GrantBodyError::InBandError => {
            let content_type = header_str(headers, CONTENT_TYPE.as_str());
            let parsed = ErrorBody::parse(content_type, body, ex.secrets);
            let Some(meant) = in_band_status(&parsed) else {
                return malformed(ex, status, &problem.describe());
            };
            let mut answer = format!(
                "HTTP {status} without a token from {}, in-band error {meant}",
                ex.endpoint()
            );
            if let Some(text) = parsed.text.as_deref() {
                answer.push_str(&format!(", server said: \"{text}\""));
            }
            // 200 is what came over the wire; the kind and reason follow the in-band code.
            let mut err = classify_refusal(ex, meant, headers, &parsed, None, &answer);
            set_status(&mut err, status);
            err
        }
        GrantBodyError::MfaRequired {
            mfa_type,
            mfa_vendor,
            ..
        } => {
            let detail = match (mfa_type, mfa_vendor) {
                (Some(t), Some(v)) => format!(", MFA type {t} from {v}"),
                (Some(t), None) => format!(", MFA type {t}"),
                (None, Some(v)) => format!(", MFA from {v}"),
                (None, None) => String::new(),
            };
            NsApiError::MfaRequired {
                message: format!(
                    "the subscriber has multi-factor authentication enabled (the {} at {} answered scope mfa_required{detail}): use a dedicated API subscriber without MFA, or give the operator the authenticator's seed in spec.mfa.totpSecretRef",
                    ex.what(),
                    ex.endpoint()
                ),
            }
        }
        other => malformed(ex, status, &other.describe()),
    }
}

fn set_status(err: &mut NsApiError, wire: u16) {
    match err {
        NsApiError::Transient { status, .. }
        | NsApiError::Permanent { status, .. }
        | NsApiError::Authentication { status, .. }
        | NsApiError::RefreshRejected { status, .. } => *status = Some(wire),
        _ => {}
    }
}

/// A 2xx body that cannot be used. Described by field names only: the body may hold tokens.
pub(crate) fn malformed(ex: &Exchange<'_>, status: u16, why: &str) -> NsApiError {
    NsApiError::Transient {
        message: format!(
            "the {} got an unusable answer (HTTP {status} from {}: {why}): retry later; if it persists, check that apiBaseUrl points at the NetSapiens API{}",
            ex.what(),
            ex.endpoint(),
            if ex.api == TokenApi::V2 {
                " and that it has API v2 (or set tokenApi to v1)"
            } else {
                ""
            }
        ),
        status: Some(status),
        retry_after: None,
        label: "malformed_response",
    }
}

/// A request that got no answer: the rendered error chain (URL removed by the caller),
/// whether it was a timeout, a connection failure, or a request that could not be built.
pub(crate) fn classify_transport(
    ex: &Exchange<'_>,
    failure: TransportFailure,
    timeout: Duration,
    detail: &str,
) -> NsApiError {
    let detail = scrub(detail, ex.secrets).unwrap_or_else(|| "details withheld".to_owned());
    let (what, endpoint) = (ex.what(), ex.endpoint());
    match failure {
        TransportFailure::Timeout => NsApiError::Transient {
            message: format!(
                "the NetSapiens API at {endpoint} did not answer the {what} within {}s: retry later",
                timeout.as_secs_f64()
            ),
            status: None,
            retry_after: None,
            label: "timeout",
        },
        TransportFailure::Connect { timeout: timed_out } => NsApiError::Transient {
            message: if timed_out {
                format!(
                    "could not connect to the NetSapiens API at {endpoint} within {}s for the {what}; nothing was sent: check the host name and network access; retry later",
                    timeout.as_secs_f64()
                )
            } else {
                format!(
                    "could not connect to the NetSapiens API at {endpoint} for the {what} ({detail}); nothing was sent: check the host name and network access; retry later"
                )
            },
            status: None,
            retry_after: None,
            label: if timed_out {
                "connect_timeout"
            } else {
                "connect_failed"
            },
        },
        TransportFailure::Network => NsApiError::Transient {
            message: format!(
                "could not reach the NetSapiens API at {endpoint} for the {what} ({detail}): check the host name and network access; retry later"
            ),
            status: None,
            retry_after: None,
            label: "network",
        },
        TransportFailure::UntrustedCertificate(certificate) => NsApiError::TlsUntrusted {
            message: format!(
                "the NetSapiens API at {endpoint} presented a certificate that is not trusted ({certificate}): add the CA that issued it to spec.caBundle, or to the operator's --ca-file"
            ),
        },
        TransportFailure::InvalidRequest => NsApiError::Permanent {
            message: format!(
                "the {what} to {endpoint} could not be built ({detail}): a credential value probably contains characters not allowed in HTTP (such as a newline); fix the Secret"
            ),
            status: None,
            label: "invalid_request",
        },
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TransportFailure {
    /// No connection (refused, unreachable, no answer to connecting, TLS or proxy set-up
    /// failed): the request was never sent.
    Connect {
        timeout: bool,
    },
    /// Connected and sent, but no whole answer within the timeout: the server may have acted.
    Timeout,
    Network,
    InvalidRequest,
    /// The server's certificate was refused; the description names it.
    UntrustedCertificate(String),
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Retry-After` as delay-seconds or an HTTP date (IMF-fixdate), relative to `now`; a date in
/// the past means "now". Clamped to [`MAX_RETRY_AFTER`]. Unparseable values are ignored.
pub(crate) fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too long for u64 is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        static PARSER: jiff::fmt::rfc2822::DateTimeParser =
            jiff::fmt::rfc2822::DateTimeParser::new();
        let at = PARSER.parse_timestamp(value).ok()?;
        let seconds = at.duration_since(now).as_secs();
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Text of an HTML page: scripts, styles and comments dropped, tags removed, common entities
/// decoded. The `<head>` (whose title usually repeats the heading) is used only when the rest
/// of the page has no text.
fn html_to_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<head"), lower.find("</head>"))
        && start < end
    {
        let without_head = format!("{}{}", &html[..start], &html[end + "</head>".len()..]);
        let text = markup_to_text(&without_head);
        if !text.trim().is_empty() {
            return text;
        }
    }
    markup_to_text(html)
}

fn markup_to_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |end| end + 3);
        } else if let Some(skip) = ["script", "style"]
            .iter()
            .find(|tag| rest.starts_with(&format!("<{tag}")))
            .map(|tag| {
                let close = format!("</{tag}");
                rest.find(&close).map_or(rest.len(), |end| {
                    end + rest[end..].find('>').map_or(rest.len() - end, |g| g + 1)
                })
            })
        {
            i += skip;
            text.push(' ');
        } else if rest.starts_with('<') {
            i += rest.find('>').map_or(rest.len(), |end| end + 1);
            text.push(' ');
        } else {
            let next = rest.find('<').unwrap_or(rest.len());
            text.push_str(&html[i..i + next]);
            i += next;
        }
    }
    decode_entities(&text)
}

fn decode_entities(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::api_error::ErrorKind;
    use crate::nsapi::redact::MAX_SERVER_TEXT;
    use reqwest::header::HeaderValue;

    use crate::nsapi::redact::tests::{CLIENT_SECRET, PASSWORD, REFRESH, SECRETS};

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn exchange(op: Operation, api: TokenApi) -> Exchange<'static> {
        let url = match (op, api) {
            (Operation::ReadToken, _) => {
                "https://portal.example.com/ns-api/oauth2/read?format=json"
            }
            (_, TokenApi::V2) => "https://portal.example.com/ns-api/v2/tokens",
            (Operation::RefreshGrant, _) => {
                "https://portal.example.com/ns-api/oauth2/token/?grant_type=refresh_token&client_secret=cl1ent-S3cret"
            }
            _ => "https://portal.example.com/ns-api/oauth2/token/",
        };
        Exchange {
            op,
            api,
            url,
            secrets: SECRETS,
            now: now(),
        }
    }

    fn headers(content_type: Option<&str>, retry_after: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(ct) = content_type {
            map.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        if let Some(ra) = retry_after {
            map.insert(RETRY_AFTER, HeaderValue::from_str(ra).unwrap());
        }
        map
    }

    const WAF_PAGE: &str = "<!DOCTYPE html><html><head><title>403 Forbidden</title><style>body{x:y}</style></head>\
        <body><h1>Access denied</h1><p>Your IP has been blocked.</p><script>var k='x';</script></body></html>";

    #[test]
    fn classification_table() {
        use ErrorKind::*;
        use Operation::*;
        use TokenApi::{V1, V2};
        const JSON: Option<&str> = Some("application/json");
        const HTML: Option<&str> = Some("text/html; charset=utf-8");
        const TEXT: Option<&str> = Some("text/plain");
        // (operation, api, status, content type, Retry-After, body, kind, metric label, message mentions)
        type Case = (
            Operation,
            TokenApi,
            u16,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            ErrorKind,
            &'static str,
            &'static str,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Password grant: credentials refused, in every body shape.
            (PasswordGrant, V1, 401, None, None, "", Authentication, "authentication", "HTTP 401"),
            (PasswordGrant, V1, 401, TEXT, None, "Unauthorized", Authentication, "authentication", "Unauthorized"),
            (PasswordGrant, V1, 401, HTML, None, "<html><body><h1>401 Unauthorized</h1></body></html>", Authentication, "authentication", "401 Unauthorized"),
            (PasswordGrant, V1, 400, JSON, None, r#"{"error":"invalid_grant","error_description":"Invalid username/password"}"#, Authentication, "authentication", "invalid_grant: Invalid username/password"),
            (PasswordGrant, V1, 400, HTML, None, r#"{"error":"invalid_client"}"#, Authentication, "authentication", "invalid_client"),
            (PasswordGrant, V1, 400, None, None, "", Authentication, "authentication", "client_secret"),
            (PasswordGrant, V1, 403, JSON, None, r#"{"error":"access_denied"}"#, Authentication, "authentication", "access_denied"),
            (PasswordGrant, V1, 423, None, None, "Locked", Authentication, "authentication", "lock"),
            (PasswordGrant, V2, 401, JSON, None, r#"{"code":401,"message":"Invalid Scope [APP001]"}"#, Authentication, "permission_denied", "lacks permission"),
            (PasswordGrant, V2, 401, JSON, None, r#"{"code":401,"message":"Authentication failed"}"#, Authentication, "authentication", "Authentication failed"),
            (PasswordGrant, V1, 400, JSON, None, r#"{"error":"unsupported_grant_type"}"#, Permanent, "unsupported", "unsupported_grant_type"),
            (PasswordGrant, V1, 404, HTML, None, "<html><title>Not Found</title></html>", Permanent, "not_found", "apiBaseUrl"),
            (PasswordGrant, V2, 404, JSON, None, r#"{"code":404,"message":"Not Found"}"#, Permanent, "not_found", "tokenApi"),
            (PasswordGrant, V1, 405, None, None, "", Permanent, "method_not_allowed", "apiBaseUrl"),
            (PasswordGrant, V1, 422, None, None, "", Permanent, "client_error", "HTTP 422"),
            // Retrying can help.
            (PasswordGrant, V1, 500, None, None, "", Transient, "server_error", "HTTP 500"),
            (PasswordGrant, V1, 502, HTML, None, "<html><body>Bad Gateway</body></html>", Transient, "server_error", "Bad Gateway"),
            (PasswordGrant, V2, 503, JSON, Some("30"), r#"{"code":503,"message":"Maintenance"}"#, Transient, "server_error", "retry after 30s"),
            (PasswordGrant, V1, 429, None, Some("120"), "", Transient, "rate_limited", "retry after 120s"),
            (PasswordGrant, V1, 408, None, None, "", Transient, "timeout", "HTTP 408"),
            (PasswordGrant, V1, 403, HTML, None, WAF_PAGE, Transient, "firewall", "firewall"),
            (PasswordGrant, V1, 403, None, None, "<html><body>Request blocked</body></html>", Transient, "firewall", "Request blocked"),
            (RefreshGrant, V1, 403, HTML, None, WAF_PAGE, Transient, "firewall", "Your IP has been blocked"),
            (RefreshGrant, V1, 503, None, None, "", Transient, "server_error", "oauth2/token/?[redacted]"),
            // Redirects are not followed.
            (PasswordGrant, V1, 302, None, None, "", Permanent, "redirect", "redirect"),
            // Refresh refused: fall back to the password grant.
            (RefreshGrant, V1, 400, JSON, None, r#"{"error":"invalid_grant","error_description":"Invalid refresh token"}"#, RefreshRejected, "refresh_rejected", "Invalid refresh token"),
            (RefreshGrant, V1, 401, None, None, "", RefreshRejected, "refresh_rejected", "password grant"),
            (RefreshGrant, V1, 403, JSON, None, r#"{"error":"invalid_client"}"#, RefreshRejected, "refresh_rejected", "invalid_client"),
            (RefreshGrant, V1, 405, None, None, "", RefreshRejected, "refresh_rejected", "refreshMethod"),
            (RefreshGrant, V2, 401, JSON, None, r#"{"code":401,"message":"Refresh token expired"}"#, RefreshRejected, "refresh_rejected", "Refresh token expired"),
            // Reading a token.
            (ReadToken, V1, 401, None, None, "", Authentication, "token_refused", "revoked"),
            // v2's permission error is no revocation: the token stays (issue 17, finding 5).
            (ReadToken, V2, 401, JSON, None, r#"{"code":401,"message":"Invalid Scope [APP001]"}"#, Permanent, "permission_denied", "lack of permission"),
            (ReadToken, V1, 403, JSON, None, r#"{"error":"invalid_scope"}"#, Permanent, "permission_denied", "verifyInterval off"),
            (ReadToken, V1, 404, None, None, "", Permanent, "not_found", "apiBaseUrl"),
            (ReadToken, V1, 500, None, None, "", Transient, "server_error", "oauth2/read?[redacted]"),
        ];
        for &(op, api, status, content_type, retry_after, body, kind, label, mentions) in cases {
            let ex = exchange(op, api);
            let err = classify_status(
                &ex,
                status,
                &headers(content_type, retry_after),
                body.as_bytes(),
            );
            let shown = err.to_string();
            assert_eq!(
                (err.kind(), err.metric_label()),
                (kind, label),
                "{op:?} {api:?} {status} {body:?}: {shown}"
            );
            assert_eq!(err.status(), Some(status));
            assert!(
                shown.contains(mentions),
                "{shown:?} should mention {mentions:?}"
            );
            assert!(!shown.contains("client_secret="), "{shown}");
            assert!(!shown.contains("</"), "no markup in {shown}");
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let ex = exchange(Operation::PasswordGrant, TokenApi::V1);
        let err = classify_status(&ex, 429, &headers(None, Some("17")), b"");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
        let err = classify_status(
            &ex,
            503,
            &headers(None, Some("Wed, 01 May 2024 12:05:00 GMT")),
            b"",
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(300)));
        let err = classify_status(&ex, 503, &headers(None, None), b"");
        assert_eq!(err.retry_after(), None);
        // A firewall page without Retry-After still asks for a long pause.
        let err = classify_status(
            &ex,
            403,
            &headers(Some("text/html"), None),
            WAF_PAGE.as_bytes(),
        );
        assert_eq!(err.retry_after(), Some(FIREWALL_BACKOFF));
        let err = classify_status(
            &ex,
            403,
            &headers(Some("text/html"), Some("60")),
            WAF_PAGE.as_bytes(),
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
        // Only transient errors carry one.
        let err = classify_status(&ex, 401, &headers(None, Some("60")), b"");
        assert_eq!(err.retry_after(), None);
    }

    #[test]
    fn parse_retry_after_forms() {
        let cases = [
            ("0", Some(0)),
            (" 42 ", Some(42)),
            ("99999999", Some(MAX_RETRY_AFTER.as_secs())),
            ("999999999999999999999999", Some(MAX_RETRY_AFTER.as_secs())),
            ("Wed, 01 May 2024 12:01:00 GMT", Some(60)),
            ("Wed, 01 May 2024 11:00:00 GMT", Some(0)),
            ("-5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(value, now()).map(|d| d.as_secs()),
                expected,
                "{value:?}"
            );
        }
    }

    #[test]
    fn v2_absence_rule() {
        assert!(v2_absent(404, true));
        assert!(v2_absent(404, false));
        assert!(v2_absent(405, false));
        assert!(v2_absent(501, false));
        assert!(v2_absent(302, false));
        assert!(v2_absent(200, false));
        assert!(!v2_absent(200, true));
        assert!(!v2_absent(401, true));
        assert!(!v2_absent(400, false));
        assert!(!v2_absent(429, false));
        // Unknown paths answered with an HTML 403 or 5xx by a v2-less server or its front end.
        assert!(v2_absent(403, false));
        assert!(v2_absent(500, false));
        assert!(v2_absent(503, false));
        // A v2 that exists answers JSON.
        assert!(!v2_absent(403, true));
        assert!(!v2_absent(500, true));
        assert!(!v2_absent(503, true));
    }

    #[test]
    fn body_shapes_are_read_leniently() {
        let parse = |ct: Option<&str>, body: &str| ErrorBody::parse(ct, body.as_bytes(), &[]);
        assert_eq!(parse(None, "  "), ErrorBody::default());
        assert_eq!(
            parse(Some("text/plain"), "Bad\n  request").text.as_deref(),
            Some("Bad request")
        );
        let html = parse(Some("text/html"), WAF_PAGE);
        assert!(html.html);
        assert_eq!(
            html.text.as_deref(),
            Some("Access denied Your IP has been blocked.")
        );
        let title_only = parse(
            Some("text/html"),
            "<html><head><title>Blocked</title></head><body></body></html>",
        );
        assert_eq!(title_only.text.as_deref(), Some("Blocked"));
        let json_as_html = parse(
            Some("text/html"),
            r#"{"error":"invalid_grant","error_description":"Bad &amp; wrong"}"#,
        );
        assert!(!json_as_html.html);
        assert_eq!(json_as_html.oauth_error.as_deref(), Some("invalid_grant"));
        assert_eq!(
            json_as_html.text.as_deref(),
            Some("invalid_grant: Bad &amp; wrong")
        );
        let v2 = parse(
            Some("application/json"),
            r#"{"code":"401","message":"Invalid Scope [APP001]"}"#,
        );
        assert_eq!(
            (v2.code, v2.text.as_deref()),
            (Some(401), Some("Invalid Scope [APP001]"))
        );
        let nested = parse(None, r#"{"error":{"code":400,"message":"Missing field"}}"#);
        assert_eq!(
            (nested.code, nested.text.as_deref()),
            (Some(400), Some("Missing field"))
        );
        let free = parse(None, r#"{"error":"The user credentials were incorrect."}"#);
        assert_eq!(
            (free.oauth_error, free.text.as_deref()),
            (None, Some("The user credentials were incorrect."))
        );
        assert_eq!(
            parse(None, r#""just text""#).text.as_deref(),
            Some("just text")
        );
        assert_eq!(parse(None, "[1,2]"), ErrorBody::default());
        assert_eq!(parse(None, "\u{0}\u{1}").text, None);
        let long = "x".repeat(1000);
        let text = parse(None, &long).text.unwrap();
        assert_eq!(text.chars().count(), MAX_SERVER_TEXT + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn secret_echo_never_reaches_a_message() {
        let ex = exchange(Operation::PasswordGrant, TokenApi::V1);
        let bodies = [
            format!(
                r#"{{"error":"invalid_grant","error_description":"bad password {PASSWORD} for client secret {CLIENT_SECRET}"}}"#
            ),
            format!("grant_type=password&client_secret={CLIENT_SECRET}&password={PASSWORD}"),
            format!("<html><body>{CLIENT_SECRET}</body></html>"),
        ];
        for body in &bodies {
            for status in [400, 401, 403, 500, 429] {
                let err = classify_status(&ex, status, &headers(None, None), body.as_bytes());
                let shown = format!("{err} {err:?}");
                for secret in SECRETS {
                    assert!(!shown.contains(secret), "{shown}");
                }
            }
        }
    }

    #[test]
    fn redirect_target_is_redacted() {
        let ex = exchange(Operation::PasswordGrant, TokenApi::V1);
        let mut map = headers(None, None);
        map.insert(
            LOCATION,
            HeaderValue::from_static("https://login.example.com/portal?next=abc&sid=123"),
        );
        let err = classify_status(&ex, 301, &map, b"");
        let shown = err.to_string();
        assert!(
            shown.contains("https://login.example.com/portal?[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains("sid="), "{shown}");
    }

    #[test]
    fn a_200_without_a_token() {
        use ErrorKind::*;
        use Operation::*;
        use TokenApi::{V1, V2};
        // (operation, api, body, kind, metric label, message mentions)
        #[rustfmt::skip]
        let cases: &[(Operation, TokenApi, &str, ErrorKind, &str, &str)] = &[
            // No clue: an unusable answer, retried with backoff.
            (PasswordGrant, V1, "{}", Transient, "malformed_response", "a 200 without a token"),
            (PasswordGrant, V2, r#"{"access_token":""}"#, Transient, "malformed_response", "access_token is missing"),
            (PasswordGrant, V1, r#"{"code":302,"message":"Moved"}"#, Transient, "malformed_response", "carries an error"),
            // An in-band refusal is the refusal it stands for: lockout-safe backoff.
            (PasswordGrant, V1, r#"{"error":"invalid_grant","error_description":"Invalid username and password combination"}"#, Authentication, "authentication", "invalid_grant: Invalid username and password combination"),
            (PasswordGrant, V1, r#"{"error":"invalid_client"}"#, Authentication, "authentication", "in-band error 401"),
            (PasswordGrant, V1, r#"{"code":401,"message":"Invalid username and password combination"}"#, Authentication, "authentication", "client_secret"),
            (PasswordGrant, V2, r#"{"code":"403","message":"Forbidden"}"#, Authentication, "authentication", "in-band error 403"),
            (PasswordGrant, V2, r#"{"code":401,"message":"Invalid Scope [APP001]"}"#, Authentication, "permission_denied", "lacks permission"),
            (PasswordGrant, V1, r#"{"error":"unsupported_grant_type"}"#, Permanent, "unsupported", "unsupported_grant_type"),
            (PasswordGrant, V1, r#"{"code":503,"message":"Maintenance"}"#, Transient, "server_error", "Maintenance"),
            (PasswordGrant, V1, r#"{"code":429}"#, Transient, "rate_limited", "in-band error 429"),
            // A refused refresh token falls back to the password grant.
            (RefreshGrant, V1, r#"{"error":"invalid_grant"}"#, RefreshRejected, "refresh_rejected", "password grant"),
            (RefreshGrant, V2, r#"{"code":401,"message":"Refresh token expired"}"#, RefreshRejected, "refresh_rejected", "Refresh token expired"),
        ];
        for &(op, api, body, kind, label, mentions) in cases {
            let ex = exchange(op, api);
            let problem = crate::nsapi::answer::parse_grant_body(
                body.as_bytes(),
                crate::core::token::Grant::Password,
                api,
                now(),
            )
            .unwrap_err();
            let err = classify_grant_body(
                &ex,
                200,
                &headers(Some("application/json"), None),
                body.as_bytes(),
                &problem,
            );
            let shown = err.to_string();
            assert_eq!(
                (err.kind(), err.metric_label()),
                (kind, label),
                "{op:?} {api:?} {body}: {shown}"
            );
            assert_eq!(err.status(), Some(200), "{body}");
            assert!(shown.contains("HTTP 200"), "{shown}");
            assert!(
                shown.contains(mentions),
                "{shown:?} should mention {mentions:?}"
            );
        }
        // An in-band error that echoes a secret is scrubbed like any other.
        let body = serde_json::json!({
            "error": "invalid_grant",
            "error_description": format!("bad password {PASSWORD}"),
        })
        .to_string();
        let ex = exchange(PasswordGrant, V1);
        let err = classify_grant_body(
            &ex,
            200,
            &HeaderMap::new(),
            body.as_bytes(),
            &GrantBodyError::InBandError,
        );
        assert!(!err.to_string().contains(PASSWORD), "{err}");
    }

    #[test]
    fn a_refused_passcode_is_a_refused_login_that_says_what_to_check() {
        let ex = exchange(Operation::MfaGrant, TokenApi::V2);
        for (status, body) in [
            (401, r#"{"code":401,"message":"Invalid MFA passcode"}"#),
            (401, r#"{"code":401,"message":"MFA passcode already used"}"#),
            (
                403,
                r#"{"code":403,"message":"MFA is not set up for this user"}"#,
            ),
            (400, r#"{"error":"invalid_grant"}"#),
        ] {
            let err = classify_status(&ex, status, &HeaderMap::new(), body.as_bytes());
            assert_eq!(err.kind(), ErrorKind::Authentication, "{status} {body}");
            assert_eq!(err.metric_label(), "mfa_refused");
            let text = err.to_string();
            assert!(text.contains("mfa grant"), "{text}");
            assert!(text.contains("spec.mfa.totpSecretRef"), "{text}");
            assert!(text.contains("clock"), "{text}");
        }
        // Anything else is classified as for the password grant.
        let err = classify_status(&ex, 503, &HeaderMap::new(), b"");
        assert_eq!(err.kind(), ErrorKind::Transient);
        let err = classify_status(
            &ex,
            401,
            &HeaderMap::new(),
            br#"{"code":401,"message":"Invalid Scope [APP001]"}"#,
        );
        assert_eq!(err.metric_label(), "permission_denied");
    }

    #[test]
    fn grant_body_problems() {
        let ex = exchange(Operation::PasswordGrant, TokenApi::V1);
        let err = classify_grant_body(
            &ex,
            200,
            &HeaderMap::new(),
            b"",
            &GrantBodyError::MfaRequired {
                mfa_type: Some("totp".into()),
                mfa_vendor: None,
                intermediate: Some("intermediate-token-value".into()),
            },
        );
        assert_eq!(err.kind(), ErrorKind::MfaRequired);
        assert_eq!(err.status(), Some(200));
        assert!(err.to_string().contains("without MFA"), "{err}");
        assert!(err.to_string().contains("spec.mfa.totpSecretRef"), "{err}");
        assert!(err.to_string().contains("totp"), "{err}");
        assert!(
            !err.to_string().contains("intermediate-token-value"),
            "{err}"
        );
        let err = classify_grant_body(
            &ex,
            200,
            &HeaderMap::new(),
            b"",
            &GrantBodyError::InvalidExpiresIn("missing"),
        );
        assert_eq!(
            (err.kind(), err.metric_label()),
            (ErrorKind::Transient, "malformed_response")
        );
        assert!(err.to_string().contains("expires_in is missing"), "{err}");
    }

    #[test]
    fn transport_failures() {
        let ex = exchange(Operation::RefreshGrant, TokenApi::V1);
        let err = classify_transport(
            &ex,
            TransportFailure::Timeout,
            Duration::from_millis(1500),
            "operation timed out",
        );
        assert_eq!(
            (err.kind(), err.metric_label(), err.status()),
            (ErrorKind::Transient, "timeout", None)
        );
        assert!(err.to_string().contains("within 1.5s"), "{err}");
        assert!(
            !err.was_not_sent(),
            "a timed-out request may have been acted on"
        );
        assert!(
            err.to_string().contains("oauth2/token/?[redacted]"),
            "{err}"
        );
        assert!(!err.to_string().contains("cl1ent"), "{err}");
        let err = classify_transport(
            &ex,
            TransportFailure::Network,
            Duration::from_secs(1),
            &format!("connection refused {REFRESH}"),
        );
        assert_eq!(
            (err.kind(), err.metric_label()),
            (ErrorKind::Transient, "network")
        );
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert!(!err.to_string().contains(REFRESH), "{err}");
        assert!(!err.was_not_sent());
        let err = classify_transport(
            &ex,
            TransportFailure::Connect { timeout: false },
            Duration::from_secs(1),
            &format!("tcp connect error: Connection refused {REFRESH}"),
        );
        assert_eq!(
            (err.kind(), err.metric_label()),
            (ErrorKind::Transient, "connect_failed")
        );
        assert!(err.to_string().contains("nothing was sent"), "{err}");
        assert!(!err.to_string().contains(REFRESH), "{err}");
        assert!(err.was_not_sent());
        let err = classify_transport(
            &ex,
            TransportFailure::Connect { timeout: true },
            Duration::from_secs(2),
            "operation timed out",
        );
        assert_eq!(err.metric_label(), "connect_timeout");
        assert!(err.to_string().contains("within 2s"), "{err}");
        assert!(err.was_not_sent());
        let err = classify_transport(
            &ex,
            TransportFailure::InvalidRequest,
            Duration::from_secs(1),
            "builder error",
        );
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn html_to_text_handles_unclosed_markup() {
        assert_eq!(html_to_text("<p>a</p><!-- hidden").trim(), "a");
        assert_eq!(html_to_text("x<script>never closed").trim(), "x");
        assert_eq!(html_to_text("a &lt;b&gt; &amp;amp;").trim(), "a <b> &amp;");
        assert_eq!(html_to_text("<p unclosed").trim(), "");
    }
    #[test]
    fn an_html_echo_of_a_secret_is_scrubbed_after_markup_is_removed() {
        // Tags split the value and entities encode it.
        let html = format!(
            "<p>Invalid: <b>{}</b></p>",
            PASSWORD
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        );
        let body = ErrorBody::parse(Some("text/html"), html.as_bytes(), SECRETS);
        assert_eq!(body.text.as_deref(), Some("Invalid: [redacted]"));
    }
}
