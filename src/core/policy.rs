//! Pure: the operator-wide policy (allowed API hosts, plain http) and the spec checked against
//! it, with the fields the schema leaves as text parsed. Talks to nothing.

use jiff::SignedDuration;

use crate::core::base_url::ApiBaseUrl;
use crate::core::conditions::{Problem, Reason};
use crate::core::crd::{NsApiCredentialSpec, RefreshMethodSpec, TokenApiSpec};
use crate::core::schedule::parse_duration;
use crate::core::token::{RefreshMethod, TokenApi};

/// Operator-wide rules a credential must satisfy before any request is sent.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The API hosts credentials may call: a glob for the host (`*` matches any run of
    /// characters; IPv6 addresses in brackets), optionally with `:port` (`:*` for any port).
    /// Without a port, any port of that host is allowed. Empty means any host.
    pub allowed_api_hosts: Vec<String>,
    pub allow_insecure_http: bool,
}

impl Policy {
    /// Whether credentials may send their secrets to `url`'s host and port.
    pub fn allows(&self, url: &ApiBaseUrl) -> bool {
        self.allowed_api_hosts.is_empty()
            || self.allowed_api_hosts.iter().any(|entry| {
                let (host, port) = split_port(entry);
                glob_match(host, url.host())
                    && port.is_none_or(|p| p == "*" || p.parse::<u16>().ok() == url.port())
            })
    }

    /// Checks a base URL (`field` names it in messages): its shape, the http rule, and the
    /// allow-list.
    pub fn check_url(&self, field: &str, input: &str) -> Result<ApiBaseUrl, Problem> {
        let url = ApiBaseUrl::parse(input, self.allow_insecure_http)
            .map_err(|e| Problem::new(Reason::InvalidSpec, format!("{field}: {e}")))?;
        if !self.allows(&url) {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            return Err(Problem::new(
                Reason::ApiHostNotAllowed,
                format!(
                    "{field}: API host {:?} is not in the operator's allow-list ({}); ask the \
                     operator's administrator to add it with --allowed-api-host",
                    format!("{}{port}", url.host()),
                    self.allowed_api_hosts.join(", ")
                ),
            ));
        }
        Ok(url)
    }
}

/// `host:port` into its parts; an entry without a port (or an unbracketed IPv6 address) has
/// none.
fn split_port(entry: &str) -> (&str, Option<&str>) {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return (entry, None);
    };
    let is_port = port == "*" || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let whole_host = !host.contains(':') || host.ends_with(']');
    if is_port && whole_host {
        (host, Some(port))
    } else {
        (entry, None)
    }
}

/// A spec the operator can act on.
#[derive(Clone, Debug)]
pub struct ValidSpec {
    /// The primary API node (`spec.apiBaseUrl`).
    pub base_url: ApiBaseUrl,
    /// The other nodes, in order (`spec.fallbackApiBaseUrls`).
    pub fallbacks: Vec<ApiBaseUrl>,
    pub refresh_before: SignedDuration,
    /// How often to check the token with the API (`spec.verifyInterval`), at least a minute.
    pub verify_interval: Option<SignedDuration>,
    pub token_api: TokenApi,
    pub refresh_method: RefreshMethod,
}

impl ValidSpec {
    /// Every API node, the primary first.
    pub fn nodes(&self) -> impl Iterator<Item = &ApiBaseUrl> {
        std::iter::once(&self.base_url).chain(&self.fallbacks)
    }
}

/// Checks a spec against the operator's policy, and parses what the schema leaves as text.
pub fn validate(spec: &NsApiCredentialSpec, policy: &Policy) -> Result<ValidSpec, Problem> {
    let base_url = policy.check_url("spec.apiBaseUrl", &spec.api_base_url)?;
    let mut fallbacks = Vec::new();
    for (i, url) in spec.fallback_api_base_urls.iter().enumerate() {
        let url = policy.check_url(&format!("spec.fallbackApiBaseUrls[{i}]"), url)?;
        if url != base_url && !fallbacks.contains(&url) {
            fallbacks.push(url);
        }
    }
    let refresh_before = parse_duration(&spec.refresh_before)
        .map_err(|e| Problem::new(Reason::InvalidSpec, format!("spec.refreshBefore: {e}")))?;
    let verify_interval = match spec.verify_interval.as_deref() {
        None => None,
        Some(text) => {
            let interval = parse_duration(text).map_err(|e| {
                Problem::new(Reason::InvalidSpec, format!("spec.verifyInterval: {e}"))
            })?;
            if interval < SignedDuration::from_mins(1) {
                return Err(Problem::new(
                    Reason::InvalidSpec,
                    format!(
                        "spec.verifyInterval: {text:?} is shorter than a minute; each check is a request to the API"
                    ),
                ));
            }
            Some(interval)
        }
    };
    Ok(ValidSpec {
        base_url,
        fallbacks,
        refresh_before,
        verify_interval,
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
    fn allow_list_entries_may_name_a_port() {
        let policy = |entries: &[&str]| Policy {
            allowed_api_hosts: entries.iter().map(|e| e.to_string()).collect(),
            allow_insecure_http: true,
        };
        let url = |u: &str| ApiBaseUrl::parse(u, true).unwrap();
        for (entries, target, allowed) in [
            (
                &["portal.example.com"][..],
                "https://portal.example.com",
                true,
            ),
            (
                &["portal.example.com"],
                "https://portal.example.com:8443",
                true,
            ),
            (
                &["portal.example.com:8443"],
                "https://portal.example.com:8443",
                true,
            ),
            (
                &["portal.example.com:8443"],
                "https://portal.example.com:9443",
                false,
            ),
            (
                &["portal.example.com:8443"],
                "https://portal.example.com",
                false,
            ),
            (
                &["portal.example.com:443"],
                "https://portal.example.com",
                true,
            ),
            (
                &["portal.example.com:80"],
                "http://portal.example.com",
                true,
            ),
            (&["*.example.com:*"], "https://a.example.com:1234", true),
            (&["[::1]:8443"], "https://[::1]:8443", true),
            (&["[::1]:8443"], "https://[::1]:8444", false),
            (&["[::1]"], "https://[::1]:8444", true),
            (&["127.0.0.1"], "http://127.0.0.1:41234", true),
            (&["10.0.0.5"], "https://10.0.0.6", false),
            (
                &["portal.example.com"],
                "https://xn--prtal-jua.example.com",
                false,
            ),
        ] {
            assert_eq!(
                policy(entries).allows(&url(target)),
                allowed,
                "{entries:?} vs {target}"
            );
        }
        let problem = policy(&["portal.example.com:8443"])
            .check_url("spec.apiBaseUrl", "https://portal.example.com:9443")
            .unwrap_err();
        assert_eq!(problem.reason, Reason::ApiHostNotAllowed);
        assert!(
            problem.message.contains("portal.example.com:9443"),
            "{problem:?}"
        );
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
