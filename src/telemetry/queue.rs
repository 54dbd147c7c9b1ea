//! The work queue as on-call sees it: how many credentials' passes are due and wait for one of
//! the `--concurrency` workers (`work_queue_depth`), and how many run (`reconciles_in_flight`).
//!
//! kube's controller keeps its queue to itself, so the controller tells this book what it
//! knows: a watch event or a Secret change makes a credential due at once (`triggered`), a pass
//! starts (`started`) and ends with the delay to its next pass (`finished`), a deleted
//! credential goes (`forget`). A credential is due from the earliest of those times; one
//! triggered while its pass runs is due again when that pass ends, as kube runs it then.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// When its next pass is due; `None`: only a change starts one.
    due: Option<Instant>,
    running: bool,
    /// Triggered while its pass ran.
    again: bool,
}

/// Where one credential stands in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Never triggered (or forgotten since).
    Unknown,
    Running,
    /// Due since then, and no pass has started.
    Due(Instant),
    /// Due later, or only at a change.
    NotDue,
}

/// Keyed by a 64-bit hash of the credential's namespace and name (8 bytes rather than two
/// strings per credential; a collision would merge two credentials' entries in this count,
/// nothing else). Secret changes name credentials by namespace and name, not UID.
#[derive(Debug, Default)]
pub struct WorkQueue {
    entries: Mutex<HashMap<u64, Entry>>,
}

fn key(namespace: &str, name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (namespace, name).hash(&mut h);
    h.finish()
}

impl WorkQueue {
    fn with(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Entry)) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(entries.entry(key(namespace, name)).or_default());
    }

    /// A change: the credential's pass is due now (or, while one runs, again after it).
    pub fn triggered(&self, namespace: &str, name: &str, now: Instant) {
        self.with(namespace, name, |e| {
            if e.running {
                e.again = true;
            } else {
                e.due = Some(e.due.map_or(now, |due| due.min(now)));
            }
        });
    }

    pub fn started(&self, namespace: &str, name: &str) {
        self.with(namespace, name, |e| {
            e.running = true;
            e.again = false;
            e.due = None;
        });
    }

    /// A pass ended; the next is due after `next` (`None`: at the next change), or at once if
    /// a change came while it ran.
    pub fn finished(&self, namespace: &str, name: &str, now: Instant, next: Option<Duration>) {
        self.with(namespace, name, |e| {
            e.running = false;
            e.due = if e.again {
                Some(now)
            } else {
                next.map(|d| {
                    now.checked_add(d)
                        .unwrap_or(now + Duration::from_secs(86_400 * 365))
                })
            };
            e.again = false;
        });
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&key(namespace, name));
    }

    /// Where the credential `namespace/name` stands at `now`.
    pub fn state(&self, namespace: &str, name: &str, now: Instant) -> QueueState {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key(namespace, name)) {
            None => QueueState::Unknown,
            Some(e) if e.running => QueueState::Running,
            Some(Entry { due: Some(due), .. }) if *due <= now => QueueState::Due(*due),
            Some(_) => QueueState::NotDue,
        }
    }

    /// (due and waiting, running) at `now`.
    pub fn depth(&self, now: Instant) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().fold((0, 0), |(waiting, running), e| {
            if e.running {
                (waiting, running + 1)
            } else if e.due.is_some_and(|due| due <= now) {
                (waiting + 1, running)
            } else {
                (waiting, running)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_waiting_from_when_it_is_due_until_its_pass_starts() {
        let q = WorkQueue::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        q.triggered("ns", "a", t0);
        q.triggered("ns", "b", t0);
        assert_eq!(q.depth(t0), (2, 0));
        q.started("ns", "a");
        assert_eq!(q.depth(t0), (1, 1));
        q.finished("ns", "a", t0, Some(s(60)));
        assert_eq!(q.depth(t0 + s(59)), (1, 0));
        // Its requeue comes due, and waits while no worker takes it.
        assert_eq!(q.depth(t0 + s(60)), (2, 0));
        // A change before the timer makes it due at once.
        q.finished("ns", "a", t0, Some(s(60)));
        q.triggered("ns", "a", t0 + s(1));
        assert_eq!(q.depth(t0 + s(1)), (2, 0));
        q.forget("ns", "b");
        assert_eq!(q.depth(t0 + s(1)), (1, 0));
    }

    #[test]
    fn the_state_of_one_credential() {
        let q = WorkQueue::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(q.state("ns", "a", t0), QueueState::Unknown);
        q.triggered("ns", "a", t0);
        assert_eq!(q.state("ns", "a", t0 + s(5)), QueueState::Due(t0));
        q.started("ns", "a");
        assert_eq!(q.state("ns", "a", t0 + s(5)), QueueState::Running);
        q.finished("ns", "a", t0 + s(5), Some(s(60)));
        assert_eq!(q.state("ns", "a", t0 + s(6)), QueueState::NotDue);
        assert_eq!(q.state("ns", "a", t0 + s(65)), QueueState::Due(t0 + s(65)));
        q.finished("ns", "a", t0 + s(5), None);
        assert_eq!(q.state("ns", "a", t0 + s(86_400)), QueueState::NotDue);
        assert_eq!(q.state("other", "a", t0), QueueState::Unknown);
    }

    #[test]
    fn a_change_during_a_pass_makes_it_due_again_when_the_pass_ends() {
        let q = WorkQueue::default();
        let t0 = Instant::now();
        q.started("ns", "a");
        q.triggered("ns", "a", t0);
        assert_eq!(q.depth(t0), (0, 1));
        q.finished("ns", "a", t0, Some(Duration::from_secs(600)));
        assert_eq!(q.depth(t0), (1, 0));
        // Awaiting a change only: never due by time.
        q.started("ns", "a");
        q.finished("ns", "a", t0, None);
        assert_eq!(q.depth(t0 + Duration::from_secs(86_400)), (0, 0));
    }
}
