//! Where "now" comes from, and the two ways a time is written. Scheduling code takes `now` as a
//! value; the reconciler and the NetSapiens client read it from a `Clock` so tests can control
//! time.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-01-01T10:00:00Z`.
pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A status time: RFC 3339 on the wire, whole seconds (so an unchanged time compares equal to
/// what the API server returns).
pub fn whole_seconds(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

/// `at + by`, held at the ends of time instead of overflowing. Times and durations that come
/// from users (a spec's durations, times read back from a Secret or an annotation) meet
/// arithmetic only through this and [`earlier`], so no value can panic a pass.
pub fn later(at: Timestamp, by: SignedDuration) -> Timestamp {
    at.checked_add(by).unwrap_or(if by.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `at - by`, held at the ends of time instead of overflowing (see [`later`]).
pub fn earlier(at: Timestamp, by: SignedDuration) -> Timestamp {
    at.checked_sub(by).unwrap_or(if by.is_negative() {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}
