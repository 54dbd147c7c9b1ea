//! Wiring: which credentials this instance acts on, the watches that trigger a reconcile (the
//! credentials, and the metadata of the Secrets a credential uses, mapped through the index),
//! the timers of each credential's next pass, how many reconciles run at once, and what happens
//! when a pass fails on the Kubernetes API; the sweep (`sweep.rs`) starts what they missed.
//! One pass itself is `reconciler.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::cluster::context::Context;
use crate::cluster::index::SecretIndex;
use crate::cluster::reconciler::reconcile;
use crate::cluster::sweep;
use crate::cluster::timers::Timers;
use crate::cluster::watched::Watched;
use crate::cluster::{Error, Result};
use crate::core::crd::{MANAGED_BY, MANAGED_BY_LABEL, NsApiCredential};
use crate::core::token_secret::ANNOTATION_CREDENTIAL;

/// Which credentials this operator instance acts on.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Only credentials whose labels match (for sharding a large fleet across deployments).
    pub label_selector: Option<String>,
}

/// Fails fast, with a hint, when the NsApiCredential CRD is not served. A namespace in scope
/// that the operator may not list (RBAC) is not a reason to stop: the others may work, and its
/// watch reports the denial.
pub async fn ensure_crd_served(client: &kube::Client, scope: &Scope) -> Result<()> {
    let apis: Vec<Api<NsApiCredential>> = if scope.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        scope
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    for api in apis {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                warn!(message = %status.message, "may not list NsApiCredentials here");
            }
            Err(error) => return Err(Error::CrdNotInstalled(error)),
        }
    }
    warn!("may not list NsApiCredentials anywhere in scope; the watches keep trying");
    Ok(())
}

/// How long a watch lasts before the API server ends it and it is resumed; also bounds how
/// long a dead watch connection goes unnoticed (the watcher's idle timeout is a little longer).
const WATCH_TIMEOUT_SECS: u32 = 60;

/// Runs the controller until `shutdown` resolves: one watch for the whole cluster, or one per
/// namespace in scope, with at most `concurrency` reconciles running at once.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let namespaces: Vec<Option<&str>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope
            .namespaces
            .iter()
            .map(|ns| Some(ns.as_str()))
            .collect()
    };
    let mut credential_config = watcher::Config::default()
        .any_semantic()
        .timeout(WATCH_TIMEOUT_SECS);
    if let Some(selector) = &scope.label_selector {
        credential_config = credential_config.labels(selector);
    }
    info!(namespaces = ?scope.namespaces, label_selector = ?scope.label_selector, concurrency, "controller started");
    let controllers = namespaces.into_iter().map(|namespace| {
        let (credentials, secrets): (Api<Watched>, Api<PartialObjectMeta<Secret>>) = match namespace
        {
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
        };
        let index = Arc::new(SecretIndex::default());
        let timers = Arc::new(Timers::default());
        let (reader, writer) = reflector::store();
        let credential_events = watcher(credentials, credential_config.clone())
            .default_backoff()
            .filter_map(stop_errors("NsApiCredentials"))
            .reflect(writer)
            .inspect_ok({
                let (index, timers, ctx) = (index.clone(), timers.clone(), ctx.clone());
                move |event| track(&index, &timers, &ctx, event)
            })
            .map_ok({
                let reader = reader.clone();
                let mut triggers = Triggers::default();
                move |event| starts(&mut triggers, event, &reader)
            })
            .try_flatten()
            .try_filter({
                let ctx = ctx.clone();
                move |credential| futures::future::ready(!ctx.loses_trigger(credential))
            })
            .inspect_ok({
                let ctx = ctx.clone();
                move |credential| {
                    ctx.metrics.queue.triggered(
                        &credential.namespace().unwrap_or_default(),
                        &credential.name_any(),
                        std::time::Instant::now(),
                    );
                }
            });
        // Metadata only: the operator never holds the data of Secrets it does not own.
        let secret_changes = watcher(
            secrets,
            watcher::Config::default().timeout(WATCH_TIMEOUT_SECS),
        )
        .default_backoff()
        .filter_map(stop_errors("Secrets"))
        .touched_objects();
        let owed = sweep::owed_passes(
            reader.clone(),
            ctx.metrics.clone(),
            concurrency,
            ctx.sweep_every,
        );
        let listed = reader.clone();
        Controller::for_stream(credential_events, reader)
            .with_config(controller::Config::default().concurrency(concurrency))
            .watches_stream(secret_changes, {
                let ctx = ctx.clone();
                move |secret| {
                    if ctx.own_writes.is_own(&secret.metadata) {
                        return Vec::new();
                    }
                    let mut using = credentials_using(&index, &secret);
                    // Only credentials the watch holds: kube's controller would drop a request
                    // for another (its owner, deleted, as its Secret is collected), which would
                    // then stay due in the work queue's books for good.
                    using.retain(|credential| {
                        listed.get(credential).is_some()
                            && !ctx.loses_trigger_of(
                                credential.namespace.as_deref().unwrap_or_default(),
                                &credential.name,
                            )
                    });
                    let now = std::time::Instant::now();
                    for credential in &using {
                        let namespace = credential.namespace.as_deref().unwrap_or_default();
                        ctx.metrics
                            .queue
                            .triggered(namespace, &credential.name, now);
                    }
                    using
                }
            })
            .reconcile_on(timers.clone().fired())
            .reconcile_on(ctx.outages.woken(namespace))
            .reconcile_on(owed)
            .graceful_shutdown_on(shutdown.clone())
            .run(
                {
                    let timers = timers.clone();
                    move |credential, ctx| {
                        let timers = timers.clone();
                        async move {
                            let next = reconcile(credential.clone(), ctx).await?;
                            timers.set(&credential, next.after());
                            Ok::<_, Error>(Action::await_change())
                        }
                    }
                },
                move |credential, error, ctx| {
                    let retry = retry_delay(&credential, error, &ctx);
                    timers.set(&credential, Some(retry));
                    Action::await_change()
                },
                ctx.clone(),
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    debug!(%error, "reconcile loop");
                }
            })
    });
    futures::future::join_all(controllers).await;
    info!("controller stopped");
}

/// A watch's errors end at the watch: it retries after a backoff of its own (0.8 s doubling to
/// 30 s). Passed on, each error would make the controller back off too, and that holds every
/// trigger, the timers of the credentials' next passes included: a watch that keeps failing
/// (Secrets the operator may not list, an API server answering "too old resource version" after
/// a restart) would hold back every rotation by up to 30 s per error.
fn stop_errors<T>(
    watched: &'static str,
) -> impl FnMut(watcher::Result<T>) -> futures::future::Ready<Option<watcher::Result<T>>> {
    move |event| {
        futures::future::ready(match event {
            Ok(event) => Some(Ok(event)),
            Err(error) => {
                let code = match &error {
                    watcher::Error::WatchError(status) => Some(status.code),
                    watcher::Error::InitialListFailed(kube::Error::Api(status))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(status))
                    | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
                    _ => None,
                };
                // 410: the watch resumed from a version the API server no longer keeps; it
                // lists again, as it should.
                if code == Some(410) {
                    debug!(watched, %error, "watch expired; listing again");
                } else {
                    warn!(watched, %error, "watch failed; retrying after its backoff");
                }
                None
            }
        })
    }
}

/// The credentials a watch event starts a pass for, as `Triggers` selects them (those of a
/// complete re-list one at a time from `listed`, kube's store).
fn starts(
    triggers: &mut Triggers,
    event: watcher::Event<Watched>,
    listed: &reflector::Store<Watched>,
) -> futures::stream::Iter<Starts> {
    let started: Starts = match triggers.select(event) {
        Start::Nothing => Box::new(std::iter::empty()),
        Start::One(credential) => Box::new(std::iter::once(Ok(*credential))),
        Start::EveryListed => Box::new(
            listed
                .state()
                .into_iter()
                .map(|credential| Ok(Watched::clone(&credential))),
        ),
    };
    futures::stream::iter(started)
}

type Starts = Box<dyn Iterator<Item = watcher::Result<Watched>> + Send>;

/// What a credential event starts.
#[derive(Debug)]
enum Start {
    Nothing,
    /// A pass over this credential.
    One(Box<Watched>),
    /// A pass over every credential the watch holds: a re-list is complete.
    EveryListed,
}

/// Which credential events start a pass. What the user changes (spec, so the generation;
/// labels; annotations) does; the operator's own status writes do not (each would cost a pass
/// that finds nothing to do). Every credential of a re-list does: a re-list follows a watch
/// that broke, and a credential waiting out a Kubernetes error is then looked at again at once
/// rather than at the end of its backoff. Timers are the requeue of each pass.
/// A re-list starts its credentials only when it is complete: kube's store takes them all at
/// once at its end, and kube's controller drops, without a word, a request for an object not
/// in its store, so a credential created while the watch was down and listed in a page before
/// the last would otherwise never get its pass. (The first list may start each at once: the
/// controller runs nothing before its store is complete.)
/// A re-list also prunes what it no longer lists (credentials deleted while the watch was
/// down never send a Delete).
#[derive(Default)]
struct Triggers {
    seen: HashMap<String, u64>,
    /// Whether a first list was complete.
    listed: bool,
    /// The UIDs listed so far by a re-list in progress.
    relisted: Option<std::collections::HashSet<String>>,
}

impl Triggers {
    fn select(&mut self, event: watcher::Event<Watched>) -> Start {
        match event {
            watcher::Event::Apply(credential) => {
                let seen = credential.user_part();
                let before = self.seen.insert(credential.uid().unwrap_or_default(), seen);
                if before != Some(seen) {
                    Start::One(Box::new(credential))
                } else {
                    Start::Nothing
                }
            }
            watcher::Event::InitApply(credential) => {
                let seen = credential.user_part();
                let uid = credential.uid().unwrap_or_default();
                if let Some(relisted) = &mut self.relisted {
                    relisted.insert(uid.clone());
                }
                self.seen.insert(uid, seen);
                if self.listed {
                    Start::Nothing
                } else {
                    Start::One(Box::new(credential))
                }
            }
            // Nothing to do: `track` forgets it, and kube's controller would drop the request
            // (the object has left its store).
            watcher::Event::Delete(credential) => {
                self.seen.remove(&credential.uid().unwrap_or_default());
                Start::Nothing
            }
            watcher::Event::Init => {
                self.relisted = Some(Default::default());
                Start::Nothing
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.seen.retain(|uid, _| relisted.contains(uid));
                }
                if std::mem::replace(&mut self.listed, true) {
                    Start::EveryListed
                } else {
                    Start::Nothing
                }
            }
        }
    }
}

/// Keeps the index current, and forgets what the operator holds for a deleted credential
/// (including one deleted while a watch was down, found by the re-list).
fn track(index: &SecretIndex, timers: &Timers, ctx: &Context, event: &watcher::Event<Watched>) {
    match event {
        watcher::Event::Apply(credential) | watcher::Event::InitApply(credential) => {
            // Seen again (a selector that matches it again after a Delete event): not gone.
            if let Some(uid) = credential.uid() {
                ctx.gone.exhume(&uid);
            }
            index.apply(credential)
        }
        watcher::Event::Delete(credential) => {
            index.delete(credential);
            timers.clear(credential);
            ctx.forget(credential);
        }
        watcher::Event::Init => index.relist_started(),
        watcher::Event::InitDone => {
            let gone = index.relist_done();
            info!(credentials = index.len(), gone = gone.len(), "watch listed");
            for gone in gone {
                timers.forget(&gone.namespace, &gone.name);
                ctx.forget_by_name(&gone.namespace, &gone.name, gone.uid.as_deref());
            }
        }
    }
}

/// The credentials a Secret matters to: those that use it (one lookup in the index), and the
/// one that controls it.
fn credentials_using(index: &SecretIndex, secret: &impl Resource) -> Vec<ObjectRef<Watched>> {
    let meta = secret.meta();
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut refs = index.credentials_using(ns, name);
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true) && o.kind == "NsApiCredential")
        .map(|o| o.name.as_str());
    // A Secret retained without an owner (deletionPolicy: Retain) names its credential.
    let named = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .filter(|v| *v == MANAGED_BY)
        .and_then(|_| meta.annotations.as_ref()?.get(ANNOTATION_CREDENTIAL))
        .map(String::as_str);
    for owner in controller.chain(named) {
        let owner = ObjectRef::new(owner).within(ns);
        if !refs.contains(&owner) {
            refs.push(owner);
        }
    }
    refs
}

/// A pass failed on the Kubernetes API: how soon it is retried. Soon after a conflict,
/// otherwise with exponential backoff (2.5-5 s at first, doubling up to 2.5-5 min), so a lasting
/// problem (an RBAC denial, an outage) does not turn into a retry loop.
fn retry_delay(credential: &Watched, error: &Error, ctx: &Context) -> Duration {
    ctx.metrics.reconcile_error(error.metric_label());
    let (namespace, name) = (
        credential.namespace().unwrap_or_default(),
        credential.name_any(),
    );
    // Someone changed the object between our read and our write: start over soon.
    let delay = if matches!(error, Error::Kube(kube::Error::Api(e)) if e.code == 409) {
        Duration::from_secs(1)
    } else {
        let delay = ctx
            .kube_retries
            .next_delay(&credential.uid().unwrap_or_default());
        warn!(credential = %name, %namespace, %error, retry_in = ?delay, "reconcile failed");
        delay
    };
    ctx.metrics
        .queue
        .finished(&namespace, &name, std::time::Instant::now(), Some(delay));
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(generation: i64, labels: &[(&str, &str)], ready: &str) -> Watched {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": "abc", "namespace": "ns", "uid": "u1", "generation": generation,
                         "labels": labels.iter().copied().collect::<HashMap<_, _>>()},
            "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "a"},
                     "subscriberSecretRef": {"name": "b"}, "tokenSecret": {"name": "c"}},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "R",
                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_relist_forgets_the_credentials_it_no_longer_lists() {
        use watcher::Event::*;
        let mut t = Triggers::default();
        t.select(Apply(credential(1, &[], "True")));
        let mut other = credential(1, &[], "True");
        other.meta_mut().uid = Some("u2".into());
        t.select(Apply(other.clone()));
        assert_eq!(t.seen.len(), 2);
        // u1 was deleted while the watch was down: the re-list lists u2 only.
        t.select(Init);
        t.select(InitApply(other));
        t.select(InitDone);
        assert_eq!(t.seen.keys().collect::<Vec<_>>(), ["u2"]);
    }

    #[test]
    fn user_changes_and_relists_start_a_pass_and_status_writes_do_not() {
        use watcher::Event::*;
        let mut t = Triggers::default();
        let one = |t: &mut Triggers, e| matches!(t.select(e), Start::One(_));
        let nothing = |t: &mut Triggers, e| matches!(t.select(e), Start::Nothing);
        // The first list starts each credential as it comes.
        assert!(nothing(&mut t, Init));
        assert!(
            one(&mut t, InitApply(credential(1, &[], "False"))),
            "listed"
        );
        assert!(nothing(&mut t, InitDone));
        assert!(
            nothing(&mut t, Apply(credential(1, &[], "True"))),
            "own status write"
        );
        assert!(
            one(&mut t, Apply(credential(2, &[], "True"))),
            "spec changed"
        );
        assert!(
            one(&mut t, Apply(credential(2, &[("a", "b")], "True"))),
            "labels"
        );
        assert!(
            nothing(&mut t, Apply(credential(2, &[("a", "b")], "True"))),
            "unchanged"
        );
        // A re-list starts every credential once it is complete.
        assert!(nothing(&mut t, Init));
        assert!(nothing(
            &mut t,
            InitApply(credential(2, &[("a", "b")], "True"))
        ));
        assert!(matches!(t.select(InitDone), Start::EveryListed));
        assert!(nothing(
            &mut t,
            Apply(credential(2, &[("a", "b")], "False"))
        ));
        assert!(
            nothing(&mut t, Delete(credential(2, &[("a", "b")], "False"))),
            "gone from kube's store: nothing to start"
        );
        assert!(t.seen.is_empty(), "a deleted credential is forgotten");
    }

    /// A watch that fails again and again (each error a second after the last) holds back no
    /// timer: its errors end at the watch, so the controller never backs off. Passed on, the
    /// errors made kube's controller back off, and a timer due at 30 s fired
    /// only when a backoff ended (0.8 s doubling to 30 s, one error a second).
    #[tokio::test(start_paused = true)]
    async fn a_failing_watch_holds_back_no_timer() {
        use std::sync::Mutex;
        let (reader, writer) = reflector::store();
        let listed = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(credential(1, &[], "True"))),
            Ok(watcher::Event::InitDone),
        ]);
        let failing = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Err(watcher::Error::NoResourceVersion), ()))
        });
        let events = listed
            .chain(failing)
            .filter_map(stop_errors("test"))
            .reflect(writer)
            .applied_objects();
        let timers = Arc::new(Timers::default());
        let passes = Arc::new(Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let controller = Controller::for_stream(events, reader)
            .reconcile_on(timers.clone().fired())
            .run(
                {
                    let passes = passes.clone();
                    move |_, _: Arc<()>| {
                        passes.lock().unwrap().push(start.elapsed());
                        futures::future::ready(Ok::<_, Error>(Action::await_change()))
                    }
                },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {});
        timers.set(&credential(1, &[], "True"), Some(Duration::from_secs(30)));
        let _ = tokio::time::timeout(Duration::from_secs(40), controller).await;
        let passes = passes.lock().unwrap().clone();
        assert_eq!(
            passes.len(),
            2,
            "the listed credential, then its timer: {passes:?}"
        );
        assert_eq!(passes[1].as_secs(), 30, "the timer fired late: {passes:?}");
    }

    fn named(name: &str) -> Watched {
        let mut c = credential(1, &[], "True");
        c.meta_mut().name = Some(name.into());
        c.meta_mut().uid = Some(name.into());
        c
    }

    /// A re-list in two pages, the first with a credential created while the watch was down:
    /// kube's store takes what a re-list lists only at its end, and kube's controller drops a
    /// request for an object not in its store. Every credential still gets its pass.
    #[tokio::test(start_paused = true)]
    async fn a_credential_new_in_the_first_page_of_a_relist_gets_its_pass() {
        use std::sync::Mutex;
        use watcher::Event::*;
        let (reader, writer) = reflector::store();
        let page = |events: Vec<watcher::Event<Watched>>, after: u64| {
            // Each page waits from when the previous one ended.
            futures::stream::once(async move {
                tokio::time::sleep(Duration::from_secs(after)).await;
                futures::stream::iter(events.into_iter().map(Ok))
            })
            .flatten()
        };
        let events = page(vec![Init, InitApply(named("old")), InitDone], 0)
            // The watch broke; the re-list's second page is a request away from its first.
            .chain(page(
                vec![Init, InitApply(named("new")), InitApply(named("old"))],
                5,
            ))
            .chain(page(vec![InitApply(named("other")), InitDone], 1))
            .chain(futures::stream::pending())
            .reflect(writer)
            .map_ok({
                let reader = reader.clone();
                let mut triggers = Triggers::default();
                move |event| starts(&mut triggers, event, &reader)
            })
            .try_flatten();
        let passes = Arc::new(Mutex::new(Vec::new()));
        let controller = Controller::for_stream(events, reader)
            .run(
                {
                    let passes = passes.clone();
                    move |credential: Arc<Watched>, _: Arc<()>| {
                        passes.lock().unwrap().push(credential.name_any());
                        futures::future::ready(Ok::<_, Error>(Action::await_change()))
                    }
                },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {});
        let _ = tokio::time::timeout(Duration::from_secs(30), controller).await;
        let mut passes = passes.lock().unwrap().clone();
        passes.sort();
        assert_eq!(passes, ["new", "old", "old", "other"]);
    }
}
