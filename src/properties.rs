//! Property tests (proptest, 512 cases each, bounded): the parsers and the classifier never
//! panic on any input, and never render a secret they were given into an error; and no spec,
//! at no time (the ends of time included), panics validation, scheduling or the status step.

use proptest::prelude::*;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use crate::core::base_url::ApiBaseUrl;
use crate::core::schedule::parse_duration;
use crate::core::token::{Grant, TokenApi};
use crate::nsapi::answer::{parse_grant_body, parse_token_info};
use crate::nsapi::classify::{Exchange, Operation, classify_grant_body, classify_status};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A secret that every encoding changes (`@`, space, `&`, `+`, quotes, `<`, non-ASCII).
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9@ &+<>\"'%/=é]{8,24}".prop_filter("not blank", |s| s.trim().len() >= 8)
}

/// Body text that may echo `secret` raw or in the encodings a server might use.
fn echo(secret: &str, style: u8, filler: &str) -> String {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap();
    let html = secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    match style % 6 {
        0 => format!("{filler} {secret} {filler}"),
        1 => format!("password={form}&x={filler}"),
        2 => format!(r#"{{"error":"invalid_grant","error_description":{json}}}"#),
        3 => format!("<html><body><p>{filler}</p><b>{html}</b></body></html>"),
        4 => format!(
            r#"{{"code":401,"message":"bad {}"}}"#,
            &json[1..json.len() - 1]
        ),
        _ => filler.to_owned(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn token_answers_of_any_shape_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let _ = parse_grant_body(&body, Grant::Password, TokenApi::V1, now);
        let _ = parse_token_info(&body);
    }

    #[test]
    fn token_answers_never_describe_a_value(
        token in "[a-f0-9]{32,40}",
        expires in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "\"[a-z0-9 ]{0,12}\"",
            Just("null".to_owned()),
        ],
        scope in prop_oneof![Just("mfa_required"), Just("Office Manager"), Just("")],
    ) {
        let body = format!(
            r#"{{"access_token":"{token}","refresh_token":"{token}r","expires_in":{expires},"scope":"{scope}"}}"#
        );
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        match parse_grant_body(body.as_bytes(), Grant::Password, TokenApi::V1, now) {
            Ok(grant) => {
                prop_assert!(grant.expires_in > 0);
                prop_assert!(grant.expires_at > now);
                let shown = format!("{grant:?}");
                prop_assert!(!shown.contains(&token));
            }
            Err(problem) => prop_assert!(!problem.describe().contains(&token)),
        }
    }

    #[test]
    fn base_urls_never_panic_and_errors_never_echo_the_input(
        scheme in prop_oneof![Just("https"), Just("http"), Just("ftp"), Just("")],
        host in "[a-zA-Z0-9.\\-\\[\\]:é]{0,30}",
        path in "[a-zA-Z0-9/._~%-]{0,30}",
        secret in secret(),
        placement in 0u8..4,
    ) {
        let input = match placement {
            0 => format!("{scheme}://user:{secret}@{host}/{path}"),
            1 => format!("{scheme}://{host}/{path}?client_secret={secret}"),
            2 => format!("{scheme}://{host}/{path}#{secret}"),
            _ => format!("{scheme}://{host}/{path}"),
        };
        match ApiBaseUrl::parse(&input, true) {
            Ok(url) => {
                // Whatever was accepted carries no credentials, query string or fragment.
                let parsed = url::Url::parse(url.as_str()).unwrap();
                prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                prop_assert!(parsed.query().is_none() && parsed.fragment().is_none());
                prop_assert!(url.as_str().ends_with('/'));
            }
            Err(error) => {
                let shown = format!("{error} {error:?}");
                prop_assert!(!shown.contains(&secret), "{shown}");
            }
        }
    }

    #[test]
    fn durations_never_panic_and_valid_ones_add_up(
        text in "[0-9.hmsu ]{0,12}",
        parts in proptest::collection::vec((0u32..100, prop_oneof![Just("h"), Just("m"), Just("s"), Just("ms")]), 1..4),
    ) {
        let _ = parse_duration(&text);
        let written: String = parts.iter().map(|(n, unit)| format!("{n}{unit}")).collect();
        let millis: i64 = parts
            .iter()
            .map(|(n, unit)| i64::from(*n) * match *unit { "h" => 3_600_000, "m" => 60_000, "s" => 1000, _ => 1 })
            .sum();
        prop_assert_eq!(parse_duration(&written).unwrap().as_millis(), i128::from(millis));
    }

    #[test]
    fn classified_answers_never_show_a_secret(
        status in 100u16..600,
        client_secret in secret(),
        password in secret(),
        style in any::<u8>(),
        filler in "[a-zA-Z ]{0,40}",
        content_type in prop_oneof![Just("application/json"), Just("text/html"), Just("text/plain"), Just("")],
        retry_after in prop_oneof![
            Just(String::new()),
            "[0-9]{1,12}",
            Just("Wed, 01 May 2024 12:05:00 GMT".to_owned()),
            "[a-z ]{0,8}",
        ],
        op in prop_oneof![Just(Operation::PasswordGrant), Just(Operation::RefreshGrant), Just(Operation::ReadToken)],
        api in prop_oneof![Just(TokenApi::V1), Just(TokenApi::V2)],
    ) {
        // The Basic credentials (spec.clientAuth: basic) are a secret the request sends too.
        let basic = {
            use base64::Engine as _;
            let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", form("client-id"), form(&client_secret)))
        };
        let echoed = match style % 3 {
            0 => &client_secret,
            1 => &password,
            _ => &basic,
        };
        let body = echo(echoed, style / 3, &filler);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(content_type) {
            headers.insert(CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&retry_after) {
            headers.insert(RETRY_AFTER, v);
        }
        let secrets = [client_secret.as_str(), password.as_str(), basic.as_str()];
        let url = format!("https://portal.example.com/ns-api/oauth2/token/?client_secret={client_secret}");
        let ex = Exchange {
            op,
            api,
            url: &url,
            secrets: &secrets,
            now: "2024-05-01T12:00:00Z".parse().unwrap(),
        };
        let error = classify_status(&ex, status, &headers, body.as_bytes());
        let shown = format!("{error} {error:?}");
        prop_assert!(!shown.contains(&client_secret), "{shown}");
        prop_assert!(!shown.contains(&password), "{shown}");
        prop_assert!(!shown.contains(&basic), "{shown}");
        // The same body as a 2xx without a token (an in-band error is read for its message).
        if let Err(problem) = parse_grant_body(body.as_bytes(), Grant::Password, api, ex.now) {
            let error = classify_grant_body(&ex, 200, &headers, body.as_bytes(), &problem);
            let shown = format!("{error} {error:?}");
            prop_assert!(!shown.contains(&client_secret), "{shown}");
            prop_assert!(!shown.contains(&password), "{shown}");
            prop_assert!(!shown.contains(&basic), "{shown}");
        }
        if let Some(after) = error.retry_after() {
            prop_assert!(after <= crate::core::api_error::MAX_RETRY_AFTER);
        }
    }
}

/// Durations as users write them, valid or not, with values near and past every limit.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,20}(\\.[0-9]{1,6})?(ms|s|m|h)",
        "([0-9]{1,4}(ms|s|m|h)){1,4}",
        Just("100000000h".to_owned()),
        Just("9223372036854775807s".to_owned()),
        Just("0s".to_owned()),
        Just("168h".to_owned()),
        Just("168h0m0.001s".to_owned()),
        ".{0,12}",
    ]
}

/// Any time jiff can hold, the ends of time included.
fn any_time() -> impl Strategy<Value = jiff::Timestamp> {
    let (min, max) = (
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    prop_oneof![
        Just(jiff::Timestamp::MIN),
        Just(jiff::Timestamp::MAX),
        (min..=max).prop_map(|s| jiff::Timestamp::from_second(s).unwrap()),
        (1_700_000_000i64..1_900_000_000).prop_map(|s| jiff::Timestamp::from_second(s).unwrap()),
    ]
}

/// A spec with every field drawn: durations, URLs, counts and flags.
fn any_spec() -> impl Strategy<Value = crate::core::crd::NsApiCredentialSpec> {
    let url = prop_oneof![
        Just("https://portal.example.com/ns-api/".to_owned()),
        Just("http://127.0.0.1:8080".to_owned()),
        "https://[a-z]{1,8}(\\.[a-z*]{1,6}){0,3}(:[0-9]{1,5})?/[a-z/-]{0,10}",
        ".{0,30}",
    ];
    (
        url.clone(),
        proptest::collection::vec(url, 0..5),
        duration_text(),
        proptest::option::of(duration_text()),
        any::<bool>(),
        0u8..4,
        any::<bool>(),
        proptest::collection::vec(("[A-Za-z]{1,12}", "[a-z0-9-]{1,20}"), 0..17),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(base, fallbacks, refresh_before, verify, suspend, api, post, targets, (mfa, basic))| {
                let token_api = ["v1", "v2", "auto", "jwt"][usize::from(api)];
                let refresh_method = if post { "POST" } else { "GET" };
                let targets: Vec<serde_json::Value> = targets
                    .iter()
                    .map(|(kind, name)| {
                        let kind = match kind.len() % 3 {
                            0 => "Deployment",
                            1 => "StatefulSet",
                            _ => "DaemonSet",
                        };
                        serde_json::json!({"kind": kind, "name": name})
                    })
                    .collect();
                serde_json::from_value(serde_json::json!({
                    "apiBaseUrl": base,
                    "fallbackApiBaseUrls": fallbacks,
                    "clientSecretRef": {"name": "client"},
                    "subscriberSecretRef": {"name": "subscriber"},
                    "tokenSecret": {"name": "token"},
                    "refreshBefore": refresh_before,
                    "verifyInterval": verify,
                    "suspend": suspend,
                    "tokenApi": token_api,
                    "refreshMethod": refresh_method,
                    "rolloutRestartTargets": targets,
                    "clientAuth": if basic { "basic" } else { "body" },
                    "mfa": mfa.then(|| serde_json::json!({"totpSecretRef": {"name": "seed", "key": "seed"}})),
                }))
                .unwrap()
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// Issue 17: nothing a tenant writes in a spec, and no time the operator reads back (from a
    /// Secret's annotations, a status, a clock near the ends of time), panics validation,
    /// scheduling, restart plans or the status step.
    #[test]
    fn any_spec_at_any_time_never_panics(
        spec in any_spec(),
        now in any_time(),
        issued in any_time(),
        expires in any_time(),
        last_check in proptest::option::of(any_time()),
        retry_at in any_time(),
        failures in any::<i32>(),
        seed in any::<u64>(),
        flags in any::<(bool, bool, bool, bool)>(),
        retry_after_secs in proptest::option::of(any::<u64>()),
    ) {
        use crate::core::api_error::NsApiError;
        use crate::core::crd::{NsApiCredentialStatus, WorkloadRestart};
        use crate::core::policy::{Policy, validate};
        use crate::core::restarts::{TargetState, plan};
        use crate::core::schedule::{self, CurrentToken, FailureClass, FailureGate, TokenTimes};
        use crate::core::status::{self, Extras, Outcome, Pass};

        let (allow_http, inputs_match, renew, with_list) = flags;
        let policy = Policy {
            allowed_api_hosts: if with_list { vec!["*.example.com".into(), "127.0.0.1:*".into()] } else { Vec::new() },
            allow_insecure_http: allow_http,
        };
        let times = TokenTimes { issued_at: issued, expires_at: expires };
        let old = NsApiCredentialStatus {
            consecutive_failures: failures,
            last_verified_at: last_check.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            restarts: vec![WorkloadRestart {
                kind: "Deployment".into(),
                name: "app".into(),
                restarted_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(retry_at),
            }],
            ..NsApiCredentialStatus::default()
        };
        let gate = Some(FailureGate { retry_at, inputs_match });
        let current = Some(CurrentToken { times, inputs_match });

        if let Ok(valid) = validate(&spec, &policy) {
            let _ = schedule::decide(now, current, valid.refresh_before, seed, gate, renew);
            let _ = schedule::refresh_at(times, valid.refresh_before, seed);
            if let Some(interval) = valid.verify_interval {
                let _ = schedule::next_verify(last_check, interval, now);
            }
        }
        // Out-of-range values reach the pure code only after validation bounds them, but
        // the arithmetic holds even for the raw extremes.
        let _ = schedule::decide(now, current, jiff::SignedDuration::MAX, seed, gate, renew);
        let _ = schedule::refresh_at(times, jiff::SignedDuration::MIN, seed);
        let _ = schedule::next_verify(last_check, jiff::SignedDuration::MAX, now);
        let _ = schedule::revocation_believed(&[issued, expires, retry_at], now);
        let _ = plan(TargetState { ours: Some(retry_at), annotation: Some(issued), created: Some(expires) }, issued, now);
        let retry_after = retry_after_secs.map(|s| jiff::SignedDuration::from_secs(s.min(i64::MAX as u64) as i64));
        for class in [FailureClass::Transient, FailureClass::Refused] {
            let _ = schedule::retry_delay(class, failures.unsigned_abs(), retry_after, seed);
        }

        let error = NsApiError::Transient {
            message: "x".into(),
            status: Some(503),
            retry_after: retry_after_secs.map(std::time::Duration::from_secs),
            label: "server_error",
        };
        let problem = crate::core::conditions::Problem::new(crate::core::conditions::Reason::InvalidSpec, "x");
        let ignored = vec!["spec.verifyInterval: x".to_owned()];
        for outcome in [
            Outcome::Blocked(&problem),
            Outcome::Suspended,
            Outcome::Waiting { until: retry_at, token_secret: Some("token") },
            Outcome::Failed { error: &error, fingerprint: "fp", seed },
        ] {
            let pass = Pass {
                old: &old,
                generation: Some(i64::from(failures)),
                now,
                token: Some(times),
                extras: Extras {
                    verified_at: last_check,
                    next_check: last_check,
                    ignored_settings: Some(&ignored),
                    ..Extras::default()
                },
            };
            let _ = status::next(pass, outcome);
        }
    }
}
