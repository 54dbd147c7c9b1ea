//! RFC 6238 one-time passcodes (TOTP: HMAC-SHA1, 30 s steps, 6 digits) from a base32 seed, as
//! Google Authenticator computes them. Public so that tests can answer the simulator's MFA
//! second step. Functions of their arguments only: no clock is read here.

use ring::hmac;

/// The length of a TOTP step, in seconds.
pub const STEP_SECS: u64 = 30;

/// Decode a base32 seed (RFC 4648 alphabet, case, spaces and `=` padding ignored).
pub fn decode_seed(seed: &str) -> Option<Vec<u8>> {
    let clean: String = seed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if clean.is_empty() {
        return None;
    }
    data_encoding::BASE32_NOPAD.decode(clean.as_bytes()).ok()
}

/// The 6-digit HOTP value (RFC 4226) of `key` at `counter`.
pub fn hotp(key: &[u8], counter: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let code = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    format!("{:06}", code % 1_000_000)
}

/// The TOTP step number of a Unix time.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The passcode of a base32 `seed` at `unix_secs` (`None` for a seed that is not base32).
pub fn passcode(seed: &str, unix_secs: u64) -> Option<String> {
    decode_seed(seed).map(|key| hotp(&key, step_of(unix_secs)))
}

/// The step, among `step - 1 ..= step + 1`, whose passcode is `code`, if any.
pub fn matching_step(key: &[u8], code: &str, step: u64) -> Option<u64> {
    [step, step.saturating_sub(1), step + 1]
        .into_iter()
        .find(|s| hotp(key, *s) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890", last 6 digits.
        let key = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(hotp(key, step_of(t)), code, "t={t}");
        }
        // The same seed in base32.
        let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(passcode(seed, 59).as_deref(), Some("287082"));
        assert_eq!(
            passcode("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", 59).as_deref(),
            Some("287082")
        );
        assert_eq!(passcode("not base32!", 59), None);
    }

    #[test]
    fn accepts_one_step_either_side() {
        let key = b"12345678901234567890";
        let code = hotp(key, 100);
        assert_eq!(matching_step(key, &code, 100), Some(100));
        assert_eq!(matching_step(key, &code, 101), Some(100));
        assert_eq!(matching_step(key, &code, 99), Some(100));
        assert_eq!(matching_step(key, &code, 102), None);
    }
}
