//! JSON Web Tokens as `v2/jwt` hands them out: `header.payload.signature`, base64url without
//! padding, signed with HMAC-SHA256 under a key made at start. Functions of their arguments
//! only: no clock, no state.

use data_encoding::BASE64URL_NOPAD;
use ring::hmac;
use serde_json::{Value, json};

/// Sign `claims` into a compact JWT.
pub(crate) fn sign(key: &hmac::Key, claims: &Value) -> String {
    let header =
        BASE64URL_NOPAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes());
    let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let tag = hmac::sign(key, signing_input.as_bytes());
    format!("{signing_input}.{}", BASE64URL_NOPAD.encode(tag.as_ref()))
}

/// The claims of a JWT this key signed (`None`: not three parts, not base64url, a bad
/// signature or a payload that is not a JSON object).
pub(crate) fn verify(key: &hmac::Key, token: &str) -> Option<Value> {
    let mut parts = token.trim().split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).ok()?;
    hmac::verify(key, format!("{header}.{payload}").as_bytes(), &signature).ok()?;
    let payload = BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims.is_object().then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_three_parts() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"test key");
        let claims = json!({"sub": "111@abc", "exp": 10, "jti": "x"});
        let token = sign(&key, &claims);
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify(&key, &token), Some(claims));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other key");
        assert_eq!(verify(&other, &token), None);
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'A');
        assert_eq!(verify(&key, &tampered), None);
        assert_eq!(verify(&key, "a.b"), None);
    }
}
