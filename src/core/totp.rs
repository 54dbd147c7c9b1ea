//! Pure: the TOTP passcodes (RFC 6238: HMAC-SHA-1, 30 s steps, 6 digits, as authenticator apps
//! compute them) that complete an MFA user's login (`spec.mfa.totpSecretRef`), and the rule that
//! no passcode is sent twice. Computed by the `totp-rs` crate; no clock is read here.

use std::fmt;

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// The length of a TOTP step, in seconds.
pub const STEP_SECS: u64 = 30;

/// A base32 TOTP seed, decoded. `Debug` never shows it.
#[derive(Clone)]
pub struct TotpSeed {
    totp: Totp,
    /// A digest of the seed: the key under which the steps already used are remembered.
    key: String,
}

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed([redacted])")
    }
}

impl PartialEq for TotpSeed {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for TotpSeed {}

impl TotpSeed {
    /// Decodes a base32 seed as authenticator apps show it: case, spaces, `-` and `=` padding
    /// are ignored. The error names what is wrong, never the value.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if clean.is_empty() {
            return Err("is empty");
        }
        if !clean
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        {
            return Err("is not base32 (letters A-Z and digits 2-7)");
        }
        let secret = Secret::try_from_base32(&clean).map_err(|_| "is not base32")?;
        let bytes = secret.as_bytes().to_vec();
        // RFC 4226 asks for at least 128 bits; authenticator apps accept 80 (16 characters),
        // which some portals issue. Less than that is no seed.
        if bytes.len() < 10 {
            return Err("is shorter than 16 base32 characters (80 bits)");
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let key = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(STEP_SECS)
            .with_secret(bytes)
            .build_noncompliant();
        Ok(Self { totp, key })
    }

    /// The digest the used steps are remembered by (not the seed).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The 6-digit passcode of TOTP step `step`.
    pub fn passcode(&self, step: u64) -> Passcode {
        Passcode(
            self.totp
                .generate(step.saturating_mul(STEP_SECS))
                .to_string(),
        )
    }
}

/// A one-time passcode. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Passcode(String);

impl Passcode {
    /// The digits. Call it only where the passcode is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The TOTP step a Unix time falls in.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// Which step's passcode to send at `unix_secs`, given the last step already sent for this seed:
/// the current step, or, when that one was used, the next one. Returns the step and how many
/// seconds to wait for it to begin (0: now). A passcode is never sent twice, and never before
/// its step (a server accepts one step either side, but a client cannot know its clock is the
/// one that is right).
pub fn next_passcode_step(unix_secs: u64, last_used: Option<u64>) -> (u64, u64) {
    let now = step_of(unix_secs);
    let step = match last_used {
        Some(last) if last >= now => last.saturating_add(1),
        _ => now,
    };
    let wait = step
        .saturating_mul(STEP_SECS)
        .saturating_sub(unix_secs)
        .min(2 * STEP_SECS);
    (step, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1: the seed is the ASCII of "12345678901234567890"; the RFC
    /// lists 8 digits, of which authenticator apps show the last 6.
    #[test]
    fn rfc6238_sha1_vectors() {
        let seed = TotpSeed::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                seed.passcode(step_of(time)).expose(),
                &code[2..],
                "at {time}"
            );
        }
    }

    #[test]
    fn seeds_are_read_as_authenticator_apps_show_them() {
        let plain = TotpSeed::parse("JBSWY3DPEHPK3PXP").unwrap();
        for same in [
            "jbswy3dpehpk3pxp",
            "JBSW Y3DP EHPK 3PXP",
            "JBSWY3DPEHPK3PXP\n",
            "JBSW-Y3DP-EHPK-3PXP",
            "JBSWY3DPEHPK3PXP======",
        ] {
            let seed = TotpSeed::parse(same).unwrap();
            assert_eq!(seed, plain, "{same:?}");
            assert_eq!(seed.passcode(7).expose(), plain.passcode(7).expose());
        }
        for (bad, why) in [
            ("", "is empty"),
            ("  ", "is empty"),
            ("JBSWY3DPEHPK3PX1", "is not base32"),
            ("JBSWY3DP!", "is not base32"),
            ("JBSWY3DP", "is shorter"),
        ] {
            let err = TotpSeed::parse(bad).unwrap_err();
            assert!(err.starts_with(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn debug_never_shows_the_seed_and_the_key_is_a_digest() {
        let seed = TotpSeed::parse("JBSWY3DPEHPK3PXP").unwrap();
        let shown = format!("{seed:?} {seed:#?}");
        assert!(!shown.contains("JBSW"), "{shown}");
        assert_eq!(seed.key().len(), 32);
        assert!(!seed.key().contains("JBSW"));
        assert_ne!(
            seed.key(),
            TotpSeed::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
                .unwrap()
                .key()
        );
        assert_eq!(seed.passcode(1).expose().len(), 6);
        assert_eq!(format!("{:?}", seed.passcode(1)), "[redacted]");
    }

    #[test]
    fn a_used_step_is_never_sent_again() {
        // Fresh: the current step, at once.
        assert_eq!(next_passcode_step(3_000_010, None), (100_000, 0));
        // An older step was used: the current one, at once.
        assert_eq!(next_passcode_step(3_000_010, Some(99_999)), (100_000, 0));
        // The current step was used: wait for the next one (20 s here).
        assert_eq!(next_passcode_step(3_000_010, Some(100_000)), (100_001, 20));
        // At the last second of a used step: one second.
        assert_eq!(next_passcode_step(3_000_029, Some(100_000)), (100_001, 1));
        // A step ahead of this clock was used (another clock, or a clock set back): the one
        // after it, waiting at most two steps.
        assert_eq!(next_passcode_step(3_000_010, Some(100_001)), (100_002, 50));
        assert_eq!(next_passcode_step(3_000_010, Some(200_000)), (200_001, 60));
        // Never panics at the ends of time.
        let (step, wait) = next_passcode_step(u64::MAX, Some(u64::MAX));
        assert_eq!(step, u64::MAX);
        assert!(wait <= 60);
    }
}
