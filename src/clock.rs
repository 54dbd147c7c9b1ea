//! Where "now" comes from. Scheduling code takes `now` as a value; the reconciler and the
//! NetSapiens client read it from a `Clock` so tests can control time.

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
