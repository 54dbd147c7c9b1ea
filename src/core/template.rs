//! Pure: the keys `spec.tokenSecret.template` renders into the output Secret.
//!
//! Templates use Jinja syntax (minijinja), restricted so that what a tenant writes can neither
//! reach outside the token's variables nor grow without bound, whatever it contains:
//! - only `{{ expression }}`, `{# comment #}` and `{% if %}`/`{% elif %}`/`{% else %}`/
//!   `{% endif %}`: no `set`, loops, macros, includes or imports;
//! - expressions take the variables below, literals, the filters below, comparisons, `and`,
//!   `or`, `not` and inline `if`; no arithmetic or concatenation (`+ - * / // % ** ~`), no
//!   attribute or index access, no list or map literals;
//! - no built-in filters, functions or globals (no file, network or environment access): only
//!   the filters registered here, each of which refuses to produce more than
//!   [`MAX_RENDERED_VALUE`] bytes;
//! - every value stops at [`MAX_RENDERED_VALUE`] bytes as it is written, and the engine's fuel
//!   bounds the instructions a render runs.
//!
//! The refresh token is not a variable: no template can put it into the Secret.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use jiff::Timestamp;
use minijinja::machinery::{Token, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};

use crate::core::clock::rfc3339;
use crate::core::crd::SecretDataTemplate;

/// What a template can see of a token (the variables are made from it).
#[derive(Clone, Copy, Debug)]
pub struct TokenFacts<'a> {
    pub access_token: &'a str,
    pub token_type: &'a str,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub api_base_url: &'a str,
    pub domain: Option<&'a str>,
    pub scope: Option<&'a str>,
}

/// The most bytes one rendered key may hold (and one filter may return).
pub const MAX_RENDERED_VALUE: usize = 64 * 1024;
/// Instructions one render may run.
const FUEL: u64 = 20_000;
/// The variables a template can use, each with what it holds (docs/templates.md lists them).
pub const VARIABLES: [(&str, &str); 11] = [
    ("token", "the access token"),
    (
        "authorization",
        "the Authorization header value: token_type, a space, the token",
    ),
    ("token_type", "the token type, as the API said (Bearer)"),
    ("expires_at", "when the token expires, RFC 3339 (UTC)"),
    (
        "expires_at_unix",
        "when the token expires, seconds since 1970",
    ),
    ("issued_at", "when the token was obtained, RFC 3339 (UTC)"),
    (
        "issued_at_unix",
        "when the token was obtained, seconds since 1970",
    ),
    (
        "api_base_url",
        "the base URL of the API node that issued the token (call this one)",
    ),
    ("served_by", "the host (and port) of that node"),
    (
        "domain",
        "the subscriber's domain, empty if the API did not say",
    ),
    (
        "scope",
        "the subscriber's scope, empty if the API did not say",
    ),
];
/// The filters a template can use.
pub const FILTERS: [(&str, &str); 7] = [
    (
        "tojson",
        "the value as a JSON literal (a quoted, escaped string for text)",
    ),
    ("b64encode", "standard base64 of the value's UTF-8 bytes"),
    (
        "urlencode",
        "the value percent-encoded for a URL query (form encoding)",
    ),
    ("upper", "upper case"),
    ("lower", "lower case"),
    ("trim", "without leading and trailing white space"),
    ("default", "default(\"x\"): x when the value is empty"),
];
/// Statements a template may hold.
const STATEMENTS: [&str; 4] = ["if", "elif", "else", "endif"];

/// Why a template cannot be used. The message names the key and never holds a variable's
/// value: checks run against example values, and a render with the real token reports only
/// the kind of failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.tokenSecret.template.data[{key:?}]: {why}")]
pub struct TemplateError {
    pub key: String,
    pub why: String,
}

/// Renders every key of `template` for `token`.
pub fn render(
    template: &SecretDataTemplate,
    token: TokenFacts<'_>,
) -> Result<BTreeMap<String, String>, TemplateError> {
    let env = environment();
    let vars = variables(token);
    template
        .data
        .iter()
        .map(|(key, source)| {
            let fail = |why: String| TemplateError {
                key: key.clone(),
                why,
            };
            check_syntax(source).map_err(fail)?;
            let value = render_one(env, key, source, vars.clone())
                // The values are real here: report the kind of failure, not the engine's text.
                .map_err(|e| {
                    fail(format!(
                        "could not be rendered with this token: {}",
                        e.kind()
                    ))
                })?;
            Ok((key.clone(), value))
        })
        .collect()
}

/// Checks every key of `template`: its syntax, and a render with example values as long as
/// real ones may be (a token of 2048 characters). Run before any token is obtained, so a
/// broken template costs no login.
pub fn check(template: &SecretDataTemplate) -> Result<(), TemplateError> {
    let (token, base, domain, scope) = (
        "T".repeat(2048),
        format!("https://{}.example.com/ns-api/", "n".repeat(200)),
        "d".repeat(200),
        "s".repeat(100),
    );
    let example = TokenFacts {
        access_token: &token,
        token_type: "Bearer",
        issued_at: Timestamp::UNIX_EPOCH,
        expires_at: Timestamp::UNIX_EPOCH,
        api_base_url: &base,
        domain: Some(&domain),
        scope: Some(&scope),
    };
    let env = environment();
    let vars = variables(example);
    for (key, source) in &template.data {
        let fail = |why: String| TemplateError {
            key: key.clone(),
            why,
        };
        check_syntax(source).map_err(fail)?;
        render_one(env, key, source, vars.clone()).map_err(|e| fail(describe(&e)))?;
    }
    Ok(())
}

fn render_one(
    env: &Environment<'_>,
    key: &str,
    source: &str,
    vars: Value,
) -> Result<String, Error> {
    let template = env.template_from_named_str(key, source)?;
    let mut out = Capped(Vec::new(), false);
    let rendered = template.render_captured_to(vars, &mut out);
    if out.1 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("the rendered value is longer than {MAX_RENDERED_VALUE} bytes"),
        ));
    }
    rendered?;
    String::from_utf8(out.0)
        .map_err(|_| Error::new(ErrorKind::BadSerialization, "the output is not UTF-8"))
}

/// The engine's message, with where it happened, for a check against example values.
fn describe(error: &Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// A writer that refuses to hold more than [`MAX_RENDERED_VALUE`] bytes (and says so).
struct Capped(Vec<u8>, bool);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_VALUE {
            self.1 = true;
            return Err(std::io::Error::other(format!(
                "the rendered value is longer than {MAX_RENDERED_VALUE} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses what the restricted syntax leaves out (see the module's documentation), reading the
/// template with the engine's own tokenizer, so what is checked is what would run.
fn check_syntax(source: &str) -> Result<(), String> {
    let mut after_block_start = false;
    for item in tokenize(source, false, SyntaxConfig::default()) {
        let (token, _) = item.map_err(|e| describe(&e))?;
        if after_block_start {
            after_block_start = false;
            match token {
                Token::Ident(word) if STATEMENTS.contains(&word) => continue,
                Token::Ident(word) => {
                    return Err(format!(
                        "the statement {{% {word} %}} is not allowed (only if, elif, else, endif)"
                    ));
                }
                other => return Err(format!("unexpected {other} after {{%")),
            }
        }
        match token {
            Token::BlockStart => after_block_start = true,
            Token::TemplateData(_)
            | Token::VariableStart
            | Token::VariableEnd
            | Token::BlockEnd
            | Token::Ident(_)
            | Token::Str(_)
            | Token::String(_)
            | Token::Int(_)
            | Token::Pipe
            | Token::Comma
            | Token::ParenOpen
            | Token::ParenClose
            | Token::Eq
            | Token::Ne
            | Token::Gt
            | Token::Gte
            | Token::Lt
            | Token::Lte => {}
            other => {
                return Err(format!(
                    "{other} is not allowed (templates hold variables, literals, filters, comparisons and if)"
                ));
            }
        }
    }
    Ok(())
}

/// The one engine, with its settings and filters: built once (every pass renders with it).
fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(build_environment)
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env.add_filter("tojson", |value: Value| {
        let json = match value.kind() {
            ValueKind::String => serde_json::to_string(value.as_str().unwrap_or_default())
                .map_err(|_| Error::new(ErrorKind::BadSerialization, "tojson failed"))?,
            ValueKind::Bool => value.is_true().to_string(),
            ValueKind::Number => match value.as_i64() {
                Some(number) => number.to_string(),
                None => value.to_string(),
            },
            ValueKind::None | ValueKind::Undefined => "null".to_owned(),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson takes text, a number, a boolean or none",
                ));
            }
        };
        capped(json)
    });
    env.add_filter("b64encode", |text: &str| {
        capped(base64::engine::general_purpose::STANDARD.encode(text))
    });
    env.add_filter("urlencode", |text: &str| {
        capped(url::form_urlencoded::byte_serialize(text.as_bytes()).collect())
    });
    env.add_filter("upper", |text: &str| capped(text.to_uppercase()));
    env.add_filter("lower", |text: &str| capped(text.to_lowercase()));
    env.add_filter("trim", |text: &str| text.trim().to_owned());
    env.add_filter("default", |value: Value, fallback: Value| {
        let empty = value.is_none() || value.as_str().is_some_and(str::is_empty);
        if empty { fallback } else { value }
    });
    env
}

/// A filter's result, refused past [`MAX_RENDERED_VALUE`] bytes.
fn capped(text: String) -> Result<String, Error> {
    if text.len() > MAX_RENDERED_VALUE {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("a filter's result is longer than {MAX_RENDERED_VALUE} bytes"),
        ));
    }
    Ok(text)
}

fn variables(token: TokenFacts<'_>) -> Value {
    let served_by = url::Url::parse(token.api_base_url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_default();
    let access = token.access_token;
    let mut vars: BTreeMap<String, Value> = BTreeMap::new();
    let mut put = |name: &str, value: Value| {
        vars.insert(name.to_owned(), value);
    };
    put("token", Value::from(access));
    put(
        "authorization",
        Value::from(format!("{} {access}", token.token_type)),
    );
    put("token_type", Value::from(token.token_type));
    put("expires_at", Value::from(rfc3339(token.expires_at)));
    put("expires_at_unix", Value::from(token.expires_at.as_second()));
    put("issued_at", Value::from(rfc3339(token.issued_at)));
    put("issued_at_unix", Value::from(token.issued_at.as_second()));
    put("api_base_url", Value::from(token.api_base_url));
    put("served_by", Value::from(served_by));
    put("domain", Value::from(token.domain.unwrap_or_default()));
    put("scope", Value::from(token.scope.unwrap_or_default()));
    debug_assert_eq!(vars.len(), VARIABLES.len());
    Value::from_object(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::MergePolicy;

    fn token() -> TokenFacts<'static> {
        TokenFacts {
            access_token: "90679e87dc2e6409211e822434122aaf9480",
            token_type: "Bearer",
            issued_at: "2026-01-01T10:00:00Z".parse().unwrap(),
            expires_at: "2026-01-01T11:00:00Z".parse().unwrap(),
            api_base_url: "https://api2.example.com:8443/ns-api/",
            domain: Some("abc-company"),
            scope: None,
        }
    }

    fn template(pairs: &[(&str, &str)]) -> SecretDataTemplate {
        SecretDataTemplate {
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            merge_policy: MergePolicy::Merge,
        }
    }

    fn one(source: &str) -> Result<String, TemplateError> {
        let t = template(&[("k", source)]);
        check(&t)?;
        Ok(render(&t, token())?.remove("k").unwrap())
    }

    #[test]
    fn an_env_file_a_json_config_and_a_single_key() {
        let t = template(&[
            ("token", "{{ token }}"),
            (
                "nsapi.env",
                "NS_TOKEN={{ token }}\nNS_API={{ api_base_url }}\n",
            ),
            (
                "config.json",
                r#"{"token": {{ token | tojson }}, "baseUrl": {{ api_base_url | tojson }}, "expires": {{ expires_at_unix }}}"#,
            ),
        ]);
        check(&t).unwrap();
        let out = render(&t, token()).unwrap();
        assert_eq!(out["token"], "90679e87dc2e6409211e822434122aaf9480");
        assert_eq!(
            out["nsapi.env"],
            "NS_TOKEN=90679e87dc2e6409211e822434122aaf9480\nNS_API=https://api2.example.com:8443/ns-api/\n"
        );
        let json: serde_json::Value = serde_json::from_str(&out["config.json"]).unwrap();
        assert_eq!(json["token"], "90679e87dc2e6409211e822434122aaf9480");
        assert_eq!(json["baseUrl"], "https://api2.example.com:8443/ns-api/");
        assert_eq!(json["expires"], 1767265200);
    }

    #[test]
    fn every_documented_variable_is_defined() {
        for (name, _) in VARIABLES {
            one(&format!("{{{{ {name} }}}}")).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(one("{{ served_by }}").unwrap(), "api2.example.com:8443");
        assert_eq!(
            one("{{ authorization }}").unwrap(),
            "Bearer 90679e87dc2e6409211e822434122aaf9480"
        );
        assert_eq!(one("{{ expires_at }}").unwrap(), "2026-01-01T11:00:00Z");
        assert_eq!(one("{{ scope }}").unwrap(), "");
    }

    #[test]
    fn filters_and_conditions() {
        assert_eq!(one("{{ domain | upper }}").unwrap(), "ABC-COMPANY");
        assert_eq!(one("{{ scope | default('none') }}").unwrap(), "none");
        assert_eq!(
            one("{{ domain | default('none') }}").unwrap(),
            "abc-company"
        );
        assert_eq!(one("{{ 'a b&c' | urlencode }}").unwrap(), "a+b%26c");
        assert_eq!(one("{{ 'x:y' | b64encode }}").unwrap(), "eDp5");
        assert_eq!(
            one("{{ 'say \"hi\"' | tojson }}").unwrap(),
            r#""say \"hi\"""#
        );
        assert_eq!(one("{{ expires_at_unix | tojson }}").unwrap(), "1767265200");
        assert_eq!(
            one("{% if domain %}D={{ domain }}{% else %}none{% endif %}").unwrap(),
            "D=abc-company"
        );
        assert_eq!(
            one("{% if scope == '' %}no scope{% endif %}").unwrap(),
            "no scope"
        );
        assert_eq!(one("a\n").unwrap(), "a\n", "a trailing newline is kept");
    }

    #[test]
    fn what_could_grow_or_reach_out_is_refused_before_it_runs() {
        for source in [
            "{{ token * 100000 }}",
            "{{ token ~ token }}",
            "{{ token + token }}",
            "{% set a = token %}{{ a }}",
            "{% set a %}{{ token }}{{ token }}{% endset %}{{ a }}",
            "{% for c in token %}{{ token }}{% endfor %}",
            "{% macro m() %}{{ token }}{% endmacro %}{{ m() }}",
            "{% include 'x' %}",
            "{{ [token, token] }}",
            "{{ token[0] }}",
            "{{ token.upper() }}",
            "{{ {'a': token} }}",
        ] {
            let error = one(source).expect_err(source);
            assert!(error.why.contains("not allowed"), "{source}: {error}");
        }
    }

    #[test]
    fn unknown_names_and_syntax_errors_say_where() {
        let error = one("{{ refresh_token }}").unwrap_err();
        assert_eq!(error.key, "k");
        assert!(error.why.contains("undefined"), "{error}");
        let error = one("{{ token | evil }}").unwrap_err();
        assert!(error.why.contains("unknown filter"), "{error}");
        let error = one("{{ range(10) }}").unwrap_err();
        assert!(
            error.why.contains("unknown function") || error.why.contains("undefined"),
            "{error}"
        );
        let error = one("{% if token %}").unwrap_err();
        assert!(error.why.contains("syntax error"), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("spec.tokenSecret.template.data[\"k\"]: ")
        );
    }

    #[test]
    fn output_is_bounded() {
        // 32 uses of a 2048-character token pass; the check's long example token finds a
        // template whose real output would not fit.
        let fits = "{{ token }}".repeat(30);
        one(&fits).unwrap();
        let too_long = "{{ token | tojson }}".repeat(40);
        let error = one(&too_long).unwrap_err();
        assert!(error.why.contains("longer than"), "{error}");
        let chained = format!("{{{{ token{} }}}}", " | b64encode".repeat(30));
        let error = one(&chained).unwrap_err();
        assert!(error.why.contains("longer than"), "{error}");
    }

    #[test]
    fn the_docs_list_every_variable_and_filter() {
        let doc = include_str!("../../docs/token-secret.md");
        for (name, what) in VARIABLES {
            let row = format!("| `{name}` | {what} |");
            assert!(
                doc.contains(&row),
                "docs/token-secret.md lacks the row {row}"
            );
        }
        let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
        assert!(rows >= VARIABLES.len());
        for (name, _) in FILTERS {
            assert!(
                doc.contains(&format!("`{name}")),
                "docs/token-secret.md lacks {name}"
            );
        }
    }

    #[test]
    fn a_render_failure_with_the_real_token_does_not_quote_it() {
        let secret = "s3cr3t".repeat(3000);
        let long = TokenFacts {
            access_token: &secret,
            ..token()
        };
        let t = template(&[("k", "{{ token }}{{ token }}{{ token }}{{ token }}")]);
        let error = render(&t, long).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
