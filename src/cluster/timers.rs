//! When each credential's next pass is due. A pass decides it (`record::Next`), a failed pass
//! its backoff; the timers of one watch fire as a stream of references that the controller
//! reconciles. kube's scheduler can do this too (`Action::requeue`), but keeps for every
//! credential two copies of its whole object reference, about 1 KiB: at 10,000 credentials
//! the largest holder of memory left. A timer here is a shared name and an instant, under
//! 200 bytes.
//!
//! The last pass decides: setting a credential's timer replaces the one it had (a user's change
//! that started a pass early does not leave the old timer behind), and `None` clears it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::names::{CredentialName, Namespaces};
use crate::cluster::watched::Watched;

#[derive(Default)]
struct Inner {
    /// Every timer, in the order they fire.
    due: BTreeSet<(Instant, Arc<CredentialName>)>,
    /// Each credential's timer.
    at: HashMap<Arc<CredentialName>, Instant>,
    namespaces: Namespaces,
}

/// The timers of one watch's credentials.
#[derive(Default)]
pub struct Timers {
    inner: Mutex<Inner>,
    /// Wakes the stream when a timer earlier than the one it waits for was set.
    changed: Notify,
}

impl Timers {
    /// The next pass over `credential` is due `after` from now, or only on a change (`None`).
    pub fn set(&self, credential: &Watched, after: Option<Duration>) {
        let (namespace, name) = (
            credential.namespace().unwrap_or_default(),
            credential.name_any(),
        );
        self.set_at(&namespace, &name, after.map(|after| Instant::now() + after));
    }

    /// Forgets a deleted credential's timer.
    pub fn clear(&self, credential: &Watched) {
        self.set(credential, None);
    }

    /// Forgets the timer of the credential `namespace/name` (deleted while a watch was down).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.set_at(namespace, name, None);
    }

    fn set_at(&self, namespace: &str, name: &str, at: Option<Instant>) {
        let mut inner = self.lock();
        let lookup = CredentialName {
            namespace: namespace.into(),
            name: name.into(),
        };
        let key = match inner.at.remove_entry(&lookup) {
            Some((key, before)) => {
                inner.due.remove(&(before, key.clone()));
                key
            }
            None => Arc::new(CredentialName {
                namespace: inner.namespaces.get(namespace),
                name: lookup.name,
            }),
        };
        let Some(at) = at else {
            inner.release(&key);
            return;
        };
        let earliest = inner.due.first().map(|(at, _)| *at);
        inner.due.insert((at, key.clone()));
        inner.at.insert(key, at);
        if earliest.is_none_or(|earliest| at < earliest) {
            self.changed.notify_one();
        }
    }

    /// The references of the credentials whose timer fired, as they fire (each fired timer is
    /// gone: the pass it starts sets the next). Ends never.
    pub fn fired(self: Arc<Self>) -> BoxStream<'static, ObjectRef<Watched>> {
        futures::stream::unfold(self, |timers| async move {
            let fired = timers.next_fired().await;
            Some((futures::stream::iter(fired), timers))
        })
        .flatten()
        .boxed()
    }

    /// Waits for the earliest timer, then takes every timer due by then.
    async fn next_fired(&self) -> Vec<ObjectRef<Watched>> {
        loop {
            let earliest = self.lock().due.first().map(|(at, _)| *at);
            let changed = self.changed.notified();
            match earliest {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => continue,
                    }
                }
                None => {
                    changed.await;
                    continue;
                }
            }
            let fired = self.take_due(Instant::now());
            if !fired.is_empty() {
                return fired;
            }
        }
    }

    fn take_due(&self, now: Instant) -> Vec<ObjectRef<Watched>> {
        let mut inner = self.lock();
        let mut fired = Vec::new();
        while let Some((at, _)) = inner.due.first()
            && *at <= now
        {
            let (_, key) = inner.due.pop_first().expect("a first timer");
            inner.at.remove(&key);
            fired.push(key.object_ref());
            inner.release(&key);
        }
        fired
    }

    /// How many credentials have a timer.
    pub fn len(&self) -> usize {
        self.lock().at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Lets go of a credential's name: no timer names it any more.
    fn release(&mut self, key: &Arc<CredentialName>) {
        if Arc::strong_count(key) == 1 {
            self.namespaces.release(&key.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(namespace: &str, name: &str) -> Watched {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("{namespace}-{name}")},
            "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                     "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
        }))
        .unwrap()
    }

    fn names(fired: Vec<ObjectRef<Watched>>) -> Vec<String> {
        fired
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_order_each_once() {
        let timers = Arc::new(Timers::default());
        let secs = Duration::from_secs;
        timers.set(&credential("a", "late"), Some(secs(30)));
        timers.set(&credential("a", "early"), Some(secs(10)));
        timers.set(&credential("b", "early"), Some(secs(10)));
        timers.set(&credential("a", "never"), None);
        assert_eq!(timers.len(), 3);
        let start = Instant::now();
        let mut fired = timers.clone().fired();
        let first = [fired.next().await.unwrap(), fired.next().await.unwrap()];
        assert_eq!(start.elapsed(), secs(10));
        assert_eq!(names(first.to_vec()), ["a/early", "b/early"]);
        assert_eq!(names(vec![fired.next().await.unwrap()]), ["a/late"]);
        assert_eq!(start.elapsed(), secs(30));
        assert!(timers.is_empty());
        // Nothing more fires until a timer is set.
        assert!(
            tokio::time::timeout(secs(7200), fired.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_pass_decides_and_an_earlier_timer_wakes_the_stream() {
        let timers = Arc::new(Timers::default());
        let secs = Duration::from_secs;
        let one = credential("a", "one");
        timers.set(&one, Some(secs(3000)));
        let start = Instant::now();
        let mut fired = timers.clone().fired();
        // The stream waits for 3000 s; a pass sets a later timer, then a sooner one.
        let waiting = tokio::spawn(async move { (fired.next().await, fired) });
        tokio::time::sleep(secs(1)).await;
        timers.set(&one, Some(secs(3500)));
        timers.set(&one, Some(secs(60)));
        let (first, mut fired) = waiting.await.unwrap();
        assert_eq!(names(vec![first.unwrap()]), ["a/one"]);
        assert_eq!(
            start.elapsed(),
            secs(61),
            "the last timer set, not the first"
        );
        assert!(timers.is_empty(), "a timer fires once");
        // Cleared (deleted, or waiting for a change): never fires.
        timers.set(&one, Some(secs(10)));
        timers.clear(&one);
        assert!(timers.is_empty());
        assert!(
            tokio::time::timeout(secs(7200), fired.next())
                .await
                .is_err()
        );
    }

    #[test]
    fn a_namespace_is_kept_once_and_only_while_a_timer_names_it() {
        let timers = Timers::default();
        for i in 0..100 {
            timers.set(
                &credential("team", &format!("c{i}")),
                Some(Duration::from_secs(i)),
            );
        }
        assert_eq!(timers.lock().namespaces.len(), 1);
        let shared = timers.lock().namespaces.get("team");
        assert_eq!(
            Arc::strong_count(&shared),
            102,
            "100 timers, the set, this test"
        );
        drop(shared);
        for i in 0..99 {
            timers.clear(&credential("team", &format!("c{i}")));
        }
        assert_eq!(timers.lock().namespaces.len(), 1);
        timers.clear(&credential("team", "c99"));
        assert!(timers.lock().namespaces.is_empty());
        assert!(timers.lock().due.is_empty());
    }
}
