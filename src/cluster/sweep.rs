//! The net under the triggers: once a minute, every credential a watch holds is checked against
//! the work queue's books (`telemetry::queue`), and one owed a pass that no trigger or timer
//! will start is started.
//!
//! A credential's pass is started by its watch event, a change of a Secret it uses, its timer
//! or its host's recovery; a pass that ends sets its timer or waits for a change. A trigger
//! lost on the way (kube's controller drops a request whose object it cannot find in its
//! store, and logs that at debug only) would leave a credential without a token, a status or
//! a metric series, with nothing to alert on. In a 20,000-credential benchmark, 1,181 new
//! credentials once stayed so for 22 minutes while the others rotated; two ways to lose a
//! pass were found and closed since (`controller`), but not the cause of that one. So a
//! credential is started again when two sweeps in a row find it either
//! - never triggered: the watch lists it, yet the queue has never heard of it; or
//! - stalled: due for a minute or more, not running, while workers were free at both sweeps
//!   (busy workers are a backlog, which `work_queue_depth` shows, not a loss).
//!
//! Starting one that kube still holds costs nothing: its scheduler merges the two requests.
//! Every credential started so is logged as a warning and counted in
//! `sweep_retriggered_total`; a value other than 0 is a bug worth reporting.
//! The sweep reads only memory: it sends no request to either API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::warn;

use crate::cluster::watched::Watched;
use crate::telemetry::metrics::{Metrics, SWEEP_FOUND_LABELS};
use crate::telemetry::queue::{QueueState, WorkQueue};

/// How often each watch's credentials are swept (`NSAPI_TEST_SWEEP_EVERY_MS` in tests).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How many names one warning lists (all are counted).
const NAMES_LOGGED: usize = 10;

/// Why a credential looks owed a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owed {
    NeverTriggered,
    /// Due since then.
    Stalled(Instant),
}

/// What one sweep found twice in a row.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub never_triggered: Vec<ObjectRef<Watched>>,
    pub stalled: Vec<ObjectRef<Watched>>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.never_triggered.is_empty() && self.stalled.is_empty()
    }
}

/// One watch's sweeps: what the last one suspected.
#[derive(Debug)]
pub struct Sweep {
    /// How often it runs: a credential due for longer, with workers free, is stalled.
    every: Duration,
    suspects: HashMap<ObjectRef<Watched>, Owed>,
    /// Whether every worker was busy at the last sweep.
    was_busy: bool,
}

impl Sweep {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            suspects: HashMap::new(),
            was_busy: false,
        }
    }

    /// Sweeps the credentials `listed` (namespace, name) at `now`, `busy` telling whether
    /// every worker runs a pass. Returns the credentials found owed a pass at this sweep and
    /// the one before.
    pub fn run<'a>(
        &mut self,
        listed: impl IntoIterator<Item = (&'a str, &'a str)>,
        queue: &WorkQueue,
        busy: bool,
        now: Instant,
    ) -> Found {
        let mut found = Found::default();
        let mut suspects = HashMap::new();
        for (namespace, name) in listed {
            let owed = match queue.state(namespace, name, now) {
                QueueState::Unknown => Owed::NeverTriggered,
                QueueState::Due(since)
                    if !busy && now.saturating_duration_since(since) >= self.every =>
                {
                    Owed::Stalled(since)
                }
                QueueState::Due(_) | QueueState::Running | QueueState::NotDue => continue,
            };
            let credential = ObjectRef::new(name).within(namespace);
            let again = self.suspects.get(&credential) == Some(&owed);
            match owed {
                Owed::NeverTriggered if again => found.never_triggered.push(credential),
                Owed::Stalled(_) if again && !self.was_busy => found.stalled.push(credential),
                _ => {
                    suspects.insert(credential, owed);
                }
            }
        }
        self.suspects = suspects;
        self.was_busy = busy;
        found
    }
}

/// The credentials of one watch's store that its sweeps find owed a pass, once a `every`
/// (the first sweep one `every` after the start), each entered in the work queue as triggered.
pub fn owed_passes(
    store: Store<Watched>,
    metrics: Arc<Metrics>,
    concurrency: u16,
    every: Duration,
) -> BoxStream<'static, ObjectRef<Watched>> {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold((ticks, Sweep::new(every)), move |(mut ticks, mut sweep)| {
        let (store, metrics) = (store.clone(), metrics.clone());
        async move {
            ticks.tick().await;
            let now = Instant::now();
            let queue = &metrics.queue;
            let busy = concurrency > 0 && queue.depth(now).1 >= usize::from(concurrency);
            let listed = store.state();
            let listed = listed.iter().filter(|c| !c.is_deleting()).map(|c| {
                let meta = c.meta();
                (
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                )
            });
            let found = sweep.run(listed, queue, busy, now);
            report(&found, &metrics, now);
            let owed: Vec<_> = found
                .never_triggered
                .into_iter()
                .chain(found.stalled)
                .collect();
            Some((futures::stream::iter(owed), (ticks, sweep)))
        }
    })
    .flatten()
    .boxed()
}

/// Logs and counts what a sweep found, and books each as triggered.
fn report(found: &Found, metrics: &Metrics, now: Instant) {
    let [never_triggered, stalled] = SWEEP_FOUND_LABELS;
    for (label, credentials) in [
        (never_triggered, &found.never_triggered),
        (stalled, &found.stalled),
    ] {
        if credentials.is_empty() {
            continue;
        }
        metrics.sweep_retriggered(label, credentials.len());
        for credential in credentials {
            let namespace = credential.namespace.as_deref().unwrap_or_default();
            metrics.queue.triggered(namespace, &credential.name, now);
        }
        let names: Vec<String> = credentials
            .iter()
            .take(NAMES_LOGGED)
            .map(|c| format!("{}/{}", c.namespace.as_deref().unwrap_or_default(), c.name))
            .collect();
        warn!(
            found = label,
            credentials = credentials.len(),
            ?names,
            "credentials owed a pass that nothing would start: starting them (a bug: please report it with this log)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(name: &str) -> ObjectRef<Watched> {
        ObjectRef::new(name).within("ns")
    }

    fn in_ns<'a>(names: &'a [&'a str]) -> impl Iterator<Item = (&'a str, &'a str)> {
        names.iter().map(|name| ("ns", *name))
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_credential_the_queue_never_heard_of_is_started_at_the_second_sweep_that_finds_it() {
        let queue = WorkQueue::default();
        let mut sweep = Sweep::new(MINUTE);
        let t0 = Instant::now();
        let listed = || in_ns(&["lost", "late"]);
        assert!(
            sweep.run(listed(), &queue, false, t0).is_empty(),
            "one sighting"
        );
        // `late` was only listed before its trigger reached the queue.
        queue.triggered("ns", "late", t0);
        let found = sweep.run(listed(), &queue, false, t0 + MINUTE);
        assert_eq!(found.never_triggered, [cred("lost")]);
        assert!(found.stalled.is_empty());
        // Started, it is looked at afresh.
        queue.triggered("ns", "lost", t0 + MINUTE);
        queue.started("ns", "lost");
        queue.started("ns", "late");
        assert!(
            sweep
                .run(listed(), &queue, false, t0 + 2 * MINUTE)
                .is_empty()
        );
    }

    #[test]
    fn a_pass_due_for_a_minute_with_workers_free_twice_is_stalled_and_a_backlog_is_not() {
        let queue = WorkQueue::default();
        let mut sweep = Sweep::new(MINUTE);
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let listed = || in_ns(&["stuck", "fresh", "running", "later"]);
        queue.triggered("ns", "stuck", t0);
        queue.triggered("ns", "running", t0);
        queue.started("ns", "running");
        queue.started("ns", "later");
        queue.finished("ns", "later", t0, Some(secs(3600)));
        // Its timer comes due at 2 minutes.
        queue.started("ns", "fresh");
        queue.finished("ns", "fresh", t0, Some(2 * MINUTE));
        // Due for a minute, but every worker was busy: a backlog.
        assert!(sweep.run(listed(), &queue, true, t0 + MINUTE).is_empty());
        assert!(
            sweep
                .run(listed(), &queue, false, t0 + 2 * MINUTE)
                .is_empty(),
            "busy before"
        );
        let found = sweep.run(listed(), &queue, false, t0 + 3 * MINUTE);
        assert_eq!(found.stalled, [cred("stuck")]);
        assert!(found.never_triggered.is_empty());
        // `fresh` had been due for a minute at one sweep only; `stuck` was started by the
        // last one, and if that was lost too, it is found again two sweeps later.
        let found = sweep.run(listed(), &queue, false, t0 + 4 * MINUTE);
        assert_eq!(found.stalled, [cred("fresh")]);
        let found = sweep.run(listed(), &queue, false, t0 + 5 * MINUTE);
        assert_eq!(found.stalled, [cred("stuck")]);
    }
}
