//! Credentials waiting out an outage of their API host, woken when it answers again.
//!
//! A pass that fails because the host is down (no connection, a timeout, a 5xx without
//! `Retry-After`) backs off: 2.5-5 s at first, doubling up to 2.5-5 min. After an outage of a
//! few minutes, most of a fleet's credentials wait out minutes of backoff after the host is
//! back. So each such credential waits here too, under each of its nodes, and the first
//! answer from one of them (to any credential that reaches it the same way) wakes every
//! credential waiting on it, earliest expiry first; each then goes through the host's rate
//! limit as usual. Not woken: credentials told when to come back (`Retry-After`, a firewall's
//! ban, a 429), refused credentials, and anything the host answered but not usefully.
//! In memory only; a restart re-lists every credential anyway.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::cluster::watched::Watched;
use crate::core::base_url::ApiBaseUrl;
use crate::nsapi::nodes::Answers;

/// A node as a credential reaches it: its trust (the CA bundle's digest, `""` for the
/// operator's roots) and its base URL.
type Node = (String, String);

fn node(trust: &str, url: &ApiBaseUrl) -> Node {
    (trust.to_owned(), url.as_str().to_owned())
}

struct Waiter {
    namespace: String,
    name: String,
    /// When its token expires (when the pass failed, if it has none): who is woken first.
    deadline: Timestamp,
}

#[derive(Default)]
struct Inner {
    /// Who waits on each node, by UID.
    waiting: HashMap<Node, HashMap<String, Waiter>>,
    /// The nodes each UID waits on.
    nodes_of: HashMap<String, Vec<Node>>,
    /// Credentials woken whose next pass may ignore its backoff (once).
    lifted: HashSet<String>,
    /// Where woken credentials go: each watch's controller, by the namespace it watches
    /// (`None`: all).
    controllers: Vec<(Option<String>, mpsc::UnboundedSender<ObjectRef<Watched>>)>,
}

/// The credentials waiting on each node.
#[derive(Default)]
pub struct Outages(Mutex<Inner>);

impl Outages {
    /// The credential `uid` (`namespace/name`) failed because its host is down: it waits on
    /// each of `nodes` (replacing what it waited on before).
    pub fn wait<'n>(
        &self,
        uid: &str,
        (namespace, name): (&str, &str),
        deadline: Timestamp,
        trust: &str,
        nodes: impl Iterator<Item = &'n ApiBaseUrl>,
    ) {
        let mut inner = self.lock();
        inner.remove(uid);
        let nodes: Vec<Node> = nodes.map(|url| node(trust, url)).collect();
        for key in &nodes {
            inner.waiting.entry(key.clone()).or_default().insert(
                uid.to_owned(),
                Waiter {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    deadline,
                },
            );
        }
        inner.nodes_of.insert(uid.to_owned(), nodes);
    }

    /// The credential `uid` no longer waits (its pass ended otherwise, or it was deleted).
    pub fn forget(&self, uid: &str) {
        let mut inner = self.lock();
        inner.remove(uid);
        inner.lifted.remove(uid);
    }

    /// Whether the credential `uid` was woken by its host's answer: its next pass then ignores
    /// the backoff of the failure it waited out. Asked once.
    pub fn take_lifted(&self, uid: &str) -> bool {
        self.lock().lifted.remove(uid)
    }

    /// The credentials woken for the controller of the watch of `namespace` (`None`: all).
    pub fn woken(&self, namespace: Option<&str>) -> BoxStream<'static, ObjectRef<Watched>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        // A controller that stopped takes nothing more.
        inner.controllers.retain(|(_, tx)| !tx.is_closed());
        inner.controllers.push((namespace.map(str::to_owned), tx));
        futures::stream::unfold(rx, |mut rx| async move {
            let next = rx.recv().await?;
            Some((next, rx))
        })
        .boxed()
    }

    /// How many credentials wait.
    pub fn len(&self) -> usize {
        self.lock().nodes_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Answers for Outages {
    /// `url`, reached through `trust`, answered `by`: every other credential waiting on it is
    /// woken, earliest deadline first (`by` goes on with its pass).
    fn answered(&self, trust: &str, url: &ApiBaseUrl, by: &str) {
        let mut inner = self.lock();
        if inner.waiting.is_empty() {
            return;
        }
        inner.remove(by);
        let Some(waiting) = inner.waiting.remove(&node(trust, url)) else {
            return;
        };
        let mut woken: Vec<(String, Waiter)> = waiting.into_iter().collect();
        woken.sort_by_key(|(_, waiter)| waiter.deadline);
        for (uid, waiter) in woken {
            inner.remove(&uid);
            inner.lifted.insert(uid);
            let reference = ObjectRef::new(&waiter.name).within(&waiter.namespace);
            if let Some((_, controller)) = inner.controllers.iter().find(|(scope, tx)| {
                !tx.is_closed()
                    && scope
                        .as_deref()
                        .is_none_or(|scope| scope == waiter.namespace)
            }) {
                // Closed since (a shutdown): nothing to do.
                let _ = controller.send(reference);
            }
        }
    }
}

impl Inner {
    /// `uid` waits on nothing.
    fn remove(&mut self, uid: &str) {
        for key in self.nodes_of.remove(uid).into_iter().flatten() {
            if let Some(waiting) = self.waiting.get_mut(&key) {
                waiting.remove(uid);
                if waiting.is_empty() {
                    self.waiting.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ApiBaseUrl {
        ApiBaseUrl::parse(s, false).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[tokio::test]
    async fn an_answer_wakes_those_waiting_on_that_node_earliest_deadline_first() {
        let outages = Outages::default();
        // A controller that stopped is passed over.
        let stopped = outages.woken(Some("team"));
        let mut team = outages.woken(Some("team"));
        let mut all = outages.woken(None);
        drop(stopped);
        let (primary, fallback, other) = (
            url("https://a.example.com"),
            url("https://b.example.com"),
            url("https://c.example.com"),
        );
        outages.wait(
            "late",
            ("team", "late"),
            at(300),
            "",
            [&primary, &fallback].into_iter(),
        );
        outages.wait(
            "soon",
            ("team", "soon"),
            at(100),
            "",
            [&primary].into_iter(),
        );
        outages.wait(
            "elsewhere",
            ("ops", "x"),
            at(50),
            "",
            [&primary].into_iter(),
        );
        outages.wait("other", ("team", "other"), at(10), "", [&other].into_iter());
        outages.wait(
            "pinned",
            ("team", "pinned"),
            at(10),
            "digest",
            [&primary].into_iter(),
        );
        assert_eq!(outages.len(), 5);

        // Another host, or the same URL through another CA bundle: nobody here is woken.
        outages.answered("", &url("https://d.example.com"), "prober");
        assert_eq!(outages.len(), 5);

        outages.answered("", &primary, "prober");
        let names = |refs: Vec<ObjectRef<Watched>>| -> Vec<String> {
            refs.into_iter()
                .map(|r| format!("{}/{}", r.namespace.unwrap(), r.name))
                .collect()
        };
        let first = vec![team.next().await.unwrap(), team.next().await.unwrap()];
        assert_eq!(names(first), ["team/soon", "team/late"]);
        assert_eq!(names(vec![all.next().await.unwrap()]), ["ops/x"]);
        // "late" waited on its fallback too: woken once, it waits there no more.
        assert_eq!(outages.len(), 2, "other and pinned still wait");
        outages.answered("", &fallback, "prober");
        assert!(futures::FutureExt::now_or_never(team.next()).is_none());

        // The credential whose request got the answer goes on with its pass: not woken.
        outages.wait(
            "prober",
            ("team", "prober"),
            at(1),
            "",
            [&other].into_iter(),
        );
        outages.answered("", &other, "prober");
        assert_eq!(names(vec![team.next().await.unwrap()]), ["team/other"]);
        assert!(futures::FutureExt::now_or_never(team.next()).is_none());
        assert!(!outages.take_lifted("prober"));

        // Each woken credential's next pass may ignore its backoff, once.
        assert!(outages.take_lifted("soon"));
        assert!(!outages.take_lifted("soon"));
        assert!(outages.take_lifted("other"));
        assert!(!outages.take_lifted("pinned"), "not woken");
    }

    #[test]
    fn waiting_again_replaces_and_forgetting_clears() {
        let outages = Outages::default();
        let (a, b) = (url("https://a.example.com"), url("https://b.example.com"));
        outages.wait("u", ("ns", "n"), at(1), "", [&a].into_iter());
        // The spec moved to another host: it waits there only.
        outages.wait("u", ("ns", "n"), at(1), "", [&b].into_iter());
        outages.answered("", &a, "prober");
        assert!(!outages.take_lifted("u"));
        assert_eq!(outages.len(), 1);
        outages.forget("u");
        assert!(outages.is_empty());
        assert!(outages.lock().waiting.is_empty());
        // Woken, then deleted before its pass: nothing is kept.
        outages.wait("u", ("ns", "n"), at(1), "", [&b].into_iter());
        outages.answered("", &b, "prober");
        outages.forget("u");
        assert!(outages.lock().lifted.is_empty());
    }
}
