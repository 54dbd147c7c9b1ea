//! A self-imposed limit on the rate of NetSapiens requests, per API host: a token bucket (so
//! many requests per second, with a burst), so that a fresh install or the recovery after an
//! outage never fires thousands of grants at a portal whose firewall bans bursts. Requests that
//! wait are served earliest expiry first: back-pressure goes to the tokens that can best afford
//! it. The bucket arithmetic is pure (`Bucket`); the queue around it is async.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests per second and burst for one host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// A token bucket. Pure: the time is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst.max(1)),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst.max(1)));
        self.updated = now;
    }

    /// Whether the bucket has filled up again by `now` (a host idle that long can be
    /// forgotten: a new full bucket is the same).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut bucket = *self;
        bucket.refill(rate, now);
        bucket.tokens >= f64::from(rate.burst.max(1))
    }

    /// Takes one token if there is one; otherwise says how long until there is.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / rate.per_second))
        }
    }
}

/// Who waits, in serving order: earliest deadline (token expiry) first, then first come.
type Waiter = (Timestamp, u64);

struct HostState {
    bucket: Bucket,
    waiting: BTreeSet<Waiter>,
}

struct Host {
    state: Mutex<HostState>,
    changed: Notify,
}

/// The limiter for every host. With no rate, it lets everything through at once.
pub struct RateLimiter {
    rate: Option<Rate>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    pub fn new(rate: Option<Rate>) -> Self {
        Self {
            rate: rate.filter(|r| r.per_second > 0.0),
            hosts: Mutex::new(HashMap::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits for a turn to send one request to `host`. `deadline` is when the credential's
    /// token expires (or now, when it has none): the earliest deadline is served first. Returns
    /// how long it waited. Dropping the future gives the place in the queue up.
    pub async fn acquire(&self, host: &str, deadline: Timestamp) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let started = Instant::now();
        let host = self.host(host, rate, started);
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = (deadline, seq);
        lock(&host.state).waiting.insert(me);
        let place = Place {
            host: &host,
            waiter: me,
        };
        loop {
            let changed = host.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut state = lock(&host.state);
                if state.waiting.first() == Some(&me) {
                    match state.bucket.take(rate, Instant::now()) {
                        Ok(()) => {
                            state.waiting.remove(&me);
                            drop(state);
                            // Leaving the queue wakes the next in line.
                            drop(place);
                            return started.elapsed();
                        }
                        Err(wait) => Some(wait),
                    }
                } else {
                    None
                }
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn host(&self, host: &str, rate: Rate, now: Instant) -> Arc<Host> {
        let mut hosts = lock(&self.hosts);
        if !hosts.contains_key(host) {
            // A new host: forget the idle ones first (nobody holds them, their bucket is full
            // again), so hosts that credentials no longer name do not pile up.
            hosts.retain(|_, h| {
                Arc::strong_count(h) > 1 || {
                    let state = lock(&h.state);
                    !state.waiting.is_empty() || !state.bucket.is_full(rate, now)
                }
            });
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Host {
                    state: Mutex::new(HostState {
                        bucket: Bucket::full(rate, now),
                        waiting: BTreeSet::new(),
                    }),
                    changed: Notify::new(),
                })
            })
            .clone()
    }
}

/// A place in a host's queue, given up when the waiting future is dropped.
struct Place<'a> {
    host: &'a Host,
    waiter: Waiter,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        lock(&self.host.state).waiting.remove(&self.waiter);
        self.host.changed.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let r = rate(10.0, 3);
        let t0 = Instant::now();
        let mut bucket = Bucket::full(r, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(r, t0), Ok(()));
        }
        let wait = bucket.take(r, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(bucket.take(r, t0 + Duration::from_millis(100)), Ok(()));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(r, later), Ok(()));
        }
        assert!(bucket.take(r, later).is_err());
    }

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_are_served_at_the_rate_earliest_expiry_first() {
        let limiter = Arc::new(RateLimiter::new(Some(rate(2.0, 1))));
        // The burst is spent.
        assert_eq!(limiter.acquire("h", at(0)).await, Duration::ZERO);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, expires) in [("late", at(50)), ("soon", at(5)), ("middle", at(20))] {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let waited = limiter.acquire("h", expires).await;
                order.lock().unwrap().push((name, waited));
            }));
            // All three wait before the first token comes back.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["soon", "middle", "late"]);
        let waits: Vec<_> = order.iter().map(|(_, w)| w.as_millis()).collect();
        assert_eq!(waits, [500, 1000, 1500], "two per second");
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_have_buckets_of_their_own_and_no_rate_means_no_wait() {
        let limiter = RateLimiter::new(Some(rate(1.0, 1)));
        assert_eq!(limiter.acquire("a", at(0)).await, Duration::ZERO);
        assert_eq!(limiter.acquire("b", at(0)).await, Duration::ZERO);
        assert_eq!(limiter.acquire("a", at(0)).await, Duration::from_secs(1));
        let unlimited = RateLimiter::new(None);
        for _ in 0..100 {
            assert_eq!(unlimited.acquire("a", at(0)).await, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let limiter = Arc::new(RateLimiter::new(Some(rate(1.0, 1))));
        limiter.acquire("h", at(0)).await;
        // The most urgent waiter is cancelled: the next one is not blocked behind it.
        let urgent = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.acquire("h", at(1)).await })
        };
        tokio::task::yield_now().await;
        urgent.abort();
        let waited = limiter.acquire("h", at(30)).await;
        assert_eq!(waited, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_hosts_are_forgotten_when_a_new_one_comes() {
        let limiter = RateLimiter::new(Some(Rate {
            per_second: 1.0,
            burst: 2,
        }));
        let deadline: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        for i in 0..5 {
            limiter.acquire(&format!("host-{i}"), deadline).await;
        }
        assert_eq!(lock(&limiter.hosts).len(), 5);
        // Long enough for every bucket to fill up again.
        tokio::time::advance(Duration::from_secs(10)).await;
        limiter.acquire("another", deadline).await;
        assert_eq!(lock(&limiter.hosts).len(), 1);
    }
}
