//! Pure: the operator-wide policy (allowed API hosts, plain http) and the spec checked against
//! it, with the fields the schema leaves as text parsed. Talks to nothing.

use jiff::SignedDuration;

use crate::core::base_url::ApiBaseUrl;
use crate::core::conditions::{Problem, Reason};
use crate::core::crd::{NsApiCredentialSpec, RefreshMethodSpec, TokenApiSpec};
use crate::core::schedule::parse_duration;
use crate::core::token::{MAX_TOKEN_LIFETIME, RefreshMethod, TokenApi};

/// The longest `spec.refreshBefore`: no token is taken to live longer (a longer lead only
/// means "rotate at half the lifetime").
pub const MAX_REFRESH_BEFORE: SignedDuration = MAX_TOKEN_LIFETIME;
/// The shortest `spec.verifyInterval`: each check is a request to the API.
pub const MIN_VERIFY_INTERVAL: SignedDuration = SignedDuration::from_mins(1);
/// The longest `spec.verifyInterval`: no token lives longer, so a longer interval never checks.
pub const MAX_VERIFY_INTERVAL: SignedDuration = MAX_TOKEN_LIFETIME;

/// Operator-wide rules a credential must satisfy before any request is sent.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The API hosts credentials may call: a glob for the host (a `*` matches any run of
    /// characters within one DNS label; IPv6 addresses in brackets), optionally with `:port`
    /// (`:*` for any port).
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
    /// How often to check the token with the API (`spec.verifyInterval`), between
    /// [`MIN_VERIFY_INTERVAL`] and [`MAX_VERIFY_INTERVAL`]; `None` when off or ignored.
    pub verify_interval: Option<SignedDuration>,
    pub token_api: TokenApi,
    pub refresh_method: RefreshMethod,
    /// Optional settings that are invalid and therefore ignored, each with what to fix: the
    /// token keeps rotating with what is valid (a typo in an opt-in feature never costs it).
    pub ignored: Vec<String>,
}

impl ValidSpec {
    /// Every API node, the primary first.
    pub fn nodes(&self) -> impl Iterator<Item = &ApiBaseUrl> {
        std::iter::once(&self.base_url).chain(&self.fallbacks)
    }
}

/// Checks a spec against the operator's policy, and parses what the schema leaves as text.
/// A problem with a required field stops the credential; an invalid optional setting (a
/// fallback node, `verifyInterval`) is left out and named in [`ValidSpec::ignored`].
pub fn validate(spec: &NsApiCredentialSpec, policy: &Policy) -> Result<ValidSpec, Problem> {
    let base_url = policy.check_url("spec.apiBaseUrl", &spec.api_base_url)?;
    let mut ignored = Vec::new();
    let mut fallbacks = Vec::new();
    for (i, url) in spec.fallback_api_base_urls.iter().enumerate() {
        match policy.check_url(&format!("spec.fallbackApiBaseUrls[{i}]"), url) {
            Ok(url) => {
                if url != base_url && !fallbacks.contains(&url) {
                    fallbacks.push(url);
                }
            }
            Err(problem) => ignored.push(format!(
                "{} (this node is not used until it is fixed)",
                problem.message
            )),
        }
    }
    let refresh_before = parse_duration(&spec.refresh_before)
        .and_then(|d| {
            within(
                &spec.refresh_before,
                d,
                SignedDuration::ZERO,
                MAX_REFRESH_BEFORE,
            )
        })
        .map_err(|e| Problem::new(Reason::InvalidSpec, format!("spec.refreshBefore: {e}")))?;
    let verify_interval = spec.verify_interval.as_deref().and_then(|text| {
        match parse_duration(text)
            .and_then(|d| within(text, d, MIN_VERIFY_INTERVAL, MAX_VERIFY_INTERVAL))
        {
            Ok(interval) => Some(interval),
            Err(e) => {
                ignored.push(format!(
                    "spec.verifyInterval: {e}; token checks are off until it is fixed"
                ));
                None
            }
        }
    });
    // A template that cannot render would leave the Secret without the keys the application
    // reads: the last Secret stays as it is, and no token is obtained until it is fixed.
    if let Some(template) = &spec.token_secret.template {
        crate::core::template::check(template)
            .map_err(|e| Problem::new(Reason::InvalidSpec, e.to_string()))?;
    }
    Ok(ValidSpec {
        base_url,
        fallbacks,
        refresh_before,
        verify_interval,
        token_api: match spec.token_api {
            TokenApiSpec::V1 => TokenApi::V1,
            TokenApiSpec::V2 => TokenApi::V2,
            TokenApiSpec::Auto => TokenApi::Auto,
            TokenApiSpec::Jwt => TokenApi::Jwt,
        },
        refresh_method: match spec.refresh_method {
            RefreshMethodSpec::Get => RefreshMethod::Get,
            RefreshMethodSpec::Post => RefreshMethod::Post,
        },
        ignored,
    })
}

/// `value` (written `text`) if it lies in `[min, max]`.
fn within(
    text: &str,
    value: SignedDuration,
    min: SignedDuration,
    max: SignedDuration,
) -> Result<SignedDuration, String> {
    let show = |d: SignedDuration| format!("{:#}", d);
    if value < min {
        Err(format!("{text:?} is shorter than {}", show(min)))
    } else if value > max {
        Err(format!("{text:?} is longer than {}", show(max)))
    } else {
        Ok(value)
    }
}

/// Case-insensitive match of a host against an allow-list glob, label by label: the two must
/// have as many dot-separated labels, and a `*` matches any run of characters within one
/// label, never a dot (as a TLS wildcard does). So `*.example.com` admits `a.example.com` but
/// not `a.b.example.com`, and `portal.example.*` never admits `portal.example.attacker.net`.
pub fn glob_match(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let patterns: Vec<&str> = pattern.split('.').collect();
    let labels: Vec<&str> = host.split('.').collect();
    patterns.len() == labels.len()
        && patterns
            .iter()
            .zip(&labels)
            .all(|(p, label)| label_match(p, label))
}

/// Whether one label matches one label pattern, `*` matching any run of characters.
fn label_match(pattern: &str, label: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == label;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if label.len() < first.len() + last.len() || !label.starts_with(first) || !label.ends_with(last)
    {
        return false;
    }
    let mut rest = &label[first.len()..label.len() - last.len()];
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
    fn durations_from_users_are_bounded() {
        let mut long = spec();
        long.refresh_before = "100000000h".into();
        let problem = validate(&long, &Policy::default()).unwrap_err();
        assert_eq!(problem.reason, Reason::InvalidSpec);
        assert!(problem.message.contains("longer than 168h"), "{problem:?}");
        long.refresh_before = "168h".into();
        assert!(validate(&long, &Policy::default()).is_ok());
    }

    #[test]
    fn an_invalid_optional_setting_is_ignored_and_named_not_fatal() {
        for (interval, why) in [
            ("30s", "shorter than 1m"),
            ("100000000h", "longer than 168h"),
            ("soon", "not a duration"),
        ] {
            let mut s = spec();
            s.verify_interval = Some(interval.into());
            let valid = validate(&s, &Policy::default()).unwrap();
            assert_eq!(valid.verify_interval, None, "{interval}");
            assert_eq!(valid.ignored.len(), 1, "{interval}");
            assert!(
                valid.ignored[0].contains("spec.verifyInterval") && valid.ignored[0].contains(why),
                "{interval}: {:?}",
                valid.ignored
            );
        }
        let mut s = spec();
        s.verify_interval = Some("5m".into());
        let valid = validate(&s, &Policy::default()).unwrap();
        assert_eq!(valid.verify_interval, Some(SignedDuration::from_mins(5)));
        assert!(valid.ignored.is_empty());

        // A fallback node that is not allowed is left out; the primary still serves.
        let mut s = spec();
        s.fallback_api_base_urls = vec![
            "https://dal.example.com/ns-api/".into(),
            "https://evil.attacker.net/ns-api/".into(),
        ];
        let policy = Policy {
            allowed_api_hosts: vec!["*.example.com".into()],
            allow_insecure_http: false,
        };
        let valid = validate(&s, &policy).unwrap();
        assert_eq!(valid.fallbacks.len(), 1);
        assert_eq!(valid.fallbacks[0].host(), "dal.example.com");
        assert_eq!(valid.ignored.len(), 1);
        assert!(
            valid.ignored[0].contains("fallbackApiBaseUrls[1]"),
            "{:?}",
            valid.ignored
        );
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
            ("ab*ba", "aba", false),
            ("*.example.com", "example.com.evil.org", false),
            // One label per `*`, as TLS wildcards: a `*` never crosses a dot.
            ("*.example.com", "a.b.example.com", false),
            ("portal.example.*", "portal.example.attacker.net", false),
            ("portal.example.*", "portal.example.net", true),
            ("*", "portal.example.com", false),
            ("*.*.example.com", "a.b.example.com", true),
            ("127.0.0.*", "127.0.0.1", true),
            ("127.0.0.*", "127.0.0.1.evil.org", false),
        ] {
            assert_eq!(glob_match(pattern, host), expected, "{pattern} vs {host}");
        }
    }
}
