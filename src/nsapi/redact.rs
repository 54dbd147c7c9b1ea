//! Everything that makes text safe to show: server text scrubbed of the secrets a request sent
//! (in every encoding they could come back in), URLs without user info or query strings, and
//! error chains with their URLs redacted. The only way a URL or server text reaches a log line,
//! an error message or an Event.

use std::error::Error as StdError;

use url::Url;

use crate::core::text::truncate;

/// Server text in a message is cut to this many bytes.
pub(crate) const MAX_SERVER_TEXT: usize = 200;
/// If any secret sent is shorter than this, server text is left out of messages entirely:
/// scrubbing a two-letter password would shred every word and still prove nothing.
const MIN_SCRUBBABLE_SECRET: usize = 4;

/// Makes server text safe to show: removes every secret value sent in the request (raw and in
/// every encoding a server might echo it in), masks anything that looks like a token, collapses
/// whitespace and truncates. Returns `None` when nothing useful or safe is left.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> Option<String> {
    if secrets
        .iter()
        .any(|s| !s.is_empty() && s.chars().count() < MIN_SCRUBBABLE_SECRET)
    {
        return None;
    }
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut variants: Vec<String> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| encodings(s))
        .collect();
    // Longest first, so an encoded form is not half-replaced through a shorter raw match.
    variants.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    variants.dedup();
    for variant in &variants {
        if out.contains(variant.as_str()) {
            out = out.replace(variant.as_str(), "[redacted]");
        }
    }
    let out = mask_token_like(&out);
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    Some(truncate(&collapsed, MAX_SERVER_TEXT))
}

/// The forms in which a secret we sent could come back in a body.
fn encodings(secret: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent_upper = percent_encode_all(secret, false);
    let percent_lower = percent_encode_all(secret, true);
    let json = serde_json::to_string(secret)
        .map(|quoted| quoted[1..quoted.len() - 1].to_owned())
        .unwrap_or_default();
    let html = secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;");
    [
        secret.to_owned(),
        form,
        percent_upper,
        percent_lower,
        json,
        html,
    ]
    .into_iter()
    .filter(|v| !v.is_empty())
    .collect()
}

fn percent_encode_all(secret: &str, lower: bool) -> String {
    let mut out = String::with_capacity(secret.len() * 3);
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else if lower {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Masks runs of 24+ token characters that mix letters and digits: opaque tokens
/// (32-36 hex characters in practice) that the server might include, even ones we did not send.
fn mask_token_like(text: &str) -> String {
    const MIN_RUN: usize = 24;
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let mixed =
            run.chars().any(|c| c.is_ascii_digit()) && run.chars().any(|c| c.is_ascii_alphabetic());
        if run.len() >= MIN_RUN && mixed {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A URL made safe to print: user info removed, the query string replaced by `?[redacted]`,
/// the fragment dropped. `https://u:p@h/ns-api/oauth2/token/?client_secret=x` becomes
/// `https://h/ns-api/oauth2/token/?[redacted]`. Works on unparseable input too.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            // Both fail only for URLs without an authority, which have no user info to strip.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut out = String::from(parsed);
            if had_query {
                out.push_str("?[redacted]");
            }
            out
        }
        Err(_) => redact_unparsed(url),
    }
}

fn redact_unparsed(url: &str) -> String {
    let (before_query, had_query) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], url[at..].starts_with('?')),
        None => (url, false),
    };
    let mut out = match before_query.find("://") {
        Some(scheme_end) => {
            let rest = &before_query[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            let host_and_path = match authority.rfind('@') {
                Some(at) => &rest[at + 1..],
                None => rest,
            };
            format!("{}{}", &before_query[..scheme_end + 3], host_and_path)
        }
        None => before_query.to_owned(),
    };
    if had_query {
        out.push_str("?[redacted]");
    }
    out
}

/// An error and its sources as one line, repeated parts skipped, any URL redacted (a nested
/// error could still carry one).
pub(crate) fn render_error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = redact_urls_in(&e.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn redact_urls_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if !word.contains("://") {
                return word.to_owned();
            }
            let start = word.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
            let end = word
                .rfind(|c: char| !matches!(c, ')' | '(' | '"' | '\'' | ',' | ';' | ':' | '.'))
                .map_or(word.len(), |i| i + 1)
                .max(start);
            format!(
                "{}{}{}",
                &word[..start],
                redact_url(&word[start..end]),
                &word[end..]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Secrets with characters that every encoding changes; shared with the classification tests.
    pub(crate) const CLIENT_SECRET: &str = "cl1ent-S3cret/+&=value";
    pub(crate) const PASSWORD: &str = "p@ss word<&>\"pw\"";
    pub(crate) const REFRESH: &str = "c7bf58a0247e02efc6ee4340f01ed629";
    pub(crate) const SECRETS: &[&str] = &[CLIENT_SECRET, PASSWORD, REFRESH];

    #[test]
    fn scrub_removes_every_echo_of_a_secret() {
        let echoes = [
            format!("bad password {PASSWORD}"),
            format!("raw echo: client_secret={CLIENT_SECRET}&refresh_token={REFRESH}"),
            format!(
                "form echo: {}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("client_secret", CLIENT_SECRET)
                    .append_pair("password", PASSWORD)
                    .finish()
            ),
            format!("percent echo: {}", percent_encode_all(PASSWORD, false)),
            format!(
                "lower percent echo: {}",
                percent_encode_all(CLIENT_SECRET, true)
            ),
            format!("json echo: {}", serde_json::json!({ "password": PASSWORD })),
        ];
        for echo in &echoes {
            let scrubbed = scrub(echo, SECRETS).unwrap();
            for secret in SECRETS {
                assert!(!scrubbed.contains(secret), "{scrubbed}");
            }
            assert!(!scrubbed.contains("S3cret"), "{scrubbed}");
            assert!(
                !scrubbed.contains("ss%20word") && !scrubbed.contains("ss+word"),
                "{scrubbed}"
            );
            assert!(scrubbed.contains("[redacted]"), "{scrubbed}");
        }
    }
    #[test]
    fn scrub_masks_token_like_strings_it_did_not_send() {
        let scrubbed = scrub("token 90679e87dc2e6409211e822434122aaf9480 is invalid", &[]).unwrap();
        assert_eq!(scrubbed, "token [redacted] is invalid");
        // Ordinary long words are kept.
        let kept = scrub("Internationalization_is_a_long_word_without_digits", &[]).unwrap();
        assert!(kept.starts_with("Internationalization"));
    }

    #[test]
    fn short_secrets_withhold_server_text_entirely() {
        assert_eq!(scrub("password abc is wrong", &["abc"]), None);
        assert_eq!(scrub("fine", &["", "longenough"]).as_deref(), Some("fine"));
    }

    #[test]
    fn error_chains_have_urls_redacted() {
        let text = redact_urls_in(
            "error sending request for url (https://h/ns-api/oauth2/token/?client_secret=s3cr3t): timed out",
        );
        assert_eq!(
            text,
            "error sending request for url (https://h/ns-api/oauth2/token/?[redacted]): timed out"
        );
    }

    #[test]
    fn redact_url_strips_query_and_userinfo() {
        let cases = [
            (
                "https://h/ns-api/oauth2/token/?grant_type=refresh_token&client_secret=abc&refresh_token=def",
                "https://h/ns-api/oauth2/token/?[redacted]",
            ),
            ("https://user:pw@h:8443/ns-api/", "https://h:8443/ns-api/"),
            (
                "https://h/ns-api/oauth2/read?format=json#x",
                "https://h/ns-api/oauth2/read?[redacted]",
            ),
            (
                "https://h/ns-api/oauth2/token/",
                "https://h/ns-api/oauth2/token/",
            ),
            ("https://h/a#frag", "https://h/a"),
            ("not a url?secret=1", "not a url?[redacted]"),
            ("nope://us er:pw@h h/p?x=1", "nope://h h/p?[redacted]"),
            ("broken:// u:pw@host?x", "broken://host?[redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "input {input:?}");
        }
    }
}
