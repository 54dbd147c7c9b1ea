//! Pure timing: when a token is due for rotation, whether to mint one now, and how long to back
//! off after a failure. Every function takes `now` (or needs no time at all) and never reads a
//! clock; jitter is derived from a seed, so the same inputs always give the same answer.

use jiff::{SignedDuration, Timestamp};

use crate::core::clock::{earlier, later};
use crate::core::token::MAX_TOKEN_LIFETIME;

/// How long the kubelet may take to project an updated Secret into a pod's volume.
pub const KUBELET_PROPAGATION: SignedDuration = SignedDuration::from_secs(120);
/// Recorded issue times further in the future than this are not trusted.
const CLOCK_SKEW_TOLERANCE: SignedDuration = SignedDuration::from_secs(300);

/// The validity window of a token, as recorded when it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenTimes {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl TokenTimes {
    pub fn lifetime(&self) -> SignedDuration {
        self.expires_at.duration_since(self.issued_at)
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// `spec.refreshBefore` when it is not given.
pub const DEFAULT_REFRESH_BEFORE: SignedDuration = SignedDuration::from_mins(10);

/// How far before expiry to rotate: `refresh_before`, raised to the kubelet's propagation lag
/// when the lifetime allows, and never more than half the lifetime.
pub fn refresh_lead(lifetime: SignedDuration, refresh_before: SignedDuration) -> SignedDuration {
    let half = lifetime / 2;
    refresh_before.max(KUBELET_PROPAGATION.min(half)).min(half)
}

/// When to rotate a token: expiry minus the lead, minus a jitter in `[0, lead/2)` chosen by
/// `seed` (always earlier, never later), so that a given token always gets the same time, and
/// credentials whose tokens were issued together drift apart with every rotation (each new
/// token draws its own jitter) instead of rotating together every hour forever.
pub fn refresh_at(times: TokenTimes, refresh_before: SignedDuration, seed: u64) -> Timestamp {
    let lead = refresh_lead(times.lifetime(), refresh_before);
    let jitter = fraction_of(lead / 2, seed);
    earlier(earlier(times.expires_at, lead), jitter)
}

/// Why a token must be obtained now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MintReason {
    /// There is no token yet (or its Secret is gone or unreadable).
    NoToken,
    /// The token was obtained with other inputs (API URL, token API, client or subscriber).
    InputsChanged,
    /// The recorded times cannot be trusted (issued in the future, implausible lifetime).
    Untrusted,
    /// The rotation time has come.
    Due,
    /// The token has expired.
    Expired,
    /// Someone asked for a new token (`nsapi.io/renew-requested-at`).
    Requested,
    /// The API refused the token in place (revoked on the portal).
    Revoked,
}

impl MintReason {
    /// True when the token in place may not be refreshed but must be replaced by a password
    /// grant, because it belongs to other inputs.
    pub fn needs_password_grant(self) -> bool {
        matches!(self, MintReason::InputsChanged)
    }
}

/// Why no token is obtained now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// The token is fresh until its rotation time.
    Fresh,
    /// A recent failure with these same inputs is still backing off.
    BackingOff,
}

/// What to do about a credential's token now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Mint(MintReason),
    Wait {
        until: Timestamp,
        reason: WaitReason,
    },
}

/// The token currently in the output Secret, as far as timing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentToken {
    pub times: TokenTimes,
    /// Whether the token was obtained with the inputs the credential has now.
    pub inputs_match: bool,
}

/// The last failed attempt, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureGate {
    /// No new attempt before this time.
    pub retry_at: Timestamp,
    /// Whether the failed attempt used the inputs the credential has now. A change of input
    /// (a corrected password, say) lifts the gate at once.
    pub inputs_match: bool,
}

/// Decides whether to obtain a token now. Never mints a token that is not due: a fresh token
/// obtained with the current inputs means waiting, whatever triggered the call, unless a new
/// token was asked for (`renew`), which also lifts a failure's backoff.
pub fn decide(
    now: Timestamp,
    current: Option<CurrentToken>,
    refresh_before: SignedDuration,
    seed: u64,
    failure: Option<FailureGate>,
    renew: bool,
) -> Decision {
    let wanted = match current {
        None => Decision::Mint(MintReason::NoToken),
        Some(token) if !trusted(token.times, now) => Decision::Mint(MintReason::Untrusted),
        Some(token) if !token.inputs_match => Decision::Mint(MintReason::InputsChanged),
        Some(_) if renew => Decision::Mint(MintReason::Requested),
        Some(token) if !token.times.is_valid_at(now) => Decision::Mint(MintReason::Expired),
        Some(token) => {
            let at = refresh_at(token.times, refresh_before, seed);
            if now >= at {
                Decision::Mint(MintReason::Due)
            } else {
                Decision::Wait {
                    until: at,
                    reason: WaitReason::Fresh,
                }
            }
        }
    };
    if renew {
        // A request lifts the backoff of a failure.
        return wanted;
    }
    match (wanted, failure) {
        (Decision::Mint(_), Some(gate)) if gate.inputs_match && now < gate.retry_at => {
            Decision::Wait {
                until: gate.retry_at,
                reason: WaitReason::BackingOff,
            }
        }
        _ => wanted,
    }
}

/// At most this many tokens are replaced because a check found them refused, per credential
/// per hour. A check that refuses every new token (a permission error that looks like a
/// revocation) would otherwise cost a login, and a rollout restart, on every check.
pub const MAX_REVOCATIONS_PER_HOUR: usize = 3;

/// Whether a refused check is taken at its word (the token is replaced), given when tokens
/// were last replaced for that reason: fewer than [`MAX_REVOCATIONS_PER_HOUR`] in the hour
/// before `now`.
pub fn revocation_believed(recent: &[Timestamp], now: Timestamp) -> bool {
    let hour_ago = earlier(now, SignedDuration::from_hours(1));
    recent.iter().filter(|at| **at > hour_ago).count() < MAX_REVOCATIONS_PER_HOUR
}

/// When to check the token in place with the API next: `interval` after the last check, or
/// now if it was never checked.
pub fn next_verify(last: Option<Timestamp>, interval: SignedDuration, now: Timestamp) -> Timestamp {
    last.map_or(now, |at| later(at, interval))
}

fn trusted(times: TokenTimes, now: Timestamp) -> bool {
    let lifetime = times.lifetime();
    lifetime > SignedDuration::ZERO
        && lifetime <= MAX_TOKEN_LIFETIME
        && times.issued_at <= later(now, CLOCK_SKEW_TOLERANCE)
}

/// How a failure should be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Retrying may help soon: outages, timeouts, rate limits.
    Transient,
    /// The server refused the credentials or the request can never work as configured: retry
    /// rarely, so a subscriber's account is not locked and our IP is not banned.
    Refused,
}

/// The delay before the next attempt after `consecutive_failures` (at least 1) failures:
/// exponential (transient: 5 s doubling up to 5 min; refused: 5 min doubling up to 1 h), with
/// "equal jitter" (half fixed, half chosen by `seed`), and never shorter than a server's
/// `Retry-After` (itself capped at 1 h).
pub fn retry_delay(
    class: FailureClass,
    consecutive_failures: u32,
    retry_after: Option<SignedDuration>,
    seed: u64,
) -> SignedDuration {
    let (base, cap) = backoff_bounds(class);
    let doublings = consecutive_failures.saturating_sub(1).min(16);
    let full = (base * (1i32 << doublings)).min(cap);
    let delay = full / 2 + fraction_of(full / 2, seed);
    match retry_after {
        Some(after) => delay.max(after.min(SignedDuration::from_hours(1))),
        None => delay,
    }
}

/// The longest wait after transient failures (before jitter takes up to half of it).
pub const TRANSIENT_BACKOFF_CAP: SignedDuration = SignedDuration::from_mins(5);

/// The first delay and the cap of `class`'s backoff, before jitter takes up to half of each.
fn backoff_bounds(class: FailureClass) -> (SignedDuration, SignedDuration) {
    match class {
        FailureClass::Transient => (SignedDuration::from_secs(5), TRANSIENT_BACKOFF_CAP),
        FailureClass::Refused => (SignedDuration::from_mins(5), SignedDuration::from_hours(1)),
    }
}

/// How the docs state `class`'s backoff, e.g. `2.5-5 s at first, doubling up to 2.5-5 min`
/// (a test keeps the docs saying exactly this).
pub fn backoff_text(class: FailureClass) -> String {
    /// `d` as a number and a unit: `2.5`, `s`.
    fn split(d: SignedDuration) -> (String, &'static str) {
        let secs = d.as_secs_f64();
        let (value, unit) = match secs {
            s if s < 60.0 => (s, "s"),
            s if s < 3600.0 => (s / 60.0, "min"),
            s => (s / 3600.0, "h"),
        };
        (format!("{value}"), unit)
    }
    /// Equal jitter: from half of `full` to `full`.
    fn range(full: SignedDuration) -> String {
        let ((low, low_unit), (high, high_unit)) = (split(full / 2), split(full));
        if low_unit == high_unit {
            format!("{low}-{high} {high_unit}")
        } else {
            format!("{low} {low_unit}-{high} {high_unit}")
        }
    }
    let (base, cap) = backoff_bounds(class);
    format!("{} at first, doubling up to {}", range(base), range(cap))
}

/// A deterministic value in `[0, max)` picked by `seed`.
fn fraction_of(max: SignedDuration, seed: u64) -> SignedDuration {
    let millis = max.as_millis();
    if millis <= 0 {
        return SignedDuration::ZERO;
    }
    SignedDuration::from_millis((mix(seed) % millis as u64) as i64)
}

/// SplitMix64 finaliser: spreads nearby seeds over the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Picks a credential's jitter (`uid`): stable for a given token, different across credentials.
pub fn token_seed(uid: &str, token: Option<TokenTimes>) -> u64 {
    let issued = token
        .map(|t| t.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    seed_of(&[uid, &issued])
}

/// A stable seed from strings (e.g. a credential's UID and its token's issue time); FNV-1a.
pub fn seed_of(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Parses a Go-style duration (`10m`, `90s`, `1h30m`, `1.5h`, `500ms`), as the CRD schema allows.
pub fn parse_duration(input: &str) -> Result<SignedDuration, String> {
    let invalid = || format!("{input:?} is not a duration such as 10m, 90s or 1h30m");
    if input.is_empty() {
        return Err(invalid());
    }
    let mut total = SignedDuration::ZERO;
    let mut rest = input;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let (unit_secs, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(invalid());
        };
        let part = SignedDuration::try_from_secs_f64(value * unit_secs).map_err(|_| invalid())?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &tail[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn secs(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n)
    }
    fn hour_token() -> TokenTimes {
        TokenTimes {
            issued_at: ts("2026-01-01T10:00:00Z"),
            expires_at: ts("2026-01-01T11:00:00Z"),
        }
    }
    fn fresh(times: TokenTimes) -> Option<CurrentToken> {
        Some(CurrentToken {
            times,
            inputs_match: true,
        })
    }

    #[test]
    fn refused_checks_replace_at_most_three_tokens_an_hour() {
        let now = ts("2026-01-01T12:00:00Z");
        let at = |m: i64| earlier(now, SignedDuration::from_mins(m));
        assert!(revocation_believed(&[], now));
        assert!(revocation_believed(&[at(50), at(30)], now));
        assert!(!revocation_believed(&[at(50), at(30), at(10)], now));
        // Older than an hour no longer counts.
        assert!(revocation_believed(&[at(70), at(30), at(10)], now));
        // Times from the ends of time do not panic.
        assert!(revocation_believed(
            &[jiff::Timestamp::MAX],
            jiff::Timestamp::MIN
        ));
    }

    #[test]
    fn lead_is_clamped_to_half_the_lifetime_and_the_kubelet_lag() {
        let cases = [
            // (lifetime, refreshBefore, expected lead)
            (3600, 600, 600),   // the default
            (3600, 30, 120),    // raised to the kubelet's lag
            (3600, 3000, 1800), // at most half the lifetime
            (60, 600, 30),      // short test tokens: half the lifetime
            (200, 10, 100),     // lag wanted, but half the lifetime is less
            (3600, 0, 120),
        ];
        for (lifetime, before, expected) in cases {
            assert_eq!(
                refresh_lead(secs(lifetime), secs(before)),
                secs(expected),
                "lifetime {lifetime}, refreshBefore {before}"
            );
        }
    }

    #[test]
    fn jitter_is_only_ever_earlier_and_at_most_half_the_lead() {
        let times = hour_token();
        let latest = times.expires_at - secs(600);
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..500 {
            let at = refresh_at(times, secs(600), seed);
            assert!(
                at <= latest,
                "seed {seed} rotates later than the lead allows"
            );
            assert!(
                at > latest - secs(300),
                "seed {seed} jitters by half the lead or more"
            );
            distinct.insert(at);
        }
        assert!(
            distinct.len() > 400,
            "jitter does not spread: {}",
            distinct.len()
        );
        assert_eq!(
            refresh_at(times, secs(600), 7),
            refresh_at(times, secs(600), 7)
        );
    }

    #[test]
    fn short_lifetime_jitter_stays_within_half_the_lead() {
        let times = TokenTimes {
            issued_at: ts("2026-01-01T10:00:00Z"),
            expires_at: ts("2026-01-01T10:01:00Z"),
        };
        for seed in 0..100 {
            let at = refresh_at(times, secs(600), seed);
            assert!(at <= ts("2026-01-01T10:00:30Z"));
            assert!(at > ts("2026-01-01T10:00:15Z"));
        }
    }

    /// A fleet whose tokens were all issued in the same second: each rotation draws a new
    /// jitter, so the hourly wave flattens. Returns the rotation times of rotation `round`.
    fn fleet_rotations(size: u64, rounds: usize) -> Vec<Vec<Timestamp>> {
        let mut issued: Vec<Timestamp> = vec![ts("2026-01-01T10:00:00Z"); size as usize];
        let mut out = Vec::new();
        for _ in 0..rounds {
            let round: Vec<Timestamp> = issued
                .iter()
                .enumerate()
                .map(|(i, at)| {
                    let times = TokenTimes {
                        issued_at: *at,
                        expires_at: *at + secs(3600),
                    };
                    let seed = seed_of(&[&format!("uid-{i}"), &at.to_string()]);
                    refresh_at(times, secs(600), seed)
                })
                .collect();
            // The next token is issued at the rotation (whole seconds, as stored).
            issued = round
                .iter()
                .map(|t| Timestamp::from_second(t.as_second()).unwrap())
                .collect();
            out.push(round);
        }
        out
    }

    #[test]
    fn a_burst_spreads_out_over_the_rotations_that_follow() {
        let rounds = fleet_rotations(1000, 12);
        let spread = |round: &Vec<Timestamp>| {
            let (min, max) = (round.iter().min().unwrap(), round.iter().max().unwrap());
            max.duration_since(*min)
        };
        // The first rotation already spans most of five minutes; every later one is wider.
        assert!(spread(&rounds[0]) > secs(280), "{:?}", spread(&rounds[0]));
        assert!(
            spread(&rounds[11]) > spread(&rounds[0]) * 2,
            "{:?}",
            spread(&rounds[11])
        );
        // No minute of the twelfth rotation carries more than a tenth of the fleet.
        let mut per_minute = std::collections::BTreeMap::new();
        for at in &rounds[11] {
            *per_minute.entry(at.as_second() / 60).or_insert(0) += 1;
        }
        let busiest = per_minute.values().max().unwrap();
        assert!(*busiest <= 100, "{busiest} rotations in one minute");
    }

    #[test]
    fn decisions_at_fixed_times() {
        let t = hour_token();
        let rotation = refresh_at(t, secs(600), 1);
        let wait = |until| Decision::Wait {
            until,
            reason: WaitReason::Fresh,
        };
        let cases: Vec<(&str, Timestamp, Option<CurrentToken>, Decision)> = vec![
            (
                "no token",
                ts("2026-01-01T10:00:00Z"),
                None,
                Decision::Mint(MintReason::NoToken),
            ),
            (
                "just issued",
                ts("2026-01-01T10:00:01Z"),
                fresh(t),
                wait(rotation),
            ),
            (
                "early",
                ts("2026-01-01T10:40:00Z"),
                fresh(t),
                wait(rotation),
            ),
            (
                "one second before",
                rotation - secs(1),
                fresh(t),
                wait(rotation),
            ),
            ("due", rotation, fresh(t), Decision::Mint(MintReason::Due)),
            (
                "due, inside the lead",
                ts("2026-01-01T10:55:00Z"),
                fresh(t),
                Decision::Mint(MintReason::Due),
            ),
            (
                "expired",
                ts("2026-01-01T11:00:00Z"),
                fresh(t),
                Decision::Mint(MintReason::Expired),
            ),
            (
                "long expired",
                ts("2026-03-01T00:00:00Z"),
                fresh(t),
                Decision::Mint(MintReason::Expired),
            ),
            (
                "inputs changed",
                ts("2026-01-01T10:05:00Z"),
                Some(CurrentToken {
                    times: t,
                    inputs_match: false,
                }),
                Decision::Mint(MintReason::InputsChanged),
            ),
            (
                "small clock skew: issued a minute in our future",
                ts("2026-01-01T09:59:00Z"),
                fresh(t),
                wait(rotation),
            ),
            (
                "large clock skew: issued an hour in our future",
                ts("2026-01-01T09:00:00Z"),
                fresh(t),
                Decision::Mint(MintReason::Untrusted),
            ),
            (
                "expiry before issue",
                ts("2026-01-01T10:10:00Z"),
                fresh(TokenTimes {
                    issued_at: t.expires_at,
                    expires_at: t.issued_at,
                }),
                Decision::Mint(MintReason::Untrusted),
            ),
            (
                "implausible lifetime",
                ts("2026-01-01T10:10:00Z"),
                fresh(TokenTimes {
                    issued_at: t.issued_at,
                    expires_at: ts("2027-01-01T00:00:00Z"),
                }),
                Decision::Mint(MintReason::Untrusted),
            ),
        ];
        for (name, now, current, expected) in cases {
            assert_eq!(
                decide(now, current, secs(600), 1, None, false),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn failures_gate_minting_until_the_retry_time_unless_inputs_change() {
        let t = hour_token();
        let now = ts("2026-01-01T10:56:00Z");
        let retry_at = ts("2026-01-01T10:57:00Z");
        let gate = |inputs_match| {
            Some(FailureGate {
                retry_at,
                inputs_match,
            })
        };
        assert_eq!(
            decide(now, fresh(t), secs(600), 1, gate(true), false),
            Decision::Wait {
                until: retry_at,
                reason: WaitReason::BackingOff
            }
        );
        assert_eq!(
            decide(now, fresh(t), secs(600), 1, gate(false), false),
            Decision::Mint(MintReason::Due)
        );
        assert_eq!(
            decide(retry_at, fresh(t), secs(600), 1, gate(true), false),
            Decision::Mint(MintReason::Due)
        );
        // A gate never forces a call for a token that is not due.
        assert!(matches!(
            decide(
                ts("2026-01-01T10:10:00Z"),
                fresh(t),
                secs(600),
                1,
                gate(false),
                false
            ),
            Decision::Wait {
                reason: WaitReason::Fresh,
                ..
            }
        ));
        // No token and the same failing inputs: still wait.
        assert_eq!(
            decide(now, None, secs(600), 1, gate(true), false),
            Decision::Wait {
                until: retry_at,
                reason: WaitReason::BackingOff
            }
        );
    }

    #[test]
    fn a_renewal_request_mints_a_fresh_token_and_lifts_the_backoff() {
        let t = hour_token();
        let early = ts("2026-01-01T10:10:00Z");
        assert_eq!(
            decide(early, fresh(t), secs(600), 1, None, true),
            Decision::Mint(MintReason::Requested)
        );
        let gate = Some(FailureGate {
            retry_at: ts("2026-01-01T11:00:00Z"),
            inputs_match: true,
        });
        assert_eq!(
            decide(early, fresh(t), secs(600), 1, gate, true),
            Decision::Mint(MintReason::Requested)
        );
        // Changed inputs need the password grant: that reason wins.
        let stale = Some(CurrentToken {
            times: t,
            inputs_match: false,
        });
        assert_eq!(
            decide(early, stale, secs(600), 1, None, true),
            Decision::Mint(MintReason::InputsChanged)
        );
        assert_eq!(
            decide(early, None, secs(600), 1, None, true),
            Decision::Mint(MintReason::NoToken)
        );
    }

    #[test]
    fn checks_are_due_an_interval_after_the_last() {
        let now = ts("2026-01-01T10:10:00Z");
        assert_eq!(next_verify(None, secs(300), now), now);
        assert_eq!(
            next_verify(Some(ts("2026-01-01T10:08:00Z")), secs(300), now),
            ts("2026-01-01T10:13:00Z")
        );
    }

    #[test]
    fn the_docs_state_the_backoff_as_it_is() {
        let transient = backoff_text(FailureClass::Transient);
        let refused = backoff_text(FailureClass::Refused);
        assert_eq!(transient, "2.5-5 s at first, doubling up to 2.5-5 min");
        assert_eq!(refused, "2.5-5 min at first, doubling up to 30 min-1 h");
        // The text is what retry_delay does, over many seeds.
        let spread = |class, failures| {
            let delays: Vec<_> = (0..2000u64)
                .map(|seed| retry_delay(class, failures, None, seed))
                .collect();
            (*delays.iter().min().unwrap(), *delays.iter().max().unwrap())
        };
        let (low, high) = spread(FailureClass::Transient, 1);
        assert!(low >= SignedDuration::from_millis(2500) && high < SignedDuration::from_secs(5));
        let (low, high) = spread(FailureClass::Transient, 30);
        assert!(low >= SignedDuration::from_secs(150) && high < SignedDuration::from_mins(5));
        let (low, high) = spread(FailureClass::Refused, 30);
        assert!(low >= SignedDuration::from_mins(30) && high < SignedDuration::from_hours(1));
        let docs = [
            (
                "docs/nsapicredential.md",
                include_str!("../../docs/nsapicredential.md"),
            ),
            (
                "docs/troubleshooting.md",
                include_str!("../../docs/troubleshooting.md"),
            ),
            (
                "docs/reliability.md",
                include_str!("../../docs/reliability.md"),
            ),
        ];
        for (path, text) in docs {
            for stale in [
                "from 5 s up to 5 min",
                "from 5 s to 5 min",
                "from 5 min up to 1 h",
            ] {
                assert!(
                    !text.contains(stale),
                    "{path} says {stale:?}: write {transient:?} or {refused:?}"
                );
            }
        }
        assert!(docs[0].1.contains(&transient) && docs[0].1.contains(&refused));
        assert!(docs[1].1.contains(&transient));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let check = |class, n: u32, low: i64, high: i64| {
            for seed in 0..50 {
                let d = retry_delay(class, n, None, seed);
                assert!(
                    d >= secs(low) && d <= secs(high),
                    "{class:?} #{n} seed {seed}: {d:?} outside [{low}, {high}] s"
                );
            }
        };
        check(FailureClass::Transient, 1, 2, 5);
        check(FailureClass::Transient, 2, 5, 10);
        check(FailureClass::Transient, 5, 40, 80);
        check(FailureClass::Transient, 30, 150, 300);
        check(FailureClass::Refused, 1, 150, 300);
        check(FailureClass::Refused, 2, 300, 600);
        check(FailureClass::Refused, 100, 1800, 3600);
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let d = retry_delay(FailureClass::Transient, 1, Some(secs(120)), 3);
        assert_eq!(d, secs(120));
        let d = retry_delay(FailureClass::Transient, 1, Some(secs(86_400)), 3);
        assert_eq!(d, secs(3600));
        let d = retry_delay(FailureClass::Refused, 3, Some(secs(1)), 3);
        assert!(d >= secs(600));
    }

    #[test]
    fn seeds_are_stable_and_distinguish_parts() {
        assert_eq!(seed_of(&["a", "b"]), seed_of(&["a", "b"]));
        assert_ne!(seed_of(&["ab", ""]), seed_of(&["a", "b"]));
    }

    #[test]
    fn go_durations() {
        for (input, expected) in [
            ("10m", 600_000),
            ("90s", 90_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(input).unwrap(),
                SignedDuration::from_millis(expected),
                "{input}"
            );
        }
        for bad in ["", "10", "m", "10x", "-5m", "1h 30m", "1..5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
