//! Faults the simulator plays, their JSON form (config file, `--fault`, admin API) and the
//! decision, per request, of which active fault applies. No I/O here: the HTTP layer acts on
//! the [`TokenPlan`] it gets back.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde::{Deserialize, Serialize};

use crate::duration::serde_duration;

/// A fault the simulator plays on token requests (v1 `oauth2/token` and v2 `tokens`) unless
/// the variant says otherwise. Inject with [`crate::Sim::inject`]: a variant with a `count`
/// lasts for that many requests, the others until [`crate::Sim::clear_faults`];
/// [`crate::Sim::inject_times`] limits any of them to the next N requests it applies to.
///
/// JSON form (config file, `--fault`, `POST /_sim/faults`): an object with a `type` in
/// snake_case and the variant's fields, e.g. `{"type":"status","status":503,"count":2}`,
/// `{"type":"latency","delay":"200ms"}`, `{"type":"firewall","after":5,"window":"60s"}`,
/// plus an optional `"times": N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "FaultJson", into = "FaultJson")]
pub enum Fault {
    /// Answer `status` (e.g. 500, 502, 503) to the next `count` token requests: with an HTML
    /// body on v1, and with v2's own `{"code":<status>,"message":"..."}` JSON on v2.
    Status { status: u16, count: u32 },
    /// Answer `status` to each token request with probability `fraction` (0.0..=1.0), with the
    /// same bodies as [`Fault::Status`].
    StatusFraction { status: u16, fraction: f64 },
    /// Delay each token request by this much before answering.
    Latency(Duration),
    /// Never answer token requests (until the server shuts down); the client must time out.
    Hang,
    /// Answer with a truncated JSON document, status kept (the grant is processed first, so a
    /// rotated refresh token is consumed).
    MalformedJson,
    /// Keep the status but send an empty body (the grant is processed first).
    EmptyBody,
    /// Send the normal JSON body labelled `Content-Type: text/html`.
    JsonAsHtml,
    /// A web application firewall: once more than `after` token requests arrive within `window`
    /// (a fixed window starting at the first request), answer an HTML 403 until it ends.
    Firewall { after: u32, window: Duration },
    /// Answer 429 with `Retry-After: retry_after_secs` to the next `count` token requests.
    TooManyRequests { retry_after_secs: u64, count: u32 },
    /// Answer `401` with `{"code":401,"message":"Invalid Scope [APP001]"}`.
    InvalidScope,
    /// Reject every refresh grant with the configured bad-refresh status (`invalid_grant`).
    RejectRefresh,
    /// Answer 405 to token requests made with this HTTP method (`GET` or `POST`), as a server
    /// that accepts only one of the two would.
    MethodNotAllowed { method: String },
    /// Answer `status` to the next `count` `oauth2/read` requests (not token requests).
    ReadStatus { status: u16, count: u32 },
    /// Process the grant, then answer its status (200 for a good grant) with a
    /// `Content-Length` of the whole answer but send only its first half, and close the
    /// connection mid-body. A rotated refresh token is consumed.
    TruncatedBody,
    /// Process the grant, then answer its status (200 for a good grant) with a body of `bytes`
    /// bytes (e.g. 64 MiB): the start of a JSON token answer, then filler. It is streamed in
    /// chunks, never held in memory, with a `Content-Length` of `bytes` (or, with `chunked`,
    /// in chunked encoding without one). A rotated refresh token is consumed.
    HugeBody { bytes: u64, chunked: bool },
    /// Successful grants (v1 and v2) report this `expires_in` instead of the real lifetime:
    /// any JSON value, e.g. `0`, `-5`, `"soon"`, `1e300`, `2592000` or `null`. The token
    /// issued still lives the configured `token_ttl`.
    ExpiresIn { value: serde_json::Value },
    /// Process the grant, then answer `200 OK` with JSON that carries no `access_token`, as
    /// one public client says a portal can: `{}` ([`NoTokenBody::EmptyObject`]), an in-band
    /// RFC 6749 error or an in-band `{"code","message"}` error. Applies to every token request
    /// answered normally (successful or not); a rotated refresh token is consumed.
    NoToken { body: NoTokenBody },
}

/// The body of a [`Fault::NoToken`] answer (always with status 200).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoTokenBody {
    /// `{}`.
    #[default]
    EmptyObject,
    /// `{"error":"invalid_grant","error_description":"Invalid username and password combination"}`.
    OauthError,
    /// `{"code":401,"message":"Invalid username and password combination"}`.
    CodeMessage,
}

impl NoTokenBody {
    /// The body sent.
    pub fn json(self) -> serde_json::Value {
        const MESSAGE: &str = "Invalid username and password combination";
        match self {
            NoTokenBody::EmptyObject => serde_json::json!({}),
            NoTokenBody::OauthError => {
                serde_json::json!({"error": "invalid_grant", "error_description": MESSAGE})
            }
            NoTokenBody::CodeMessage => serde_json::json!({"code": 401, "message": MESSAGE}),
        }
    }

    /// The stats name (`fault_no_token_<name>_<result>`).
    pub fn name(self) -> &'static str {
        match self {
            NoTokenBody::EmptyObject => "empty_object",
            NoTokenBody::OauthError => "oauth_error",
            NoTokenBody::CodeMessage => "code_message",
        }
    }
}

impl Fault {
    /// The `type` name used in JSON and in stats keys (`fault_<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::StatusFraction { .. } => "status_fraction",
            Fault::Latency(_) => "latency",
            Fault::Hang => "hang",
            Fault::MalformedJson => "malformed_json",
            Fault::EmptyBody => "empty_body",
            Fault::JsonAsHtml => "json_as_html",
            Fault::Firewall { .. } => "firewall",
            Fault::TooManyRequests { .. } => "too_many_requests",
            Fault::InvalidScope => "invalid_scope",
            Fault::RejectRefresh => "reject_refresh",
            Fault::MethodNotAllowed { .. } => "method_not_allowed",
            Fault::ReadStatus { .. } => "read_status",
            Fault::TruncatedBody => "truncated_body",
            Fault::HugeBody { .. } => "huge_body",
            Fault::ExpiresIn { .. } => "expires_in",
            Fault::NoToken { .. } => "no_token",
        }
    }

    /// Check the values a fault carries (status codes, fractions).
    pub fn validate(&self) -> Result<(), String> {
        let status_ok = |s: u16| {
            if (100..=599).contains(&s) {
                Ok(())
            } else {
                Err(format!("status {s} is not an HTTP status"))
            }
        };
        match self {
            Fault::Status { status, .. } | Fault::ReadStatus { status, .. } => status_ok(*status),
            Fault::StatusFraction { status, fraction } => {
                status_ok(*status)?;
                if (0.0..=1.0).contains(fraction) {
                    Ok(())
                } else {
                    Err(format!("fraction {fraction} is not within 0..=1"))
                }
            }
            Fault::MethodNotAllowed { method } => match method.to_ascii_uppercase().as_str() {
                "GET" | "POST" => Ok(()),
                other => Err(format!("method {other:?}: expected GET or POST")),
            },
            _ => Ok(()),
        }
    }
}

impl FaultEntry {
    /// A fault on every node, until cleared (or its own `count`).
    pub fn new(fault: Fault) -> Self {
        FaultEntry {
            fault,
            times: None,
            node: None,
        }
    }
}

impl std::str::FromStr for FaultEntry {
    type Err = String;
    /// Parse the JSON form, e.g. `{"type":"status","status":503,"times":1,"node":1}`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry: FaultEntry =
            serde_json::from_str(s).map_err(|e| format!("invalid fault {s:?}: {e}"))?;
        entry.fault.validate()?;
        Ok(entry)
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    /// Parse the JSON form, e.g. `{"type":"status","status":503,"count":2}`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fault: Fault =
            serde_json::from_str(s).map_err(|e| format!("invalid fault {s:?}: {e}"))?;
        fault.validate()?;
        Ok(fault)
    }
}

fn one() -> u32 {
    1
}

/// The JSON shape of [`Fault`]: every variant a struct, so that it can be internally tagged.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FaultJson {
    Status {
        status: u16,
        #[serde(default = "one")]
        count: u32,
    },
    StatusFraction {
        status: u16,
        fraction: f64,
    },
    Latency {
        #[serde(with = "serde_duration")]
        delay: Duration,
    },
    Hang,
    MalformedJson,
    EmptyBody,
    JsonAsHtml,
    Firewall {
        after: u32,
        #[serde(with = "serde_duration")]
        window: Duration,
    },
    TooManyRequests {
        retry_after_secs: u64,
        #[serde(default = "one")]
        count: u32,
    },
    InvalidScope,
    RejectRefresh,
    MethodNotAllowed {
        method: String,
    },
    ReadStatus {
        status: u16,
        #[serde(default = "one")]
        count: u32,
    },
    TruncatedBody,
    HugeBody {
        bytes: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        chunked: bool,
    },
    ExpiresIn {
        value: serde_json::Value,
    },
    NoToken {
        #[serde(default)]
        body: NoTokenBody,
    },
}

impl From<FaultJson> for Fault {
    fn from(f: FaultJson) -> Self {
        match f {
            FaultJson::Status { status, count } => Fault::Status { status, count },
            FaultJson::StatusFraction { status, fraction } => {
                Fault::StatusFraction { status, fraction }
            }
            FaultJson::Latency { delay } => Fault::Latency(delay),
            FaultJson::Hang => Fault::Hang,
            FaultJson::MalformedJson => Fault::MalformedJson,
            FaultJson::EmptyBody => Fault::EmptyBody,
            FaultJson::JsonAsHtml => Fault::JsonAsHtml,
            FaultJson::Firewall { after, window } => Fault::Firewall { after, window },
            FaultJson::TooManyRequests {
                retry_after_secs,
                count,
            } => Fault::TooManyRequests {
                retry_after_secs,
                count,
            },
            FaultJson::InvalidScope => Fault::InvalidScope,
            FaultJson::RejectRefresh => Fault::RejectRefresh,
            FaultJson::MethodNotAllowed { method } => Fault::MethodNotAllowed { method },
            FaultJson::ReadStatus { status, count } => Fault::ReadStatus { status, count },
            FaultJson::TruncatedBody => Fault::TruncatedBody,
            FaultJson::HugeBody { bytes, chunked } => Fault::HugeBody { bytes, chunked },
            FaultJson::ExpiresIn { value } => Fault::ExpiresIn { value },
            FaultJson::NoToken { body } => Fault::NoToken { body },
        }
    }
}

impl From<Fault> for FaultJson {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Status { status, count } => FaultJson::Status { status, count },
            Fault::StatusFraction { status, fraction } => {
                FaultJson::StatusFraction { status, fraction }
            }
            Fault::Latency(delay) => FaultJson::Latency { delay },
            Fault::Hang => FaultJson::Hang,
            Fault::MalformedJson => FaultJson::MalformedJson,
            Fault::EmptyBody => FaultJson::EmptyBody,
            Fault::JsonAsHtml => FaultJson::JsonAsHtml,
            Fault::Firewall { after, window } => FaultJson::Firewall { after, window },
            Fault::TooManyRequests {
                retry_after_secs,
                count,
            } => FaultJson::TooManyRequests {
                retry_after_secs,
                count,
            },
            Fault::InvalidScope => FaultJson::InvalidScope,
            Fault::RejectRefresh => FaultJson::RejectRefresh,
            Fault::MethodNotAllowed { method } => FaultJson::MethodNotAllowed { method },
            Fault::ReadStatus { status, count } => FaultJson::ReadStatus { status, count },
            Fault::TruncatedBody => FaultJson::TruncatedBody,
            Fault::HugeBody { bytes, chunked } => FaultJson::HugeBody { bytes, chunked },
            Fault::ExpiresIn { value } => FaultJson::ExpiresIn { value },
            Fault::NoToken { body } => FaultJson::NoToken { body },
        }
    }
}

/// A fault with an optional limit and node, as `--fault`, the config file and the admin API
/// carry it: `{"type":"status","status":503,"times":1,"node":1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
    /// Applies to the next `times` requests only (for `status`, `too_many_requests` and
    /// `read_status`, this replaces `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Applies to requests on this node only (by index); absent: on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
}

/// An injected fault and how much of it is left.
struct ActiveFault {
    fault: Fault,
    /// `None`: until cleared.
    remaining: Option<u32>,
    /// `None`: on every node.
    node: Option<usize>,
    window_start: Option<Instant>,
    window_count: u32,
}

impl ActiveFault {
    fn applies_on(&self, node: usize) -> bool {
        self.node.is_none_or(|n| n == node)
    }

    fn consume(&mut self) {
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(1);
        }
    }
}

/// What to do instead of answering a token request normally.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EarlyAnswer {
    Status(u16),
    Firewall,
    TooManyRequests(u64),
    InvalidScope,
    MethodNotAllowed,
    Hang,
}

impl EarlyAnswer {
    /// The `result` part of the stats key.
    pub fn result_key(&self) -> String {
        match self {
            EarlyAnswer::Status(s) => format!("fault_{s}"),
            EarlyAnswer::Firewall => "fault_firewall".into(),
            EarlyAnswer::TooManyRequests(_) => "fault_429".into(),
            EarlyAnswer::InvalidScope => "fault_invalid_scope".into(),
            EarlyAnswer::MethodNotAllowed => "fault_method_not_allowed".into(),
            EarlyAnswer::Hang => "fault_hang".into(),
        }
    }
}

/// How a normal answer's body is spoilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    Malformed,
    Empty,
    JsonAsHtml,
    Truncated,
    Huge { bytes: u64, chunked: bool },
    NoToken(NoTokenBody),
}

/// The faults that apply to one token request.
#[derive(Debug, Default)]
pub(crate) struct TokenPlan {
    pub delay: Duration,
    pub early: Option<EarlyAnswer>,
    pub body: Option<BodyFault>,
    pub reject_refresh: bool,
}

/// The injected faults, in injection order.
#[derive(Default)]
pub(crate) struct ActiveFaults {
    faults: Vec<ActiveFault>,
}

impl ActiveFaults {
    /// Activate a fault on every node.
    pub fn push(&mut self, fault: Fault, times: Option<u32>) {
        self.push_on(fault, times, None);
    }

    /// Activate a fault on one node (`None`: every node).
    pub fn push_on(&mut self, fault: Fault, times: Option<u32>, node: Option<usize>) {
        let remaining = times.or(match &fault {
            Fault::Status { count, .. }
            | Fault::TooManyRequests { count, .. }
            | Fault::ReadStatus { count, .. } => Some(*count),
            _ => None,
        });
        if remaining == Some(0) {
            return;
        }
        self.faults.push(ActiveFault {
            fault,
            remaining,
            node,
            window_start: None,
            window_count: 0,
        });
    }

    pub fn clear(&mut self) {
        self.faults.clear();
    }

    pub fn list(&self) -> Vec<FaultEntry> {
        self.faults
            .iter()
            .map(|f| FaultEntry {
                fault: f.fault.clone(),
                times: f.remaining,
                node: f.node,
            })
            .collect()
    }

    /// Decide which faults apply to a token request on `node`. The firewall sits in front of
    /// everything and counts every request; then the first fault that replaces the answer
    /// wins; body faults and refresh rejection apply only to requests answered normally.
    pub fn plan_token(
        &mut self,
        method: &Method,
        is_refresh: bool,
        now: Instant,
        node: usize,
    ) -> TokenPlan {
        let mut plan = TokenPlan::default();
        for f in self.faults.iter_mut().filter(|f| f.applies_on(node)) {
            if let Fault::Firewall { after, window } = f.fault {
                let expired = f
                    .window_start
                    .is_none_or(|start| now.duration_since(start) >= window);
                if expired {
                    f.window_start = Some(now);
                    f.window_count = 0;
                }
                f.window_count = f.window_count.saturating_add(1);
                if f.window_count > after && plan.early.is_none() {
                    plan.early = Some(EarlyAnswer::Firewall);
                    f.consume();
                }
            }
        }
        for f in self.faults.iter_mut().filter(|f| f.applies_on(node)) {
            let early = match &f.fault {
                Fault::Latency(d) => {
                    plan.delay += *d;
                    f.consume();
                    None
                }
                Fault::Status { status, .. } => Some(EarlyAnswer::Status(*status)),
                Fault::StatusFraction { status, fraction } => {
                    (rand::random_bool(fraction.clamp(0.0, 1.0)))
                        .then_some(EarlyAnswer::Status(*status))
                }
                Fault::TooManyRequests {
                    retry_after_secs, ..
                } => Some(EarlyAnswer::TooManyRequests(*retry_after_secs)),
                Fault::InvalidScope => Some(EarlyAnswer::InvalidScope),
                Fault::Hang => Some(EarlyAnswer::Hang),
                Fault::MethodNotAllowed { method: m } => m
                    .eq_ignore_ascii_case(method.as_str())
                    .then_some(EarlyAnswer::MethodNotAllowed),
                _ => None,
            };
            if let Some(early) = early
                && plan.early.is_none()
            {
                plan.early = Some(early);
                f.consume();
            }
        }
        if plan.early.is_none() {
            for f in self.faults.iter_mut().filter(|f| f.applies_on(node)) {
                let body = match f.fault {
                    Fault::MalformedJson => Some(BodyFault::Malformed),
                    Fault::EmptyBody => Some(BodyFault::Empty),
                    Fault::JsonAsHtml => Some(BodyFault::JsonAsHtml),
                    Fault::TruncatedBody => Some(BodyFault::Truncated),
                    Fault::HugeBody { bytes, chunked } => Some(BodyFault::Huge { bytes, chunked }),
                    Fault::NoToken { body } => Some(BodyFault::NoToken(body)),
                    Fault::RejectRefresh if is_refresh && !plan.reject_refresh => {
                        plan.reject_refresh = true;
                        f.consume();
                        None
                    }
                    _ => None,
                };
                if let Some(body) = body
                    && plan.body.is_none()
                {
                    plan.body = Some(body);
                    f.consume();
                }
            }
        }
        self.retain_live();
        plan
    }

    /// The `expires_in` an `ExpiresIn` fault reports for a successful grant on `node`, if any
    /// (one use).
    pub fn take_expires_in(&mut self, node: usize) -> Option<serde_json::Value> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.applies_on(node) && matches!(f.fault, Fault::ExpiresIn { .. }))?;
        f.consume();
        let Fault::ExpiresIn { value } = &f.fault else {
            return None;
        };
        let value = value.clone();
        self.retain_live();
        Some(value)
    }

    /// The status a `ReadStatus` fault imposes on this read request on `node`, if any.
    pub fn plan_read(&mut self, node: usize) -> Option<u16> {
        let mut answer = None;
        for f in self.faults.iter_mut().filter(|f| f.applies_on(node)) {
            if let Fault::ReadStatus { status, .. } = f.fault
                && answer.is_none()
            {
                answer = Some(status);
                f.consume();
            }
        }
        self.retain_live();
        answer
    }

    fn retain_live(&mut self) {
        self.faults.retain(|f| f.remaining != Some(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let f: Fault = r#"{"type":"latency","delay":"250ms"}"#.parse().unwrap();
        assert_eq!(f, Fault::Latency(Duration::from_millis(250)));
        let f: Fault = r#"{"type":"status","status":503}"#.parse().unwrap();
        assert_eq!(
            f,
            Fault::Status {
                status: 503,
                count: 1
            }
        );
        let e: FaultEntry = serde_json::from_str(r#"{"type":"hang","times":2}"#).unwrap();
        assert_eq!(
            e,
            FaultEntry {
                fault: Fault::Hang,
                times: Some(2),
                node: None,
            }
        );
        let json = serde_json::to_value(Fault::Firewall {
            after: 3,
            window: Duration::from_secs(60),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"firewall","after":3,"window":"60s"})
        );
        assert!(
            "{\"type\":\"status\",\"status\":1000}"
                .parse::<Fault>()
                .is_err()
        );
    }

    #[test]
    fn hostile_body_faults_read_their_json() {
        let f: Fault = r#"{"type":"huge_body","bytes":67108864}"#.parse().unwrap();
        assert_eq!(
            f,
            Fault::HugeBody {
                bytes: 64 << 20,
                chunked: false
            }
        );
        let e: FaultEntry =
            serde_json::from_str(r#"{"type":"expires_in","value":1e300,"times":2}"#).unwrap();
        assert_eq!(
            e.fault,
            Fault::ExpiresIn {
                value: serde_json::json!(1e300)
            }
        );
        assert_eq!(e.times, Some(2));
        assert!(r#"{"type":"expires_in"}"#.parse::<Fault>().is_err());
        let f: Fault = r#"{"type":"truncated_body"}"#.parse().unwrap();
        assert_eq!(f, Fault::TruncatedBody);
        assert_eq!(
            serde_json::to_value(Fault::HugeBody {
                bytes: 10,
                chunked: true
            })
            .unwrap(),
            serde_json::json!({"type":"huge_body","bytes":10,"chunked":true})
        );
    }

    #[test]
    fn no_token_reads_its_body() {
        let f: Fault = r#"{"type":"no_token"}"#.parse().unwrap();
        assert_eq!(
            f,
            Fault::NoToken {
                body: NoTokenBody::EmptyObject
            }
        );
        let f: Fault = r#"{"type":"no_token","body":"code_message"}"#.parse().unwrap();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"type":"no_token","body":"code_message"})
        );
        assert!(r#"{"type":"no_token","body":"x"}"#.parse::<Fault>().is_err());
    }

    #[test]
    fn expires_in_wears_off_after_its_times() {
        let mut faults = ActiveFaults::default();
        faults.push(
            Fault::ExpiresIn {
                value: serde_json::json!("soon"),
            },
            Some(1),
        );
        assert_eq!(faults.take_expires_in(0), Some(serde_json::json!("soon")));
        assert_eq!(faults.take_expires_in(0), None);
        assert!(faults.list().is_empty());
    }

    #[test]
    fn a_fault_on_one_node_leaves_the_others_alone() {
        let mut faults = ActiveFaults::default();
        faults.push_on(
            Fault::Status {
                status: 503,
                count: 2,
            },
            None,
            Some(1),
        );
        let now = Instant::now();
        let plan = |f: &mut ActiveFaults, node| f.plan_token(&Method::POST, false, now, node).early;
        assert_eq!(plan(&mut faults, 0), None);
        assert_eq!(plan(&mut faults, 1), Some(EarlyAnswer::Status(503)));
        assert_eq!(plan(&mut faults, 0), None);
        assert_eq!(plan(&mut faults, 1), Some(EarlyAnswer::Status(503)));
        assert_eq!(plan(&mut faults, 1), None);
        let e: FaultEntry = serde_json::from_str(r#"{"type":"hang","node":1,"times":1}"#).unwrap();
        assert_eq!(e.node, Some(1));
    }

    #[test]
    fn counted_faults_wear_off_and_the_first_one_wins() {
        let mut faults = ActiveFaults::default();
        faults.push(
            Fault::Status {
                status: 503,
                count: 1,
            },
            None,
        );
        faults.push(
            Fault::TooManyRequests {
                retry_after_secs: 7,
                count: 1,
            },
            None,
        );
        let now = Instant::now();
        let plan = |f: &mut ActiveFaults| f.plan_token(&Method::POST, false, now, 0).early;
        assert_eq!(plan(&mut faults), Some(EarlyAnswer::Status(503)));
        assert_eq!(plan(&mut faults), Some(EarlyAnswer::TooManyRequests(7)));
        assert_eq!(plan(&mut faults), None);
    }

    #[test]
    fn firewall_blocks_past_the_limit_until_the_window_ends() {
        let mut faults = ActiveFaults::default();
        let window = Duration::from_secs(10);
        faults.push(Fault::Firewall { after: 2, window }, None);
        let t0 = Instant::now();
        let at = |f: &mut ActiveFaults, t| f.plan_token(&Method::POST, false, t, 0).early;
        assert_eq!(at(&mut faults, t0), None);
        assert_eq!(at(&mut faults, t0), None);
        assert_eq!(at(&mut faults, t0), Some(EarlyAnswer::Firewall));
        assert_eq!(at(&mut faults, t0 + window), None);
    }

    #[test]
    fn body_faults_wait_for_a_normal_answer() {
        let mut faults = ActiveFaults::default();
        faults.push(
            Fault::Status {
                status: 500,
                count: 1,
            },
            None,
        );
        faults.push(Fault::MalformedJson, Some(1));
        let now = Instant::now();
        let first = faults.plan_token(&Method::POST, false, now, 0);
        assert_eq!(
            (first.early, first.body),
            (Some(EarlyAnswer::Status(500)), None)
        );
        let second = faults.plan_token(&Method::POST, false, now, 0);
        assert_eq!(
            (second.early, second.body),
            (None, Some(BodyFault::Malformed))
        );
        assert!(faults.list().is_empty());
    }
}
