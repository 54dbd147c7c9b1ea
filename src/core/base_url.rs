//! The API base URL: parsed once, normalised to end in exactly one `/ns-api/`-style root, and
//! checked for what must never be in it (credentials, a query string, plain http unless allowed).

use std::fmt;

use url::Url;

/// A normalised NetSapiens API base URL, always ending in `/`, e.g.
/// `https://portal.example.com/ns-api/`.
///
/// Normalisation rules:
/// - no path (`https://host`, `https://host/`) becomes `https://host/ns-api/`;
/// - any other path is kept as the API root (`/ns-api`, or wherever a reverse proxy mounts it),
///   with empty segments dropped and exactly one trailing slash, so joining never doubles a slash;
/// - scheme and host are lower-cased and a default port is dropped (by the URL parser).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiBaseUrl {
    url: Url,
}

/// Why an API base URL was refused. Messages never echo the input (it could hold a password
/// or a query string); they say what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("the API base URL is empty: set it to https://<portal-host>/ns-api/")]
    Empty,
    #[error(
        "the API base URL is not an absolute URL: write it with its scheme, as https://<portal-host>/ns-api/"
    )]
    NotAbsolute,
    #[error(
        "the API base URL is not a valid URL ({reason}): write it as https://<portal-host>/ns-api/"
    )]
    Invalid { reason: String },
    #[error(
        "the API base URL uses the scheme `{scheme}`: only https is supported; write it as https://<portal-host>/ns-api/"
    )]
    UnsupportedScheme { scheme: String },
    #[error(
        "the API base URL uses plain http, which would send credentials unencrypted: use https, or start the operator with --allow-insecure-http (tests and demos only)"
    )]
    InsecureHttp,
    #[error("the API base URL has no host: write it as https://<portal-host>/ns-api/")]
    MissingHost,
    #[error(
        "the API base URL contains a user name or password (user:pass@host): remove it; credentials belong in the referenced Secrets"
    )]
    Userinfo,
    #[error("the API base URL contains a query string (`?...`): remove it")]
    Query,
    #[error("the API base URL contains a fragment (`#...`): remove it")]
    Fragment,
}

impl ApiBaseUrl {
    /// Parses and normalises `input`. `http` is accepted only when `allow_insecure_http` is set.
    pub fn parse(input: &str, allow_insecure_http: bool) -> Result<ApiBaseUrl, BaseUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(BaseUrlError::Empty);
        }
        let mut url = Url::parse(input).map_err(|err| match err {
            url::ParseError::RelativeUrlWithoutBase => BaseUrlError::NotAbsolute,
            // ParseError's messages are fixed strings ("invalid port number", ...): safe to show.
            other => BaseUrlError::Invalid {
                reason: other.to_string(),
            },
        })?;
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure_http => {}
            "http" => return Err(BaseUrlError::InsecureHttp),
            other => {
                return Err(BaseUrlError::UnsupportedScheme {
                    scheme: other.to_owned(),
                });
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(BaseUrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BaseUrlError::Userinfo);
        }
        if url.query().is_some() {
            return Err(BaseUrlError::Query);
        }
        if url.fragment().is_some() {
            return Err(BaseUrlError::Fragment);
        }
        // `portal.example.com.` is the same DNS name as `portal.example.com`: one spelling, so
        // that the allow-list sees what is called.
        if let Some(host) = url.host_str().and_then(|h| h.strip_suffix('.'))
            && !host.is_empty()
        {
            let host = host.to_owned();
            url.set_host(Some(&host))
                .map_err(|err| BaseUrlError::Invalid {
                    reason: err.to_string(),
                })?;
        }
        let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
        let path = if segments.is_empty() {
            "/ns-api/".to_owned()
        } else {
            format!("/{}/", segments.join("/"))
        };
        url.set_path(&path);
        Ok(ApiBaseUrl { url })
    }

    /// The host, without port (IPv6 addresses in brackets), e.g. for an allow-list check.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// `host` or `host:port` (the port when it is not the scheme's default): how metrics name
    /// an API node. Not a URL: no scheme, path or query.
    pub fn host_label(&self) -> String {
        match self.url.port() {
            Some(port) => format!("{}:{port}", self.host()),
            None => self.host().to_owned(),
        }
    }

    /// The port requests go to: the explicit one, or the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.url.port_or_known_default()
    }

    /// The normalised URL, e.g. `https://portal.example.com/ns-api/`.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// `self` joined with a relative path such as `oauth2/token/`.
    pub(crate) fn endpoint(&self, relative: &str) -> Url {
        let mut url = self.url.clone();
        let path = format!("{}{}", self.url.path(), relative.trim_start_matches('/'));
        url.set_path(&path);
        url
    }
}

impl fmt::Display for ApiBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_every_accepted_shape() {
        let cases = [
            (
                "https://portal.example.com",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com/",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com/ns-api",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com/ns-api/",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com/ns-api//",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com//ns-api",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://portal.example.com:8443/ns-api/",
                "https://portal.example.com:8443/ns-api/",
            ),
            (
                "https://portal.example.com:443/ns-api/",
                "https://portal.example.com/ns-api/",
            ),
            (
                "  HTTPS://Portal.Example.COM/ns-api/ \n",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://gw.example.com/netsapiens/ns-api",
                "https://gw.example.com/netsapiens/ns-api/",
            ),
            ("https://10.0.0.5:8443", "https://10.0.0.5:8443/ns-api/"),
            (
                "https://portal.example.com./ns-api/",
                "https://portal.example.com/ns-api/",
            ),
            (
                "https://pörtal.example.com/",
                "https://xn--prtal-jua.example.com/ns-api/",
            ),
            ("https://[::1]:8443/ns-api", "https://[::1]:8443/ns-api/"),
        ];
        for (input, expected) in cases {
            let parsed = ApiBaseUrl::parse(input, false)
                .unwrap_or_else(|err| panic!("{input:?} was refused: {err}"));
            assert_eq!(parsed.as_str(), expected, "input {input:?}");
            assert_eq!(parsed.to_string(), expected);
        }
    }

    #[test]
    fn host_excludes_port_and_path() {
        let base = ApiBaseUrl::parse("https://Portal.Example.com:8443/ns-api/", false).unwrap();
        assert_eq!(base.host(), "portal.example.com");
        let base = ApiBaseUrl::parse("https://[::1]:8443/", false).unwrap();
        assert_eq!(base.host(), "[::1]");
    }

    #[test]
    fn http_only_when_allowed() {
        assert_eq!(
            ApiBaseUrl::parse("http://127.0.0.1:8080", false),
            Err(BaseUrlError::InsecureHttp)
        );
        let base = ApiBaseUrl::parse("http://127.0.0.1:8080", true).unwrap();
        assert_eq!(base.as_str(), "http://127.0.0.1:8080/ns-api/");
    }

    #[test]
    fn refuses_what_must_not_be_in_a_base_url() {
        let cases = [
            ("", BaseUrlError::Empty),
            ("   ", BaseUrlError::Empty),
            ("portal.example.com/ns-api/", BaseUrlError::NotAbsolute),
            ("/ns-api/", BaseUrlError::NotAbsolute),
            (
                "ftp://portal.example.com/ns-api/",
                BaseUrlError::UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                "file:///etc/passwd",
                BaseUrlError::UnsupportedScheme {
                    scheme: "file".into(),
                },
            ),
            (
                "https://user:pa55word@portal.example.com/ns-api/",
                BaseUrlError::Userinfo,
            ),
            ("https://user@portal.example.com/", BaseUrlError::Userinfo),
            (
                "https://portal.example.com/ns-api/?client_secret=s3cr3t",
                BaseUrlError::Query,
            ),
            ("https://portal.example.com/ns-api/?", BaseUrlError::Query),
            (
                "https://portal.example.com/ns-api/#frag",
                BaseUrlError::Fragment,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ApiBaseUrl::parse(input, true),
                Err(expected),
                "input {input:?}"
            );
        }
        assert!(matches!(
            ApiBaseUrl::parse("https://portal.example.com:99999/", false),
            Err(BaseUrlError::Invalid { .. })
        ));
        assert!(matches!(
            ApiBaseUrl::parse("https://", false),
            Err(BaseUrlError::Invalid { .. } | BaseUrlError::MissingHost)
        ));
    }

    #[test]
    fn error_messages_never_echo_the_input() {
        let inputs = [
            "https://admin:pa55word@portal.example.com/ns-api/",
            "https://portal.example.com/ns-api/?client_secret=pa55word",
            "https://portal.example.com/ns-api/#pa55word",
            "https://portal.example.com:99999/pa55word",
        ];
        for input in inputs {
            let err = ApiBaseUrl::parse(input, false).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("pa55word"), "{input}: {shown}");
            assert!(shown.contains("https://<portal-host>/ns-api/") || shown.contains("remove it"));
        }
    }

    #[test]
    fn endpoint_joins_without_doubling_slashes() {
        let base = ApiBaseUrl::parse("https://portal.example.com/ns-api", false).unwrap();
        assert_eq!(
            base.endpoint("oauth2/token/").as_str(),
            "https://portal.example.com/ns-api/oauth2/token/"
        );
        assert_eq!(
            base.endpoint("/v2/tokens").as_str(),
            "https://portal.example.com/ns-api/v2/tokens"
        );
    }
}
