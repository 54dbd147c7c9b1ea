//! Lenient parsing of the JSON token answers the API returns, into `core::token`'s values.
//! Parsing never echoes a body: a 2xx body carries fresh tokens, so problems are described by
//! field name only.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use crate::core::credentials::Confidential;
use crate::core::token::{Grant, MAX_TOKEN_LIFETIME, TokenApi, TokenGrant, TokenInfo};

/// Why a 2xx grant body is not a usable token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GrantBodyError {
    /// Not JSON at all (an HTML page, text, or empty).
    NotJson,
    /// JSON, but not an object.
    NotAnObject,
    /// `scope` is `mfa_required`: an intermediate token, not a usable one. With a TOTP seed
    /// it is answered by the `mfa` grant.
    MfaRequired {
        mfa_type: Option<String>,
        mfa_vendor: Option<String>,
        /// The intermediate token, which the `mfa` grant sends back.
        intermediate: Option<Confidential>,
    },
    /// No `access_token` (or an empty one) and no sign of an error: `{}` is the observed shape
    /// of "a 200 without a token".
    MissingAccessToken,
    /// No `access_token`, but an in-band error: RFC 6749 `error` (with or without
    /// `error_description`), or `{code,message}` whose `code` is not a 2xx. Classified from the
    /// body (`classify::classify_grant_body`) like the HTTP refusal it stands for.
    InBandError,
    /// `expires_in` is missing, not a number, not positive, or too large to be a date.
    InvalidExpiresIn(&'static str),
    /// A `v2/jwt` answer whose `token` is not a JWT with a usable `exp` claim.
    InvalidJwt(&'static str),
}

impl GrantBodyError {
    /// A description that names fields only, never values.
    pub(crate) fn describe(&self) -> String {
        match self {
            GrantBodyError::NotJson => "the body is not JSON".to_owned(),
            GrantBodyError::NotAnObject => "the body is JSON but not an object".to_owned(),
            GrantBodyError::MfaRequired { .. } => "scope is mfa_required".to_owned(),
            GrantBodyError::MissingAccessToken => {
                "access_token is missing or empty (a 200 without a token)".to_owned()
            }
            GrantBodyError::InBandError => {
                "no access_token, and the body carries an error".to_owned()
            }
            GrantBodyError::InvalidExpiresIn(why) => format!("expires_in is {why}"),
            GrantBodyError::InvalidJwt(why) => format!("the JWT {why}"),
        }
    }
}

/// Whether `body` parses as JSON (used to tell an API answer from an HTML or text page).
pub(crate) fn body_is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok()
}

/// Parses a 2xx token response. Unknown fields are ignored; numbers and numeric strings are
/// both accepted where the API is known to vary.
pub(crate) fn parse_grant_body(
    body: &[u8],
    grant: Grant,
    api: TokenApi,
    requested_at: Timestamp,
) -> Result<TokenGrant, GrantBodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| GrantBodyError::NotJson)?;
    let object = first_object(&value).ok_or(GrantBodyError::NotAnObject)?;

    let scope = text_field(object, &["scope"]);
    if scope
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("mfa_required"))
    {
        let intermediate = match object.get("access_token") {
            Some(Value::String(token)) if !token.trim().is_empty() => {
                Some(Confidential::new(token.trim().to_owned()))
            }
            _ => None,
        };
        return Err(GrantBodyError::MfaRequired {
            mfa_type: text_field(object, &["mfa_type"]).map(|s| short_label(&s)),
            mfa_vendor: text_field(object, &["mfa_vendor"]).map(|s| short_label(&s)),
            intermediate,
        });
    }

    let access_token = match object.get("access_token") {
        Some(Value::String(token)) if !token.trim().is_empty() => {
            Confidential::new(token.trim().to_owned())
        }
        _ if has_in_band_error(object) => return Err(GrantBodyError::InBandError),
        _ => return Err(GrantBodyError::MissingAccessToken),
    };
    let refresh_token = match object.get("refresh_token") {
        Some(Value::String(token)) if !token.trim().is_empty() => {
            Some(Confidential::new(token.trim().to_owned()))
        }
        _ => None,
    };
    // An implausibly long lifetime is cut to the longest plausible one: rotating early is
    // always safe, and the record stays one the schedule trusts (it would otherwise mint again
    // on every pass).
    let expires_in = expires_in(object.get("expires_in"))?.min(MAX_TOKEN_LIFETIME.as_secs());
    let expires_at = requested_at
        .checked_add(SignedDuration::from_secs(expires_in))
        .map_err(|_| GrantBodyError::InvalidExpiresIn("beyond the calendar"))?;

    Ok(TokenGrant {
        access_token,
        refresh_token,
        token_type: text_field(object, &["token_type"]).unwrap_or_else(|| "Bearer".to_owned()),
        scope,
        domain: text_field(object, &["domain"]),
        territory: text_field(object, &["territory"]),
        uid: text_field(object, &["uid"]),
        api_version: text_field(object, &["apiversion", "api_version", "apiVersion"]),
        legacy: bool_field(object.get("legacy")),
        grant,
        api,
        session_cookie: None,
        requested_at,
        expires_in,
        expires_at,
    })
}

/// Parses a 2xx `v2/jwt` answer, `{"token"[, "refresh_token"]}` (an MFA user's password step
/// answers an intermediate token instead, as `v2/tokens` does). The lifetime comes from the
/// JWT's own claims, never from a guess: `exp - iat` (the server's clock on both sides), and
/// no later than `exp` by this clock. The signature is not checked: the operator only passes
/// the JWT on, and reads its times to plan the rotation.
pub(crate) fn parse_jwt_body(
    body: &[u8],
    grant: Grant,
    requested_at: Timestamp,
) -> Result<TokenGrant, GrantBodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| GrantBodyError::NotJson)?;
    let object = first_object(&value).ok_or(GrantBodyError::NotAnObject)?;
    if text_field(object, &["scope"]).is_some_and(|s| s.eq_ignore_ascii_case("mfa_required")) {
        return parse_grant_body(body, grant, TokenApi::Jwt, requested_at);
    }
    let token = match object.get("token").or_else(|| object.get("access_token")) {
        Some(Value::String(token)) if !token.trim().is_empty() => token.trim().to_owned(),
        _ if has_in_band_error(object) => return Err(GrantBodyError::InBandError),
        _ => return Err(GrantBodyError::MissingAccessToken),
    };
    let claims = jwt_claims(&token).ok_or(GrantBodyError::InvalidJwt(
        "is not three base64url parts with a JSON object of claims",
    ))?;
    let number = |name: &str| match claims.get(name) {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let exp = number("exp").ok_or(GrantBodyError::InvalidJwt("has no exp claim"))?;
    let by_our_clock = exp.saturating_sub(requested_at.as_second());
    let lifetime = match number("iat") {
        Some(iat) => exp.saturating_sub(iat).min(by_our_clock),
        None => by_our_clock,
    };
    if lifetime <= 0 {
        return Err(GrantBodyError::InvalidJwt("has already expired (exp)"));
    }
    let expires_in = lifetime.min(MAX_TOKEN_LIFETIME.as_secs());
    let expires_at = requested_at
        .checked_add(SignedDuration::from_secs(expires_in))
        .map_err(|_| GrantBodyError::InvalidJwt("expires beyond the calendar"))?;
    let refresh_token = match object.get("refresh_token") {
        Some(Value::String(token)) if !token.trim().is_empty() => {
            Some(Confidential::new(token.trim().to_owned()))
        }
        _ => None,
    };
    Ok(TokenGrant {
        access_token: Confidential::new(token),
        refresh_token,
        token_type: "Bearer".to_owned(),
        scope: text_field(&claims, &["scope"]),
        domain: text_field(&claims, &["domain"]),
        territory: text_field(&claims, &["territory"]),
        uid: text_field(&claims, &["uid"]),
        api_version: None,
        legacy: None,
        grant,
        api: TokenApi::Jwt,
        session_cookie: None,
        requested_at,
        expires_in,
        expires_at,
    })
}

/// The claims of a JWT (`header.claims.signature`, base64url), unverified.
fn jwt_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// What `GET v2/jwt` says about a JWT (its claims), as [`TokenInfo`].
pub(crate) fn parse_jwt_info(body: &[u8]) -> Option<TokenInfo> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = first_object(&value)?;
    Some(TokenInfo {
        client_id: text_field(object, &["client_id", "aud"]),
        territory: text_field(object, &["territory"]),
        domain: text_field(object, &["domain"]),
        uid: text_field(object, &["uid"]),
        scope: text_field(object, &["scope"]),
        api_version: None,
        expires: text_field(object, &["exp"]),
    })
}

/// Parses a 2xx `oauth2/read?format=json` body. Returns `None` when it is not a JSON object
/// (older servers answer XML when `format=json` is ignored).
pub(crate) fn parse_token_info(body: &[u8]) -> Option<TokenInfo> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = first_object(&value)?;
    Some(TokenInfo {
        client_id: text_field(object, &["client_id"]),
        territory: text_field(object, &["territory"]),
        domain: text_field(object, &["domain"]),
        uid: text_field(object, &["uid"]),
        scope: text_field(object, &["scope"]),
        api_version: text_field(object, &["apiversion", "api_version", "apiVersion"]),
        expires: text_field(object, &["expires"]),
    })
}

/// Whether a body without a token says why: an RFC 6749 `error` (a string or an object), or a
/// `code` (number or numeric string) that is not a 2xx.
fn has_in_band_error(object: &Map<String, Value>) -> bool {
    let error = match object.get("error") {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(_)) => true,
        _ => false,
    };
    let code = match object.get("code") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    error || code.is_some_and(|c| !(200..=299).contains(&c))
}

/// The object itself, or the first element of an array of objects.
fn first_object(value: &Value) -> Option<&Map<String, Value>> {
    match value {
        Value::Object(object) => Some(object),
        Value::Array(items) => items.first().and_then(Value::as_object),
        _ => None,
    }
}

/// A string, number or boolean field as text; empty strings count as absent.
fn text_field(object: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| match object.get(*name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn bool_field(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn expires_in(value: Option<&Value>) -> Result<i64, GrantBodyError> {
    let seconds = match value {
        None | Some(Value::Null) => return Err(GrantBodyError::InvalidExpiresIn("missing")),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            // Beyond i64 but positive: "a very long time" (cut to the maximum by the caller).
            (None, Some(f)) if f.is_finite() => {
                f.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64
            }
            _ => return Err(GrantBodyError::InvalidExpiresIn("not a number")),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) => i,
                Err(_) => match s.parse::<f64>() {
                    Ok(f) if f.is_finite() => {
                        f.trunc().clamp(i64::MIN as f64, i64::MAX as f64) as i64
                    }
                    _ => return Err(GrantBodyError::InvalidExpiresIn("not a number")),
                },
            }
        }
        Some(_) => return Err(GrantBodyError::InvalidExpiresIn("not a number")),
    };
    if seconds <= 0 {
        return Err(GrantBodyError::InvalidExpiresIn("not positive"));
    }
    Ok(seconds)
}

/// Server-chosen labels (e.g. `mfa_type`) are shown to users: keep them short and plain.
fn short_label(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn parse(body: &str) -> Result<TokenGrant, GrantBodyError> {
        parse_grant_body(body.as_bytes(), Grant::Password, TokenApi::V1, at())
    }

    #[test]
    fn parses_the_guides_sample() {
        let grant = parse(
            r#"{"access_token":"90679e87dc2e6409211e822434122aaf9480","expires_in":3600,
                "scope":"Office Manager","token_type":"Bearer","refresh_token":"c7bf58a0247e02efc6ee4340f01ed629",
                "legacy":false,"domain":"abc-company.12345.service","apiversion":"Version: 41.1.0"}"#,
        )
        .unwrap();
        assert_eq!(
            grant.access_token.expose(),
            "90679e87dc2e6409211e822434122aaf9480"
        );
        assert_eq!(
            grant.refresh_token.as_ref().map(Confidential::expose),
            Some("c7bf58a0247e02efc6ee4340f01ed629")
        );
        assert_eq!(grant.token_type, "Bearer");
        assert_eq!(grant.scope.as_deref(), Some("Office Manager"));
        assert_eq!(grant.domain.as_deref(), Some("abc-company.12345.service"));
        assert_eq!(grant.api_version.as_deref(), Some("Version: 41.1.0"));
        assert_eq!(grant.legacy, Some(false));
        assert_eq!(grant.territory, None);
        assert_eq!(grant.uid, None);
        assert_eq!(grant.grant, Grant::Password);
        assert_eq!(grant.api, TokenApi::V1);
        assert_eq!(grant.requested_at, at());
        assert_eq!(grant.expires_in, 3600);
        assert_eq!(
            grant.expires_at,
            "2024-05-01T13:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn debug_of_a_grant_hides_both_tokens() {
        let grant = parse(r#"{"access_token":"AAAAsecretaccess","refresh_token":"RRRRsecretrefresh","expires_in":60}"#)
            .unwrap();
        let printed = format!("{grant:?} {grant:#?}");
        assert!(!printed.contains("AAAAsecretaccess"));
        assert!(!printed.contains("RRRRsecretrefresh"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn accepts_numeric_string_and_float_expires_in() {
        for (value, expected) in [
            (r#""3600""#, 3600),
            (r#"" 120 ""#, 120),
            ("59.9", 59),
            (r#""7.0""#, 7),
        ] {
            let body = format!(r#"{{"access_token":"t0k3n","expires_in":{value}}}"#);
            assert_eq!(
                parse(&body).unwrap().expires_in,
                expected,
                "expires_in {value}"
            );
        }
    }

    #[test]
    fn refuses_missing_or_non_positive_expires_in() {
        let cases = [
            (r#"{"access_token":"t"}"#, "missing"),
            (r#"{"access_token":"t","expires_in":null}"#, "missing"),
            (r#"{"access_token":"t","expires_in":0}"#, "not positive"),
            (r#"{"access_token":"t","expires_in":-5}"#, "not positive"),
            (
                r#"{"access_token":"t","expires_in":"soon"}"#,
                "not a number",
            ),
            (r#"{"access_token":"t","expires_in":true}"#, "not a number"),
            (
                r#"{"access_token":"t","expires_in":-1e300}"#,
                "not positive",
            ),
            (r#"{"access_token":"t","expires_in":"NaN"}"#, "not a number"),
        ];
        for (body, why) in cases {
            assert_eq!(
                parse(body),
                Err(GrantBodyError::InvalidExpiresIn(why)),
                "{body}"
            );
        }
    }

    #[test]
    fn implausibly_long_lifetimes_are_cut_to_a_week() {
        let week = MAX_TOKEN_LIFETIME.as_secs();
        for body in [
            r#"{"access_token":"t","expires_in":2592000}"#,
            r#"{"access_token":"t","expires_in":9223372036854775807}"#,
            r#"{"access_token":"t","expires_in":1e300}"#,
            r#"{"access_token":"t","expires_in":"99999999999999999999"}"#,
        ] {
            let grant = parse(body).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(grant.expires_in, week, "{body}");
            assert_eq!(grant.expires_at, at() + MAX_TOKEN_LIFETIME, "{body}");
        }
        assert_eq!(
            parse(r#"{"access_token":"t","expires_in":604799}"#)
                .unwrap()
                .expires_in,
            604_799
        );
    }

    #[test]
    fn ignores_extra_fields_and_defaults_token_type() {
        let grant = parse(
            r#"{"access_token":"t0k3n","expires_in":3600,"username":"111@abc","user":"111",
                "territory":"T1","uid":"111@abc-company","nested":{"a":[1,2]},"legacy":"1"}"#,
        )
        .unwrap();
        assert_eq!(grant.token_type, "Bearer");
        assert_eq!(grant.territory.as_deref(), Some("T1"));
        assert_eq!(grant.uid.as_deref(), Some("111@abc-company"));
        assert_eq!(grant.legacy, Some(true));
        assert_eq!(grant.refresh_token, None);
    }

    #[test]
    fn numbers_become_text_and_empty_strings_absent() {
        let grant = parse(
            r#"{"access_token":"t0k3n","expires_in":60,"territory":42,"domain":"","refresh_token":"  "}"#,
        )
        .unwrap();
        assert_eq!(grant.territory.as_deref(), Some("42"));
        assert_eq!(grant.domain, None);
        assert_eq!(grant.refresh_token, None);
    }

    #[test]
    fn mfa_required_is_not_a_token() {
        let body = r#"{"access_token":"intermediate","expires_in":300,"scope":"mfa_required",
                       "mfa_type":"totp","mfa_vendor":"google<script>"}"#;
        assert_eq!(
            parse(body),
            Err(GrantBodyError::MfaRequired {
                mfa_type: Some("totp".to_owned()),
                mfa_vendor: Some("googlescript".to_owned()),
                intermediate: Some(Confidential::from("intermediate")),
            })
        );
        // Detected even when the rest of the body would not be a usable token.
        assert!(matches!(
            parse(r#"{"scope":"MFA_REQUIRED"}"#),
            Err(GrantBodyError::MfaRequired {
                intermediate: None,
                ..
            })
        ));
        // Its Debug (which reaches no message, but might a log) hides the intermediate token.
        let printed = format!("{:?}", parse(body));
        assert!(!printed.contains("intermediate\""), "{printed}");
    }

    /// A JWT with these claims (unsigned: the operator does not check signatures).
    fn jwt(claims: &str) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims)
        )
    }

    #[test]
    fn a_jwt_answer_lives_as_long_as_its_claims_say() {
        let now = at().as_second();
        // 24 h as the one public sample, 90 s, and a string exp: each taken from the claims.
        for (iat, exp, lifetime) in [
            (now, now + 86_400, 86_400),
            (now, now + 90, 90),
            (now - 5, now + 55, 55),
        ] {
            let token = jwt(&format!(
                r#"{{"sub":"111@abc","domain":"abc","uid":"111@abc","scope":"Office Manager","iat":{iat},"exp":"{exp}"}}"#
            ));
            let body = format!(r#"{{"token":"{token}","refresh_token":"r.e.f"}}"#);
            let grant = parse_jwt_body(body.as_bytes(), Grant::Password, at()).unwrap();
            assert_eq!(grant.expires_in, lifetime, "iat {iat} exp {exp}");
            assert_eq!(grant.api, TokenApi::Jwt);
            assert_eq!(grant.access_token.expose(), token);
            assert_eq!(grant.refresh_token.as_ref().unwrap().expose(), "r.e.f");
            assert_eq!(grant.domain.as_deref(), Some("abc"));
            assert_eq!(grant.scope.as_deref(), Some("Office Manager"));
        }
        // A server whose clock is ahead: exp - iat, not exp by our clock.
        let ahead = jwt(&format!(r#"{{"iat":{},"exp":{}}}"#, now + 600, now + 660));
        let body = format!(r#"{{"token":"{ahead}"}}"#);
        assert_eq!(
            parse_jwt_body(body.as_bytes(), Grant::Password, at())
                .unwrap()
                .expires_in,
            60
        );
    }

    #[test]
    fn a_jwt_without_a_usable_exp_is_refused_not_guessed() {
        let now = at().as_second();
        for (token, why) in [
            (jwt(r#"{"sub":"x"}"#), "has no exp claim"),
            (
                jwt(&format!(r#"{{"exp":{}}}"#, now - 1)),
                "has already expired",
            ),
            ("not-a-jwt".to_owned(), "is not three"),
            ("a.bm90IGpzb24.c".to_owned(), "is not three"),
        ] {
            let body = format!(r#"{{"token":"{token}"}}"#);
            match parse_jwt_body(body.as_bytes(), Grant::Password, at()) {
                Err(GrantBodyError::InvalidJwt(reason)) => {
                    assert!(reason.starts_with(why), "{token}: {reason}")
                }
                other => panic!("{token}: {other:?}"),
            }
        }
        assert_eq!(
            parse_jwt_body(b"{}", Grant::Password, at()),
            Err(GrantBodyError::MissingAccessToken)
        );
        assert!(matches!(
            parse_jwt_body(
                br#"{"access_token":"i","scope":"mfa_required","mfa_type":"authenticator"}"#,
                Grant::Password,
                at()
            ),
            Err(GrantBodyError::MfaRequired {
                intermediate: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn refuses_bodies_that_are_not_a_token() {
        assert_eq!(parse(""), Err(GrantBodyError::NotJson));
        assert_eq!(parse("<html>ok</html>"), Err(GrantBodyError::NotJson));
        assert_eq!(
            parse(r#"{"access_token":"t","#),
            Err(GrantBodyError::NotJson)
        );
        assert_eq!(
            parse(r#""just a string""#),
            Err(GrantBodyError::NotAnObject)
        );
        assert_eq!(
            parse(r#"{"expires_in":3600}"#),
            Err(GrantBodyError::MissingAccessToken)
        );
        assert_eq!(
            parse(r#"{"access_token":42,"expires_in":3600}"#),
            Err(GrantBodyError::MissingAccessToken)
        );
    }

    #[test]
    fn a_200_without_a_token_is_named() {
        for body in [
            "{}",
            r#"{"access_token":"","expires_in":3600}"#,
            r#"{"code":200,"message":"OK"}"#,
            r#"{"code":"200"}"#,
            r#"{"error":""}"#,
        ] {
            assert_eq!(
                parse(body),
                Err(GrantBodyError::MissingAccessToken),
                "{body}"
            );
        }
        for body in [
            r#"{"error":"invalid_grant","error_description":"Invalid username and password combination"}"#,
            r#"{"error":"invalid_client"}"#,
            r#"{"code":401,"message":"Invalid username and password combination"}"#,
            r#"{"code":"403","message":"Forbidden"}"#,
            r#"{"error":{"code":500,"message":"x"}}"#,
            r#"[{"code":429}]"#,
        ] {
            assert_eq!(parse(body), Err(GrantBodyError::InBandError), "{body}");
        }
        // A token wins over anything else in the body.
        assert!(parse(r#"{"access_token":"t","expires_in":60,"code":401}"#).is_ok());
    }

    #[test]
    fn a_44_0_portals_v1_answer_with_string_numbers_is_a_token() {
        let grant = parse(
            r#"{"access_token":"a1b2c3","expires_in":"3600","scope":"Office Manager",
                "token_type":"Bearer","refresh_token":"r1","legacy":false,"domain":"abc",
                "apiversion":"Version: 44.0.3","username":"111@abc","user":"111",
                "territory":"T1","uid":"111@abc","client_id":"cid","expires":"1686420498",
                "rate_limit":"0","login":"111@abc","user_email":"","displayName":"111"}"#,
        )
        .unwrap();
        assert_eq!(grant.expires_in, 3600);
        assert_eq!(grant.expires_at, at() + SignedDuration::from_secs(3600));
        assert_eq!(grant.access_token.expose(), "a1b2c3");
        assert_eq!(grant.api_version.as_deref(), Some("Version: 44.0.3"));
        // `expires` (an epoch string) never overrides the lifetime measured from expires_in.
        let grant =
            parse(r#"{"access_token":"t","expires_in":"60","expires":"1686420498"}"#).unwrap();
        assert_eq!(grant.expires_in, 60);
        // Everything numeric may be a string.
        let grant = parse(
            r#"{"access_token":"t","expires_in":"120","legacy":"0","territory":"7","uid":"42"}"#,
        )
        .unwrap();
        assert_eq!(
            (grant.expires_in, grant.legacy, grant.territory.as_deref()),
            (120, Some(false), Some("7"))
        );
    }

    #[test]
    fn an_array_of_one_object_is_accepted() {
        let grant = parse(r#"[{"access_token":"t0k3n","expires_in":"60"}]"#).unwrap();
        assert_eq!(grant.expires_in, 60);
    }

    #[test]
    fn descriptions_name_fields_not_values() {
        let err = parse(r#"{"access_token":"t0k3nvalue","expires_in":"soon"}"#).unwrap_err();
        assert_eq!(err.describe(), "expires_in is not a number");
    }

    #[test]
    fn parses_token_info() {
        let info = parse_token_info(
            br#"{"token":"secret-token","client_id":"my-client","territory":"T1","domain":"abc",
                 "uid":"111@abc","expires":"2024-05-01 13:00:00","scope":"Office Manager",
                 "apiversion":"Version: 44.0.1"}"#,
        )
        .unwrap();
        assert_eq!(
            info,
            TokenInfo {
                client_id: Some("my-client".into()),
                territory: Some("T1".into()),
                domain: Some("abc".into()),
                uid: Some("111@abc".into()),
                scope: Some("Office Manager".into()),
                api_version: Some("Version: 44.0.1".into()),
                expires: Some("2024-05-01 13:00:00".into()),
            }
        );
        assert_eq!(parse_token_info(b"<xml><token>x</token></xml>"), None);
    }
}
