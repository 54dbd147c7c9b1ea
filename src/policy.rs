//! Pure: the operator-wide policy (allowed API hosts, plain http) and the spec checked against
//! it, with the fields the schema leaves as text parsed. Talks to nothing.

use jiff::SignedDuration;

use crate::conditions::{Problem, Reason};
use crate::crd::{NsApiCredentialSpec, RefreshMethodSpec, TokenApiSpec};
use crate::nsapi::{ApiBaseUrl, RefreshMethod, TokenApi};
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

/// Checks a spec against the operator's policy, and parses what the schema leaves as text.
pub fn validate(spec: &NsApiCredentialSpec, policy: &Policy) -> Result<ValidSpec, Problem> {
    let base_url = ApiBaseUrl::parse(&spec.api_base_url, policy.allow_insecure_http)
        .map_err(|e| Problem::new(Reason::InvalidSpec, format!("spec.apiBaseUrl: {e}")))?;
    if !policy.allowed_api_hosts.is_empty()
        && !policy
            .allowed_api_hosts
            .iter()
            .any(|pattern| glob_match(pattern, base_url.host()))
    {
        return Err(Problem::new(
            Reason::ApiHostNotAllowed,
            format!(
                "API host {:?} is not in the operator's allow-list ({}); ask the operator's \
                 administrator to add it with --allowed-api-host",
                base_url.host(),
                policy.allowed_api_hosts.join(", ")
            ),
        ));
    }
    let refresh_before = parse_duration(&spec.refresh_before)
        .map_err(|e| Problem::new(Reason::InvalidSpec, format!("spec.refreshBefore: {e}")))?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A spec with every optional field set, shared by the tests of the input modules.
    pub(crate) fn spec() -> NsApiCredentialSpec {
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
        assert_eq!(problem.reason, Reason::InvalidSpec);
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
        assert_eq!(problem.reason, Reason::ApiHostNotAllowed);
        assert!(problem.message.contains("portal.example.com"));

        let mut bad_duration = spec();
        bad_duration.refresh_before = "soon".into();
        let problem = validate(&bad_duration, &Policy::default()).unwrap_err();
        assert_eq!(problem.reason, Reason::InvalidSpec);
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
}
