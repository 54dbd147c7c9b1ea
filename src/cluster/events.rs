//! Publishing Kubernetes Events (`events.k8s.io/v1`), a repeat counted as a series of the first.
//!
//! kube's `Recorder` keeps every Event it published, whole (about 1.4 KiB each, in a table that
//! never shrinks), to count a repeat within six minutes on the first. At fleet size that table
//! was the largest thing the operator held: about 34 MB in a burst of 10,000 new credentials.
//! This publisher keeps, per Event still open to repeats, only what a repeat needs (its name,
//! namespace, count and when it was last seen: about 100 bytes), forgets it after six minutes,
//! and gives the table's room back when it empties.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;

use crate::cluster::Result;

/// How long a published Event stays open to repeats (as kube's and client-go's recorders).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// How often the book is swept of Events older than `SERIES_TTL`.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// An Event still open to repeats: what a repeat patches.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Open {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// What publishing an Event comes to: a new Event, or a repeat of an open one.
#[derive(Debug, PartialEq, Eq)]
enum Publish {
    Create,
    Repeat {
        namespace: Box<str>,
        name: Box<str>,
        count: i32,
    },
}

/// The Events open to repeats, by a digest of what makes two Events the same (type, reason,
/// action, regarding and related object; not the note, as kube and client-go).
#[derive(Debug)]
struct Book {
    open: HashMap<u64, Open>,
    swept: Instant,
}

impl Book {
    fn new(now: Instant) -> Self {
        Self {
            open: HashMap::new(),
            swept: now,
        }
    }

    /// What to do with an Event with digest `key` at `now`: a repeat of an open Event is counted
    /// on it (and kept open for another `SERIES_TTL`).
    fn publish(&mut self, key: u64, now: Instant) -> Publish {
        self.sweep(now);
        match self.open.get_mut(&key) {
            Some(open) if now.duration_since(open.last) < SERIES_TTL => {
                open.count = open.count.saturating_add(1);
                open.last = now;
                Publish::Repeat {
                    namespace: open.namespace.clone(),
                    name: open.name.clone(),
                    count: open.count,
                }
            }
            _ => Publish::Create,
        }
    }

    /// Records an Event just created (its first occurrence).
    fn created(&mut self, key: u64, namespace: &str, name: &str, now: Instant) {
        self.open.insert(
            key,
            Open {
                namespace: namespace.into(),
                name: name.into(),
                count: 1,
                last: now,
            },
        );
    }

    /// Forgets an Event that is gone (its repeat found nothing to patch).
    fn forget(&mut self, key: u64) {
        self.open.remove(&key);
    }

    /// Every `SWEEP_EVERY`: forgets Events older than `SERIES_TTL`, and gives back the room of
    /// a table much larger than what it holds (after a burst).
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.open
            .retain(|_, open| now.duration_since(open.last) < SERIES_TTL);
        if self.open.capacity() > 2 * self.open.len() + 64 {
            self.open.shrink_to_fit();
        }
    }
}

/// Publishes Events for the operator.
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
    digests: RandomState,
    book: Mutex<Book>,
}

impl Events {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            digests: RandomState::new(),
            book: Mutex::new(Book::new(Instant::now())),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn digest(&self, event: &Event, regarding: &ObjectReference) -> u64 {
        fn reference(r: &ObjectReference) -> [Option<&str>; 5] {
            [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid].map(Option::as_deref)
        }
        self.digests.hash_one((
            matches!(event.type_, EventType::Warning),
            &event.reason,
            &event.action,
            reference(regarding),
            event.secondary.as_ref().map(reference),
        ))
    }

    /// Publishes `event` about `regarding`: a new Event, or, for a repeat within six minutes, a
    /// higher count on the first.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<()> {
        let key = self.digest(event, regarding);
        let decided = self.book().publish(key, Instant::now());
        if let Publish::Repeat {
            namespace,
            name,
            count,
        } = decided
        {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Deleted (or expired) meanwhile: publish it anew.
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.book().forget(key);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let created = self.new_event(event, regarding, namespace);
        let name = created.metadata.name.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &created).await?;
        self.book().created(key, namespace, &name, Instant::now());
        Ok(())
    }

    fn new_event(&self, event: &Event, regarding: &ObjectReference, namespace: &str) -> K8sEvent {
        let now = Timestamp::now();
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_six_minutes_counts_on_the_first() {
        let start = Instant::now();
        let mut book = Book::new(start);
        assert_eq!(book.publish(1, start), Publish::Create);
        book.created(1, "ns", "cred.1", start);
        let later = start + Duration::from_secs(100);
        assert_eq!(
            book.publish(1, later),
            Publish::Repeat {
                namespace: "ns".into(),
                name: "cred.1".into(),
                count: 2
            }
        );
        // Another Event is not a repeat.
        assert_eq!(book.publish(2, later), Publish::Create);
        // Six minutes after the last repeat, it is a new Event again.
        assert_eq!(
            book.publish(1, later + Duration::from_secs(359)),
            Publish::Repeat {
                namespace: "ns".into(),
                name: "cred.1".into(),
                count: 3
            }
        );
        assert_eq!(
            book.publish(1, later + Duration::from_secs(359 + 360)),
            Publish::Create
        );
    }

    #[test]
    fn an_event_gone_is_created_anew() {
        let start = Instant::now();
        let mut book = Book::new(start);
        book.created(1, "ns", "cred.1", start);
        book.forget(1);
        assert_eq!(book.publish(1, start), Publish::Create);
    }

    #[test]
    fn old_events_are_swept_and_the_room_of_a_burst_is_given_back() {
        let start = Instant::now();
        let mut book = Book::new(start);
        for key in 0..10_000 {
            book.created(key, "ns", "cred", start);
        }
        let burst = book.open.capacity();
        assert!(burst >= 10_000);
        // Before the sweep interval nothing is swept.
        book.publish(u64::MAX, start + Duration::from_secs(10));
        assert_eq!(book.open.len(), 10_000);
        // Seven minutes on, one more Event: the burst's Events are forgotten, and their room.
        let later = start + Duration::from_secs(420);
        book.publish(u64::MAX, later);
        book.created(u64::MAX, "ns", "cred", later);
        assert_eq!(book.open.len(), 1);
        assert!(book.open.capacity() < 100, "{}", book.open.capacity());
    }
}
