//! The controller: for each NsApiCredential, load the inputs, decide, call the NetSapiens API
//! when a token is due, write the output Secret, report status and events, and requeue for the
//! next rotation. Deciding is delegated to the pure modules; this file does the I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::clock::Clock;
use crate::crd::{NsApiCredential, NsApiCredentialStatus};
use crate::inputs::{self, Policy, Problem, ValidSpec};
use crate::metrics::Metrics;
use crate::nsapi::{
    ClientCredentials, ErrorKind, Grant, NsApiClient, NsApiError, SecretString,
    SubscriberCredentials, TokenApi, TokenGrant, TokenInfo,
};
use crate::schedule::{self, CurrentToken, Decision, FailureClass, FailureGate, MintReason};
use crate::status::{self, DEGRADED, READY, Stamp, reason};
use crate::token_secret::{self, Ownership, StoredToken, rfc3339};
use crate::{Error, Result};

/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "nsapi-token-operator";

/// A refresh token held in memory only (never in a Secret that pods can mount), with what it
/// was obtained with. Each one is taken out before it is sent, so it is used at most once.
struct Session {
    refresh_token: SecretString,
    inputs_fingerprint: String,
    api: TokenApi,
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub nsapi: NsApiClient,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Consecutive failed passes (Kubernetes API errors) per credential UID, for backoff.
    kube_failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        nsapi: NsApiClient,
        clock: Arc<dyn Clock>,
        policy: Policy,
        reporter: Reporter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            nsapi,
            clock,
            policy,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            kube_failures: Mutex::new(HashMap::new()),
        }
    }

    fn take_session(&self, uid: &str) -> Option<Session> {
        self.sessions.lock().expect("session lock").remove(uid)
    }

    fn keep_session(&self, uid: &str, session: Session) {
        self.sessions
            .lock()
            .expect("session lock")
            .insert(uid.to_owned(), session);
    }
}

/// Fails fast, with a hint, when the NsApiCredential CRD is not served.
pub async fn ensure_crd_served(client: &kube::Client, scope: &Scope) -> Result<()> {
    let credentials: Api<NsApiCredential> = match scope.namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    credentials
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdNotInstalled)?;
    Ok(())
}

/// Which credentials this operator instance acts on.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Only credentials whose labels match (for sharding a large fleet across deployments).
    pub label_selector: Option<String>,
}

/// Runs the controller until `shutdown` resolves: one watch for the whole cluster, or one per
/// namespace in scope.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let apis: Vec<(Api<NsApiCredential>, Api<PartialObjectMeta<Secret>>)> =
        if scope.namespaces.is_empty() {
            vec![(Api::all(ctx.client.clone()), Api::all(ctx.client.clone()))]
        } else {
            scope
                .namespaces
                .iter()
                .map(|ns| {
                    (
                        Api::namespaced(ctx.client.clone(), ns),
                        Api::namespaced(ctx.client.clone(), ns),
                    )
                })
                .collect()
        };
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = &scope.label_selector {
        config = config.labels(selector);
    }
    info!(namespaces = ?scope.namespaces, label_selector = ?scope.label_selector, "controller started");
    let controllers = apis.into_iter().map(|(credentials, secrets)| {
        let controller = Controller::new(credentials, config.clone());
        let store = controller.store();
        // Metadata only: the operator never holds the data of Secrets it does not own in memory.
        let (metrics, known) = (ctx.metrics.clone(), store.clone());
        let secret_changes = watcher(secrets, watcher::Config::default())
            .inspect_ok(move |event| {
                // A deleted credential is never reconciled again, but the garbage collector
                // then deletes its Secret: the moment to drop the credential's metric series.
                if let watcher::Event::Delete(secret) = event {
                    for owner in credentials_using(&known, secret) {
                        if known.get(&owner).is_none() {
                            metrics.forget(
                                owner.namespace.as_deref().unwrap_or_default(),
                                &owner.name,
                            );
                        }
                    }
                }
            })
            .touched_objects();
        controller
            .watches_stream(secret_changes, move |secret| {
                credentials_using(&store, &secret)
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    debug!(%error, "reconcile loop");
                }
            })
    });
    futures::future::join_all(controllers).await;
    info!("controller stopped");
}

/// The credentials a Secret matters to: those that reference it as an input or output, and the
/// one that controls it.
fn credentials_using(
    store: &Store<NsApiCredential>,
    secret: &impl Resource,
) -> Vec<ObjectRef<NsApiCredential>> {
    let meta = secret.meta();
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut refs: Vec<_> = store
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(ns))
        .filter(|c| {
            let s = &c.spec;
            s.client_secret_ref.name == name
                || s.subscriber_secret_ref.name == name
                || s.token_secret.name == name
                || c.status
                    .as_ref()
                    .and_then(|st| st.token_secret_name.as_deref())
                    == Some(name)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect();
    for owner in meta.owner_references.iter().flatten() {
        if owner.controller == Some(true) && owner.kind == "NsApiCredential" {
            refs.push(ObjectRef::new(&owner.name).within(ns));
        }
    }
    refs
}

fn error_policy(credential: Arc<NsApiCredential>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    // Someone changed the object between our read and our write: start over soon.
    if matches!(error, Error::Kube(kube::Error::Api(e)) if e.code == 409) {
        return Action::requeue(Duration::from_secs(1));
    }
    // Otherwise back off exponentially (5 s up to 5 min), so a lasting Kubernetes API problem
    // (an RBAC denial, an outage) does not turn into a retry loop.
    let uid = credential.uid().unwrap_or_default();
    let failures = {
        let mut counts = ctx.kube_failures.lock().expect("failure-count lock");
        let count = counts.entry(uid.clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let seed = schedule::seed_of(&[&uid, &failures.to_string()]);
    let delay = schedule::retry_delay(FailureClass::Transient, failures, None, seed);
    warn!(
        credential = %credential.name_any(),
        namespace = credential.namespace().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(Duration::try_from(delay).unwrap_or(Duration::from_secs(10)))
}

#[instrument(skip_all, fields(namespace = cached.namespace().unwrap_or_default(), credential = %cached.name_any()))]
async fn reconcile(cached: Arc<NsApiCredential>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile();
    // The watch cache can lag behind this operator's own last status write, and a decision
    // taken on a stale status (failure count, retry time) could mint a token that is not due.
    // So each pass starts from the object as the API server has it now.
    let api: Api<NsApiCredential> = Api::namespaced(
        ctx.client.clone(),
        &cached.namespace().ok_or(Error::MissingField("namespace"))?,
    );
    let Some(credential) = api.get_opt(&cached.name_any()).await? else {
        // Deleted: its Secret goes with it (ownerReference); forget its series and session.
        ctx.metrics
            .forget(&cached.namespace().unwrap_or_default(), &cached.name_any());
        if let Some(uid) = cached.uid() {
            ctx.take_session(&uid);
            ctx.kube_failures
                .lock()
                .expect("failure-count lock")
                .remove(&uid);
        }
        return Ok(Action::await_change());
    };
    let action = Reconcile::new(&credential, &ctx)?.run().await?;
    if let Some(uid) = credential.uid() {
        ctx.kube_failures
            .lock()
            .expect("failure-count lock")
            .remove(&uid);
    }
    Ok(action)
}

/// One pass over one credential.
struct Reconcile<'a> {
    credential: &'a NsApiCredential,
    ctx: &'a Context,
    uid: String,
    secrets: Api<Secret>,
    old: NsApiCredentialStatus,
    new: NsApiCredentialStatus,
}

impl<'a> Reconcile<'a> {
    fn new(credential: &'a NsApiCredential, ctx: &'a Context) -> Result<Self> {
        let namespace = credential
            .namespace()
            .ok_or(Error::MissingField("namespace"))?;
        let uid = credential.uid().ok_or(Error::MissingField("uid"))?;
        let old = credential.status.clone().unwrap_or_default();
        let mut new = old.clone();
        new.observed_generation = credential.metadata.generation;
        Ok(Self {
            credential,
            ctx,
            uid,
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            old,
            new,
        })
    }

    async fn run(mut self) -> Result<Action> {
        let now = self.ctx.clock.now();
        let spec = &self.credential.spec;

        // The token in place: in the output Secret, or in the one written under an earlier name.
        let output = self.secrets.get_opt(&spec.token_secret.name).await?;
        let (token, previous) = match token_secret::ownership(output.as_ref(), self.credential) {
            Ownership::Foreign => {
                let message = format!(
                    "Secret {:?} already exists and is not owned by this NsApiCredential; it is left \
                     untouched. Delete it, or choose another spec.tokenSecret.name",
                    spec.token_secret.name
                );
                return self
                    .report_problem(None, now, reason::SECRET_CONFLICT, &message)
                    .await;
            }
            Ownership::Owned => (self.stored_token(output.as_ref()), None),
            Ownership::Absent => self.previous_token().await?,
        };
        if let Some(t) = &token {
            self.new.issued_at = Some(rfc3339(t.times.issued_at));
            self.new.expires_at = Some(rfc3339(t.times.expires_at));
        }

        let valid = match inputs::validate(spec, &self.ctx.policy) {
            Ok(valid) => valid,
            Err(p) => {
                return self
                    .report_problem(token.as_ref(), now, p.reason, &p.message)
                    .await;
            }
        };

        if spec.suspend {
            return self.report_suspended(token.as_ref(), now).await;
        }

        let (client, subscriber) = match self.load_inputs().await? {
            Ok(inputs) => inputs,
            Err(p) => {
                return self
                    .report_problem(token.as_ref(), now, p.reason, &p.message)
                    .await;
            }
        };
        let fingerprint = inputs::fingerprint(&valid, &client, &subscriber);

        let current = token.as_ref().map(|t| CurrentToken {
            times: t.times,
            inputs_match: t.inputs_fingerprint == fingerprint,
        });
        let failure = self.failure_gate(&fingerprint);
        let seed = self.seed(token.as_ref());
        match schedule::decide(now, current, valid.refresh_before, seed, failure) {
            Decision::Wait { until, reason } => {
                debug!(?reason, until = %rfc3339(until), "no token needed now");
                if let Some(token) = &token {
                    self.write_secret(token, output.as_ref(), previous.as_ref())
                        .await?;
                }
                self.report_waiting(token.as_ref(), now, until).await
            }
            Decision::Mint(why) => {
                info!(?why, "obtaining a token");
                let outcome = self
                    .obtain(&valid, &client, &subscriber, &fingerprint, why)
                    .await;
                match outcome {
                    Ok(obtained) => {
                        let stored = self.store(&valid, &obtained.grant, &fingerprint);
                        self.write_secret(&stored, output.as_ref(), previous.as_ref())
                            .await?;
                        self.report_success(&valid, &obtained, &stored, &fingerprint)
                            .await
                    }
                    Err(error) => {
                        self.report_failure(token.as_ref(), &error, &fingerprint, seed)
                            .await
                    }
                }
            }
        }
    }

    fn stored_token(&self, secret: Option<&Secret>) -> Option<StoredToken> {
        let secret = secret?;
        match token_secret::read_token(secret) {
            Ok(token) => Some(token),
            Err(why) => {
                warn!(secret = secret.name_any(), %why, "output Secret holds no usable token record; a new token will be obtained");
                None
            }
        }
    }

    /// When the output name changed, the token still lives in the Secret written before.
    async fn previous_token(&self) -> Result<(Option<StoredToken>, Option<Secret>)> {
        let Some(old_name) = self.old.token_secret_name.as_deref() else {
            return Ok((None, None));
        };
        if old_name == self.credential.spec.token_secret.name {
            return Ok((None, None));
        }
        let old = self.secrets.get_opt(old_name).await?;
        if token_secret::ownership(old.as_ref(), self.credential) != Ownership::Owned {
            return Ok((None, None));
        }
        Ok((self.stored_token(old.as_ref()), old))
    }

    async fn load_inputs(
        &self,
    ) -> Result<std::result::Result<(ClientCredentials, SubscriberCredentials), Problem>> {
        let spec = &self.credential.spec;
        let client_secret = self.secrets.get_opt(&spec.client_secret_ref.name).await?;
        let subscriber_secret = if spec.subscriber_secret_ref.name == spec.client_secret_ref.name {
            client_secret.clone()
        } else {
            self.secrets
                .get_opt(&spec.subscriber_secret_ref.name)
                .await?
        };
        Ok(
            inputs::client_credentials(spec, client_secret.as_ref()).and_then(|client| {
                let subscriber = inputs::subscriber_credentials(spec, subscriber_secret.as_ref())?;
                Ok((client, subscriber))
            }),
        )
    }

    fn failure_gate(&self, fingerprint: &str) -> Option<FailureGate> {
        if self.old.consecutive_failures == 0 {
            return None;
        }
        let retry_at = self.old.next_refresh_at.as_deref()?.parse().ok()?;
        Some(FailureGate {
            retry_at,
            inputs_match: self.old.inputs_fingerprint.as_deref() == Some(fingerprint),
        })
    }

    fn seed(&self, token: Option<&StoredToken>) -> u64 {
        let issued = token
            .map(|t| rfc3339(t.times.issued_at))
            .unwrap_or_default();
        schedule::seed_of(&[&self.uid, &issued])
    }

    /// Gets a token: the refresh grant when this operator holds a refresh token for these
    /// inputs, else (or when the refresh is refused) the password grant.
    async fn obtain(
        &self,
        valid: &ValidSpec,
        client: &ClientCredentials,
        subscriber: &SubscriberCredentials,
        fingerprint: &str,
        why: MintReason,
    ) -> std::result::Result<Obtained, NsApiError> {
        let nsapi = &self.ctx.nsapi;
        let metrics = &self.ctx.metrics;
        let session = self
            .ctx
            .take_session(&self.uid)
            .filter(|s| s.inputs_fingerprint == fingerprint && !why.needs_password_grant());
        let mut fallback_from = None;
        if let Some(session) = session {
            let started = std::time::Instant::now();
            let result = nsapi
                .refresh_grant(
                    &valid.base_url,
                    session.api,
                    valid.refresh_method,
                    client,
                    &session.refresh_token,
                )
                .await;
            metrics.token_request(
                Grant::RefreshToken,
                result.as_ref().err(),
                started.elapsed(),
            );
            match result {
                Ok(grant) => {
                    self.remember(&grant, fingerprint);
                    return Ok(Obtained {
                        grant,
                        info: None,
                        fallback_from: None,
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::RefreshRejected | ErrorKind::Authentication
                    ) =>
                {
                    info!(error = %e, "refresh grant refused; falling back to the password grant");
                    fallback_from = Some(e);
                }
                // The refresh token may or may not have been consumed: it is not sent again.
                Err(e) => return Err(e),
            }
        }
        let started = std::time::Instant::now();
        let result = nsapi
            .password_grant(&valid.base_url, valid.token_api, client, subscriber)
            .await;
        metrics.token_request(Grant::Password, result.as_ref().err(), started.elapsed());
        let grant = result?;
        self.remember(&grant, fingerprint);
        // Inspect the new token for status (territory, uid); a failure here costs nothing.
        let info = match nsapi.read_token(&valid.base_url, &grant.access_token).await {
            Ok(info) => Some(info),
            Err(e) => {
                debug!(error = %e, "token inspection failed; status lacks territory and uid");
                None
            }
        };
        Ok(Obtained {
            grant,
            info,
            fallback_from,
        })
    }

    fn remember(&self, grant: &TokenGrant, fingerprint: &str) {
        if let Some(refresh_token) = &grant.refresh_token {
            self.ctx.keep_session(
                &self.uid,
                Session {
                    refresh_token: refresh_token.clone(),
                    inputs_fingerprint: fingerprint.to_owned(),
                    api: grant.api,
                },
            );
        }
    }

    fn store(&self, valid: &ValidSpec, grant: &TokenGrant, fingerprint: &str) -> StoredToken {
        // Whole seconds, rounded towards the earlier time: never later than the server's expiry.
        let floor = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
        StoredToken {
            access_token: grant.access_token.clone(),
            token_type: grant.token_type.clone(),
            times: schedule::TokenTimes {
                issued_at: floor(grant.requested_at),
                expires_at: floor(grant.expires_at),
            },
            api_base_url: valid.base_url.as_str().to_owned(),
            domain: grant.domain.clone(),
            scope: grant.scope.clone(),
            inputs_fingerprint: fingerprint.to_owned(),
        }
    }

    /// Writes the output Secret when its content would change; never touches a Secret this
    /// credential does not control. Removes the Secret written under an earlier name.
    async fn write_secret(
        &mut self,
        token: &StoredToken,
        existing: Option<&Secret>,
        previous: Option<&Secret>,
    ) -> Result<()> {
        let desired = token_secret::desired_secret(self.credential, token);
        let name = self.credential.spec.token_secret.name.clone();
        match existing {
            None => {
                // Create, not apply: if a Secret of this name appeared meanwhile, creation fails
                // instead of taking it over.
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                self.secrets.create(&params, &desired).await?;
                info!(secret = %name, "output Secret created");
            }
            Some(existing) if token_secret::needs_write(existing, &desired) => {
                let mut patch = desired;
                // Optimistic concurrency: fail rather than overwrite a Secret changed since read.
                patch.metadata.resource_version = existing.metadata.resource_version.clone();
                self.secrets
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await?;
                info!(secret = %name, "output Secret updated");
            }
            Some(_) => {}
        }
        self.new.token_secret_name = Some(name);
        if let Some(previous) = previous {
            let old_name = previous.name_any();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: previous.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.secrets.delete(&old_name, &params).await {
                Ok(_) => {
                    info!(secret = %old_name, "removed the output Secret written under the previous name")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn report_success(
        mut self,
        valid: &ValidSpec,
        obtained: &Obtained,
        stored: &StoredToken,
        fingerprint: &str,
    ) -> Result<Action> {
        let now = self.ctx.clock.now();
        let grant = &obtained.grant;
        let info = obtained.info.as_ref();
        let times = stored.times;
        let seed = self.seed(Some(stored));
        let next = schedule::refresh_at(times, valid.refresh_before, seed);
        let stamp = Stamp {
            generation: self.credential.metadata.generation,
            now,
        };
        let same_inputs = self.old.inputs_fingerprint.as_deref() == Some(fingerprint);
        let keep = |new: Option<String>, old: &Option<String>| {
            new.or_else(|| if same_inputs { old.clone() } else { None })
        };
        let s = &mut self.new;
        s.issued_at = Some(rfc3339(times.issued_at));
        s.expires_at = Some(rfc3339(times.expires_at));
        s.next_refresh_at = Some(rfc3339(next));
        s.last_grant = Some(grant.grant.as_str().to_owned());
        s.token_api = Some(grant.api.as_str().to_owned());
        // The grant's own fields first, then what the token inspection said.
        let either = |from_grant: &Option<String>, from_info: fn(&TokenInfo) -> &Option<String>| {
            from_grant
                .clone()
                .or_else(|| info.and_then(|i| from_info(i).clone()))
        };
        s.scope = either(&grant.scope, |i| &i.scope);
        s.domain = either(&grant.domain, |i| &i.domain);
        s.territory = keep(
            either(&grant.territory, |i| &i.territory),
            &self.old.territory,
        );
        s.uid = keep(either(&grant.uid, |i| &i.uid), &self.old.uid);
        s.server_version = keep(
            either(&grant.api_version, |i| &i.api_version),
            &self.old.server_version,
        );
        s.consecutive_failures = 0;
        s.inputs_fingerprint = Some(fingerprint.to_owned());

        let (why, verb) = match grant.grant {
            Grant::Password => (reason::TOKEN_ISSUED, "issued"),
            Grant::RefreshToken => (reason::TOKEN_REFRESHED, "refreshed"),
        };
        let message = format!(
            "token {verb} by the {} grant; valid until {}",
            grant.grant.as_str(),
            rfc3339(times.expires_at)
        );
        stamp.set(&mut s.conditions, READY, true, why, &message);
        stamp.set(&mut s.conditions, DEGRADED, false, reason::AS_EXPECTED, "");
        self.ctx
            .metrics
            .token_times(self.credential, Some(times.expires_at), Some(next));
        if let Some(e) = &obtained.fallback_from {
            let note = format!(
                "the refresh grant was refused ({e}); a new token was issued by the password grant"
            );
            self.event(EventType::Normal, reason::REFRESH_FALLBACK, &note)
                .await;
        }
        self.event(EventType::Normal, why, &message).await;
        info!(grant = grant.grant.as_str(), expires_at = %rfc3339(times.expires_at), next_refresh_at = %rfc3339(next), "token {verb}");
        self.finish(now, next).await
    }

    async fn report_failure(
        mut self,
        token: Option<&StoredToken>,
        error: &NsApiError,
        fingerprint: &str,
        seed: u64,
    ) -> Result<Action> {
        let now = self.ctx.clock.now();
        let (why, class, advice) = match error.kind() {
            ErrorKind::Transient => (reason::API_UNAVAILABLE, FailureClass::Transient, ""),
            ErrorKind::Authentication | ErrorKind::RefreshRejected => (
                reason::AUTHENTICATION_FAILED,
                FailureClass::Refused,
                "; check the client and subscriber Secrets (a change to either retries at once)",
            ),
            // The client's messages for these already say what to change.
            ErrorKind::MfaRequired => (reason::MFA_REQUIRED, FailureClass::Refused, ""),
            ErrorKind::Permanent => (reason::API_REQUEST_REJECTED, FailureClass::Refused, ""),
        };
        let failures = self.old.consecutive_failures.saturating_add(1);
        let retry_after = error
            .retry_after()
            .and_then(|d| SignedDuration::try_from(d).ok());
        let attempt = failures.unsigned_abs();
        let delay = schedule::retry_delay(class, attempt, retry_after, seed ^ u64::from(attempt));
        let retry_at = now + delay;
        let message = format!("{error}{advice}; next attempt at {}", rfc3339(retry_at));
        warn!(reason = why, error = %error, consecutive_failures = failures, retry_at = %rfc3339(retry_at), "could not obtain a token");

        let stamp = Stamp {
            generation: self.credential.metadata.generation,
            now,
        };
        let s = &mut self.new;
        s.consecutive_failures = failures;
        s.inputs_fingerprint = Some(fingerprint.to_owned());
        s.next_refresh_at = Some(rfc3339(retry_at));
        stamp.set(&mut s.conditions, DEGRADED, true, why, &message);
        set_ready_for(s, token, stamp, why, &message);
        self.ctx.metrics.token_times(
            self.credential,
            token.map(|t| t.times.expires_at),
            Some(retry_at),
        );
        self.event(EventType::Warning, why, &message).await;
        self.finish(now, retry_at).await
    }

    async fn report_waiting(
        mut self,
        token: Option<&StoredToken>,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Action> {
        let stamp = Stamp {
            generation: self.credential.metadata.generation,
            now,
        };
        let s = &mut self.new;
        s.next_refresh_at = Some(rfc3339(until));
        if s.consecutive_failures == 0 {
            stamp.set(&mut s.conditions, DEGRADED, false, reason::AS_EXPECTED, "");
        }
        // A valid token keeps Ready; an expired or missing one reports why no new one came.
        let (why, message) = s
            .condition(DEGRADED)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_else(|| {
                (
                    reason::TOKEN_EXPIRED.to_owned(),
                    "no valid token".to_owned(),
                )
            });
        set_ready_for(s, token, stamp, &why, &message);
        self.ctx.metrics.token_times(
            self.credential,
            token.map(|t| t.times.expires_at),
            Some(until),
        );
        self.finish(now, until).await
    }

    /// Something the user must fix; no request is sent until they do.
    async fn report_problem(
        mut self,
        token: Option<&StoredToken>,
        now: Timestamp,
        why: &str,
        message: &str,
    ) -> Result<Action> {
        let stamp = Stamp {
            generation: self.credential.metadata.generation,
            now,
        };
        let changed = self
            .old
            .condition(DEGRADED)
            .is_none_or(|c| c.reason != why || c.message != message);
        let s = &mut self.new;
        s.next_refresh_at = None;
        stamp.set(&mut s.conditions, DEGRADED, true, why, message);
        set_ready_for(s, token, stamp, why, message);
        if changed {
            warn!(reason = why, message, "credential cannot be acted on");
            self.event(EventType::Warning, why, message).await;
        }
        self.ctx
            .metrics
            .token_times(self.credential, token.map(|t| t.times.expires_at), None);
        self.finish_until_expiry(now, token).await
    }

    async fn report_suspended(
        mut self,
        token: Option<&StoredToken>,
        now: Timestamp,
    ) -> Result<Action> {
        let stamp = Stamp {
            generation: self.credential.metadata.generation,
            now,
        };
        let valid = token.filter(|t| t.times.is_valid_at(now));
        let message = match valid {
            Some(t) => format!(
                "spec.suspend is true: no token requests are made; the current token expires at {}",
                rfc3339(t.times.expires_at)
            ),
            None => "spec.suspend is true: no token requests are made".to_owned(),
        };
        let s = &mut self.new;
        s.next_refresh_at = None;
        stamp.set(
            &mut s.conditions,
            READY,
            valid.is_some(),
            reason::SUSPENDED,
            &message,
        );
        stamp.set(&mut s.conditions, DEGRADED, false, reason::SUSPENDED, "");
        self.ctx
            .metrics
            .token_times(self.credential, token.map(|t| t.times.expires_at), None);
        self.finish_until_expiry(now, token).await
    }

    /// Writes status if it changed and requeues at `at`, or when the token expires if sooner.
    async fn finish(self, now: Timestamp, at: Timestamp) -> Result<Action> {
        let expiry = self.token_expiry().filter(|e| *e > now);
        let at = expiry.map_or(at, |e| e.min(at));
        self.write_status().await?;
        Ok(Action::requeue(until(now, at)))
    }

    /// For problems: nothing to do until something changes, except to report the token expiring.
    async fn finish_until_expiry(
        self,
        now: Timestamp,
        token: Option<&StoredToken>,
    ) -> Result<Action> {
        let expiry = token.map(|t| t.times.expires_at).filter(|e| *e > now);
        self.write_status().await?;
        Ok(match expiry {
            Some(at) => Action::requeue(until(now, at)),
            None => Action::await_change(),
        })
    }

    fn token_expiry(&self) -> Option<Timestamp> {
        self.new.expires_at.as_deref()?.parse().ok()
    }

    async fn write_status(&self) -> Result<()> {
        if self.new == self.old {
            return Ok(());
        }
        let api: Api<NsApiCredential> = Api::namespaced(
            self.ctx.client.clone(),
            &self.credential.namespace().unwrap_or_default(),
        );
        // The resourceVersion makes the write conditional: it fails with a conflict, rather
        // than overwrite, if the object changed since this pass read it.
        let patch = json!({
            "apiVersion": "nsapi.io/v1alpha1",
            "kind": "NsApiCredential",
            "metadata": {"resourceVersion": self.credential.resource_version()},
            "status": self.new,
        });
        api.patch_status(
            &self.credential.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    async fn event(&self, type_: EventType, why: &str, note: &str) {
        let event = Event {
            type_,
            reason: why.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "ObtainToken".to_owned(),
            secondary: None,
        };
        let reference = self.credential.object_ref(&());
        if let Err(error) = self.ctx.recorder.publish(&event, &reference).await {
            warn!(%error, "could not record an event");
        }
    }
}

struct Obtained {
    grant: TokenGrant,
    info: Option<TokenInfo>,
    fallback_from: Option<NsApiError>,
}

/// Ready while the token in place is valid; otherwise False with the reason that applies.
fn set_ready_for(
    s: &mut NsApiCredentialStatus,
    token: Option<&StoredToken>,
    stamp: Stamp,
    why: &str,
    message: &str,
) {
    match token {
        Some(t) if t.times.is_valid_at(stamp.now) => {
            if !status::is_true(&s.conditions, READY) {
                let m = format!("token valid until {}", rfc3339(t.times.expires_at));
                stamp.set(&mut s.conditions, READY, true, reason::TOKEN_VALID, &m);
            }
        }
        Some(t) => {
            let m = format!(
                "token expired at {}: {message}",
                rfc3339(t.times.expires_at)
            );
            stamp.set(&mut s.conditions, READY, false, reason::TOKEN_EXPIRED, &m);
        }
        None => stamp.set(&mut s.conditions, READY, false, why, message),
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let d = at.duration_since(now);
    Duration::try_from(d)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
