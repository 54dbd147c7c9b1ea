//! Wire formats the API speaks besides JSON: `application/x-www-form-urlencoded` decoding,
//! the `expires` timestamp of `oauth2/read`, HTML error pages and XML escaping, and the
//! building of a plain answer. Functions of their arguments only: no state, no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// Decode `a=1&b=%40x+y` into pairs (`+` is a space; a bad escape is kept literally).
pub(crate) fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, no timezone, as `oauth2/read` reports `expires`.
pub(crate) fn format_expires(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A web-server style HTML error page.
pub(crate) fn html_page(status: u16, detail: &str) -> String {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
         <body><center><h1>{status} {reason}</h1></center><p>{}</p><hr><center>nginx</center></body></html>\n",
        xml_escape(detail)
    )
}

pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An answer with this status, `Content-Type` (none if `None`) and body.
pub(crate) fn respond(
    status: u16,
    content_type: Option<&'static str>,
    body: impl Into<Body>,
) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    res
}

pub(crate) const HTML: Option<&str> = Some("text/html; charset=UTF-8");

/// An HTML error page with this status, as a web server or load balancer answers.
pub(crate) fn html_response(status: u16, detail: &str) -> Response {
    respond(status, HTML, html_page(status, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decodes_forms_like_a_server() {
        let pairs =
            parse_urlencoded(b"username=111%40abc-company&password=a+b%2Bc&flag&bad=%zz&=x");
        assert_eq!(
            pairs,
            vec![
                ("username".into(), "111@abc-company".into()),
                ("password".into(), "a b+c".into()),
                ("flag".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("".into(), "x".into()),
            ]
        );
        // A doubly encoded `@` stays encoded once, so the username no longer matches.
        assert_eq!(parse_urlencoded(b"u=111%2540abc")[0].1, "111%40abc");
    }

    #[test]
    fn formats_expires_in_utc() {
        assert_eq!(format_expires(UNIX_EPOCH), "1970-01-01 00:00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(format_expires(t), "2024-02-29 12:34:56");
    }
}
