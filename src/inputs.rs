//! Pure: what a credential needs before any request can be sent. Validates the spec against
//! the operator's policy, extracts the credentials from the referenced Secrets, and digests the
//! inputs a token depends on. Talks to nothing.

use jiff::SignedDuration;
use k8s_openapi::api::core::v1::Secret;

use crate::crd::{NsApiCredentialSpec, RefreshMethodSpec, TokenApiSpec};
use crate::nsapi::{
    ApiBaseUrl, ClientCredentials, RefreshMethod, SecretString, SubscriberCredentials, TokenApi,
};
use crate::schedule::parse_duration;

/// Operator-wide rules a credential must satisfy before any request is sent.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Globs (`*` matches any run of characters) for the API hosts credentials may call. Empty
    /// means any host.
    pub allowed_api_hosts: Vec<String>,
    pub allow_insecure_http: bool,
}

/// A spec the operator can act on.
#[derive(Clone, Debug)]
pub struct ValidSpec {
    pub base_url: ApiBaseUrl,
    pub refresh_before: SignedDuration,
    pub token_api: TokenApi,
    pub refresh_method: RefreshMethod,
}

/// Something to fix before the operator can do anything; `reason` is the condition reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

pub fn validate(spec: &NsApiCredentialSpec, policy: &Policy) -> Result<ValidSpec, Problem> {
    let base_url = ApiBaseUrl::parse(&spec.api_base_url, policy.allow_insecure_http)
        .map_err(|e| Problem::new("InvalidSpec", format!("spec.apiBaseUrl: {e}")))?;
    if !policy.allowed_api_hosts.is_empty()
        && !policy
            .allowed_api_hosts
            .iter()
            .any(|pattern| glob_match(pattern, base_url.host()))
    {
        return Err(Problem::new(
            "ApiHostNotAllowed",
            format!(
                "API host {:?} is not in the operator's allow-list ({}); ask the operator's \
                 administrator to add it with --allowed-api-host",
                base_url.host(),
                policy.allowed_api_hosts.join(", ")
            ),
        ));
    }
    let refresh_before = parse_duration(&spec.refresh_before)
        .map_err(|e| Problem::new("InvalidSpec", format!("spec.refreshBefore: {e}")))?;
    Ok(ValidSpec {
        base_url,
        refresh_before,
        token_api: match spec.token_api {
            TokenApiSpec::V1 => TokenApi::V1,
            TokenApiSpec::V2 => TokenApi::V2,
            TokenApiSpec::Auto => TokenApi::Auto,
        },
        refresh_method: match spec.refresh_method {
            RefreshMethodSpec::Get => RefreshMethod::Get,
            RefreshMethodSpec::Post => RefreshMethod::Post,
        },
    })
}

/// Case-insensitive glob match where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let text = text.to_ascii_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The value of `key` in `secret`, trimmed of surrounding whitespace (a trailing newline from
/// `kubectl create secret --from-file` is a common accident).
fn value(
    secret: Option<&Secret>,
    secret_name: &str,
    field: &str,
    key: &str,
) -> Result<String, Problem> {
    let secret = secret.ok_or_else(|| {
        Problem::new(
            "SecretMissing",
            format!("Secret {secret_name:?} ({field}) does not exist in this namespace"),
        )
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| {
            Problem::new(
                "KeyMissing",
                format!("Secret {secret_name:?} ({field}) has no key {key:?}"),
            )
        })?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| {
        Problem::new(
            "KeyMissing",
            format!("key {key:?} of Secret {secret_name:?} ({field}) is not UTF-8 text"),
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Problem::new(
            "KeyMissing",
            format!("key {key:?} of Secret {secret_name:?} ({field}) is empty"),
        ));
    }
    Ok(text.to_owned())
}

pub fn client_credentials(
    spec: &NsApiCredentialSpec,
    secret: Option<&Secret>,
) -> Result<ClientCredentials, Problem> {
    let r = &spec.client_secret_ref;
    Ok(ClientCredentials {
        client_id: value(secret, &r.name, "clientSecretRef", &r.client_id_key)?,
        client_secret: SecretString::new(value(
            secret,
            &r.name,
            "clientSecretRef",
            &r.client_secret_key,
        )?),
    })
}

pub fn subscriber_credentials(
    spec: &NsApiCredentialSpec,
    secret: Option<&Secret>,
) -> Result<SubscriberCredentials, Problem> {
    let r = &spec.subscriber_secret_ref;
    Ok(SubscriberCredentials {
        username: value(secret, &r.name, "subscriberSecretRef", &r.username_key)?,
        password: SecretString::new(value(
            secret,
            &r.name,
            "subscriberSecretRef",
            &r.password_key,
        )?),
    })
}

/// A digest of everything a token depends on: the API URL, the token API and both
/// credentials. It is an HMAC keyed with the client secret, so a pod that can read the output
/// Secret (where the digest is stored) cannot use it to guess the password offline.
pub fn fingerprint(
    spec: &ValidSpec,
    client: &ClientCredentials,
    subscriber: &SubscriberCredentials,
) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        client.client_secret.expose().as_bytes(),
    );
    let mut ctx = ring::hmac::Context::with_key(&key);
    let api = match spec.token_api {
        TokenApi::V1 => "v1",
        TokenApi::V2 => "v2",
        TokenApi::Auto => "auto",
    };
    for part in [
        spec.base_url.as_str(),
        api,
        &client.client_id,
        client.client_secret.expose(),
        &subscriber.username,
        subscriber.password.expose(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let tag = ctx.sign();
    let hex: String = tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn spec() -> NsApiCredentialSpec {
        serde_json::from_value(json!({
            "apiBaseUrl": "https://portal.example.com",
            "clientSecretRef": {"name": "client"},
            "subscriberSecretRef": {"name": "subscriber", "passwordKey": "pw"},
            "tokenSecret": {"name": "token"},
            "refreshBefore": "5m",
            "tokenApi": "auto",
            "refreshMethod": "POST",
        }))
        .unwrap()
    }

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_good_spec_is_normalised() {
        let valid = validate(&spec(), &Policy::default()).unwrap();
        assert_eq!(
            valid.base_url.as_str(),
            "https://portal.example.com/ns-api/"
        );
        assert_eq!(valid.refresh_before, SignedDuration::from_mins(5));
        assert_eq!(valid.token_api, TokenApi::Auto);
        assert_eq!(valid.refresh_method, RefreshMethod::Post);
    }

    #[test]
    fn policy_and_spec_problems_name_what_to_fix() {
        let mut http = spec();
        http.api_base_url = "http://127.0.0.1:8080/ns-api/".into();
        let problem = validate(&http, &Policy::default()).unwrap_err();
        assert_eq!(problem.reason, "InvalidSpec");
        assert!(problem.message.contains("apiBaseUrl"), "{problem:?}");
        let insecure_ok = Policy {
            allow_insecure_http: true,
            ..Policy::default()
        };
        assert!(validate(&http, &insecure_ok).is_ok());

        let allow = |hosts: &[&str]| Policy {
            allowed_api_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            allow_insecure_http: false,
        };
        assert!(validate(&spec(), &allow(&["*.example.com"])).is_ok());
        let problem = validate(&spec(), &allow(&["*.landstartel.co"])).unwrap_err();
        assert_eq!(problem.reason, "ApiHostNotAllowed");
        assert!(problem.message.contains("portal.example.com"));

        let mut bad_duration = spec();
        bad_duration.refresh_before = "soon".into();
        let problem = validate(&bad_duration, &Policy::default()).unwrap_err();
        assert_eq!(problem.reason, "InvalidSpec");
        assert!(problem.message.contains("refreshBefore"));
    }

    #[test]
    fn globs() {
        for (pattern, host, expected) in [
            ("portal.example.com", "portal.example.com", true),
            ("portal.example.com", "PORTAL.example.com", true),
            ("*.example.com", "portal.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "evil.com", false),
            ("portal.*.com", "portal.example.com", true),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("*.example.com", "example.com.evil.org", false),
        ] {
            assert_eq!(glob_match(pattern, host), expected, "{pattern} vs {host}");
        }
    }

    #[test]
    fn credentials_come_from_the_referenced_keys() {
        let s = spec();
        let client = secret(&[("client_id", b"abc"), ("client_secret", b"s3cr3t\n")]);
        let subscriber = secret(&[("username", b"111@abc-company"), ("pw", b"pa55")]);
        let c = client_credentials(&s, Some(&client)).unwrap();
        assert_eq!(c.client_id, "abc");
        assert_eq!(c.client_secret.expose(), "s3cr3t");
        let u = subscriber_credentials(&s, Some(&subscriber)).unwrap();
        assert_eq!(u.username, "111@abc-company");
        assert_eq!(u.password.expose(), "pa55");
    }

    #[test]
    fn missing_inputs_are_reported_without_values() {
        let s = spec();
        let problem = client_credentials(&s, None).unwrap_err();
        assert_eq!(problem.reason, "SecretMissing");
        assert!(problem.message.contains("\"client\""));
        let no_password = secret(&[("username", b"u"), ("password", b"wrong-key")]);
        let problem = subscriber_credentials(&s, Some(&no_password)).unwrap_err();
        assert_eq!(problem.reason, "KeyMissing");
        assert!(problem.message.contains("\"pw\""));
        assert!(!problem.message.contains("wrong-key"));
        let empty = secret(&[("client_id", b"  "), ("client_secret", b"x")]);
        assert_eq!(
            client_credentials(&s, Some(&empty)).unwrap_err().reason,
            "KeyMissing"
        );
    }

    #[test]
    fn fingerprint_changes_with_every_input_and_hides_them() {
        let valid = validate(&spec(), &Policy::default()).unwrap();
        let client = ClientCredentials {
            client_id: "abc".into(),
            client_secret: SecretString::from("s3cr3t"),
        };
        let user = SubscriberCredentials {
            username: "111@abc".into(),
            password: SecretString::from("pa55"),
        };
        let base = fingerprint(&valid, &client, &user);
        assert!(base.starts_with("v1:") && base.len() == 35, "{base}");
        assert_eq!(base, fingerprint(&valid, &client, &user));
        let mut other_pw = user.clone();
        other_pw.password = SecretString::from("pa56");
        assert_ne!(base, fingerprint(&valid, &client, &other_pw));
        let mut other_secret = client.clone();
        other_secret.client_secret = SecretString::from("s3cr3u");
        assert_ne!(base, fingerprint(&valid, &other_secret, &user));
        let mut other_api = valid.clone();
        other_api.token_api = TokenApi::V1;
        assert_ne!(base, fingerprint(&other_api, &client, &user));
        let mut other_method = valid.clone();
        other_method.refresh_method = RefreshMethod::Get;
        assert_eq!(base, fingerprint(&other_method, &client, &user));
    }
}
