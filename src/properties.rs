//! Property tests (proptest, 512 cases each, bounded): the parsers and the classifier never
//! panic on any input, and never render a secret they were given into an error.

use proptest::prelude::*;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use crate::core::base_url::ApiBaseUrl;
use crate::core::schedule::parse_duration;
use crate::core::token::{Grant, TokenApi};
use crate::nsapi::answer::{parse_grant_body, parse_token_info};
use crate::nsapi::classify::{Exchange, Operation, classify_status};

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
        let body = echo(if style % 2 == 0 { &client_secret } else { &password }, style / 2, &filler);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(content_type) {
            headers.insert(CONTENT_TYPE, v);
        }
        if let Ok(v) = HeaderValue::from_str(&retry_after) {
            headers.insert(RETRY_AFTER, v);
        }
        let secrets = [client_secret.as_str(), password.as_str()];
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
        if let Some(after) = error.retry_after() {
            prop_assert!(after <= crate::core::api_error::MAX_RETRY_AFTER);
        }
    }
}
