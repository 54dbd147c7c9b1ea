//! One reconcile pass over one credential, and only its IO: read the credential, the output
//! Secret and the inputs; ask `schedule` whether a token is due; call the NetSapiens API; write
//! the output Secret; then record what `status` decided (metrics, Events, the status). Every
//! decision is taken by the pure modules.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::clock::Clock;
use crate::conditions::{Problem, Reason};
use crate::controller::KubeRetries;
use crate::crd::{FIELD_MANAGER, NsApiCredential};
use crate::grants::{Grants, Minted};
use crate::inputs;
use crate::metrics::Metrics;
use crate::namespaces::{NamespacePhases, is_namespace_terminating};
use crate::nsapi::{ClientCredentials, NsApiClient, SubscriberCredentials};
use crate::output_secret::{InPlace, OutputSecret};
use crate::policy::{self, Policy, ValidSpec};
use crate::ratelimit::{Rate, RateLimiter};
use crate::schedule::{self, CurrentToken, Decision, FailureGate, TokenTimes};
use crate::sessions::{HeldToken, Sessions};
use crate::status::{self, Note, Obtained, Outcome, Pass, Report};
use crate::text::truncate;
use crate::token_secret::{StoredToken, rfc3339};
use crate::{Error, Result};

/// Kubernetes limits an Event's note to 1 KiB.
const MAX_EVENT_NOTE: usize = 1000;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub nsapi: NsApiClient,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
    pub kube_retries: KubeRetries,
    pub namespaces: NamespacePhases,
    /// The self-imposed rate limit of NetSapiens requests, per API host.
    pub limiter: RateLimiter,
}

impl Context {
    pub fn new(
        client: kube::Client,
        nsapi: NsApiClient,
        clock: Arc<dyn Clock>,
        policy: Policy,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        rate: Option<Rate>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            namespaces: NamespacePhases::new(client.clone()),
            client,
            nsapi,
            clock,
            policy,
            metrics,
            sessions: Sessions::default(),
            kube_retries: KubeRetries::default(),
            limiter: RateLimiter::new(rate),
        }
    }

    /// Forgets what the operator holds for a credential that is deleted or going away: its
    /// session, its retry count and its metric series.
    pub fn forget(&self, credential: &NsApiCredential) {
        self.forget_by_name(
            &credential.namespace().unwrap_or_default(),
            &credential.name_any(),
            credential.uid().as_deref(),
        );
    }

    pub fn forget_by_name(&self, namespace: &str, name: &str, uid: Option<&str>) {
        self.metrics.forget(namespace, name);
        if let Some(uid) = uid {
            self.sessions.forget(uid);
            self.kube_retries.clear(uid);
        }
    }
}

/// Reconciles one credential, starting from the object as the API server has it now: the
/// watch cache can lag behind this operator's own last status write, and a decision taken on a
/// stale status (failure count, retry time) could mint a token that is not due.
#[instrument(skip_all, fields(namespace = cached.namespace().unwrap_or_default(), credential = %cached.name_any()))]
pub async fn reconcile(cached: Arc<NsApiCredential>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconcile();
    let namespace = cached.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<NsApiCredential> = Api::namespaced(ctx.client.clone(), &namespace);
    let credential = match api.get_opt(&cached.name_any()).await? {
        // Being deleted: its Secret goes with it (ownerReference), so no token is obtained or
        // written for it any more, even when its Secret is collected first.
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        _ => {
            ctx.forget(&cached);
            return Ok(Action::await_change());
        }
    };
    let action = Reconcile::new(&credential, &ctx)?.run().await?;
    if let Some(uid) = credential.uid() {
        ctx.kube_retries.clear(&uid);
    }
    Ok(action)
}

/// One pass over one credential.
struct Reconcile<'a> {
    credential: &'a NsApiCredential,
    ctx: &'a Context,
    uid: String,
    namespace: String,
    secrets: Api<Secret>,
}

impl<'a> Reconcile<'a> {
    fn new(credential: &'a NsApiCredential, ctx: &'a Context) -> Result<Self> {
        let namespace = credential
            .namespace()
            .ok_or(Error::MissingField("namespace"))?;
        Ok(Self {
            credential,
            ctx,
            uid: credential.uid().ok_or(Error::MissingField("uid"))?,
            secrets: Api::namespaced(ctx.client.clone(), &namespace),
            namespace,
        })
    }

    async fn run(self) -> Result<Action> {
        let now = self.ctx.clock.now();
        let spec = &self.credential.spec;

        let output = OutputSecret::new(self.secrets.clone(), self.credential);
        let Some(in_place) = output.find().await? else {
            let conflict = Problem::new(
                Reason::SecretConflict,
                format!(
                    "Secret {:?} already exists and is not owned by this NsApiCredential; it is \
                     left untouched. Delete it, or choose another spec.tokenSecret.name",
                    spec.token_secret.name
                ),
            );
            return self.report(None, Outcome::Blocked(&conflict)).await;
        };
        let times = in_place.token.as_ref().map(|t| t.times);

        let valid = match policy::validate(spec, &self.ctx.policy) {
            Ok(valid) => valid,
            Err(problem) => return self.report(times, Outcome::Blocked(&problem)).await,
        };
        if spec.suspend {
            return self.report(times, Outcome::Suspended).await;
        }
        let (client, subscriber) = match self.load_inputs().await? {
            Ok(inputs) => inputs,
            Err(problem) => return self.report(times, Outcome::Blocked(&problem)).await,
        };
        let fingerprint = inputs::fingerprint(&valid, &client, &subscriber);

        // The newest token obtained for these inputs, if it is still valid and not older than
        // the one in place: a token whose write failed is written now without a new grant, and
        // an output Secret that was edited or deleted is restored from it.
        let held = self.ctx.sessions.held_token(&self.uid).filter(|held| {
            held.stored.inputs_fingerprint == fingerprint
                && held.stored.times.is_valid_at(now)
                && in_place
                    .token
                    .as_ref()
                    .is_none_or(|t| held.stored.times.issued_at >= t.times.issued_at)
        });
        if let Some(HeldToken {
            stored,
            unwritten: Some(minted),
        }) = &held
        {
            info!("writing the token obtained in an earlier pass");
            return self
                .write_obtained(&output, &in_place, &valid, (stored, minted), &fingerprint)
                .await;
        }
        let token = held.as_ref().map(|h| &h.stored).or(in_place.token.as_ref());
        let times = token.map(|t| t.times);
        let current = token.map(|t| CurrentToken {
            times: t.times,
            inputs_match: t.inputs_fingerprint == fingerprint,
        });
        let seed = self.seed(times);
        match schedule::decide(
            now,
            current,
            valid.refresh_before,
            seed,
            self.failure_gate(&fingerprint),
        ) {
            Decision::Wait { until, reason } => {
                debug!(?reason, until = %rfc3339(until), "no token needed now");
                let mut confirmed = None;
                if let Some(token) = token {
                    if let Err(error) = output.write(token, &in_place).await {
                        return self.write_failed(error, times).await;
                    }
                    self.ctx.sessions.written(&self.uid, token);
                    confirmed = Some(spec.token_secret.name.as_str());
                }
                let waiting = Outcome::Waiting {
                    until,
                    token_secret: confirmed,
                };
                self.report(times, waiting).await
            }
            Decision::Mint(why) => {
                if self.ctx.namespaces.terminating(&self.namespace).await {
                    info!("the namespace is being deleted: no token is obtained");
                    self.ctx.forget(self.credential);
                    return Ok(Action::await_change());
                }
                info!(?why, "obtaining a token");
                let grants = Grants {
                    nsapi: &self.ctx.nsapi,
                    sessions: &self.ctx.sessions,
                    metrics: &self.ctx.metrics,
                    limiter: &self.ctx.limiter,
                    uid: &self.uid,
                    deadline: times.map_or(now, |t| t.expires_at),
                };
                match grants
                    .obtain(&valid, &client, &subscriber, &fingerprint, why)
                    .await
                {
                    Ok(minted) => {
                        let stored = StoredToken::from_grant(
                            &minted.grant,
                            valid.base_url.as_str(),
                            &fingerprint,
                        );
                        // Held before the write: if the write fails, the next pass writes this
                        // token instead of obtaining another one.
                        self.ctx
                            .sessions
                            .hold_unwritten(&self.uid, stored.clone(), minted.clone());
                        self.write_obtained(
                            &output,
                            &in_place,
                            &valid,
                            (&stored, &minted),
                            &fingerprint,
                        )
                        .await
                    }
                    Err(error) => {
                        let failed = Outcome::Failed {
                            error: &error,
                            fingerprint: &fingerprint,
                            seed,
                        };
                        self.report(times, failed).await
                    }
                }
            }
        }
    }

    /// Writes a token obtained (in this pass or an earlier one) and reports it.
    async fn write_obtained(
        &self,
        output: &OutputSecret<'_>,
        in_place: &InPlace,
        valid: &ValidSpec,
        (stored, minted): (&StoredToken, &Minted),
        fingerprint: &str,
    ) -> Result<Action> {
        if let Err(error) = output.write(stored, in_place).await {
            let times = in_place.token.as_ref().map(|t| t.times);
            return self.write_failed(error, times).await;
        }
        self.ctx.sessions.written(&self.uid, stored);
        let next_refresh_at = schedule::refresh_at(
            stored.times,
            valid.refresh_before,
            self.seed(Some(stored.times)),
        );
        let obtained = Outcome::Obtained(Obtained {
            grant: &minted.grant,
            info: minted.info.as_ref(),
            fallback_from: minted.fallback_from.as_ref(),
            times: stored.times,
            next_refresh_at,
            fingerprint,
            token_secret: &self.credential.spec.token_secret.name,
        });
        let times = in_place.token.as_ref().map(|t| t.times);
        self.report(times, obtained).await
    }

    /// A refused write of the output Secret: retried with backoff (the token stays held), unless
    /// the namespace is going away, or the API server found the Secret invalid (a label the
    /// schema let through, say): that is the user's to fix, so it becomes a condition.
    async fn write_failed(&self, error: Error, token: Option<TokenTimes>) -> Result<Action> {
        match &error {
            Error::Kube(e) if is_namespace_terminating(e) => {
                info!("the namespace is being deleted: the output Secret is not written");
                self.ctx.namespaces.remember(&self.namespace, true);
                self.ctx.forget(self.credential);
                Ok(Action::await_change())
            }
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => {
                let problem = Problem::new(
                    Reason::InvalidSpec,
                    format!(
                        "the API server refused the output Secret {:?} as invalid ({}): fix spec.tokenSecret",
                        self.credential.spec.token_secret.name,
                        truncate(&status.message, 300)
                    ),
                );
                self.report(token, Outcome::Blocked(&problem)).await
            }
            _ => Err(error),
        }
    }

    /// Records what `status` decided: metrics, Events, then the status (only if it changed).
    async fn report(&self, token: Option<TokenTimes>, outcome: Outcome<'_>) -> Result<Action> {
        let old = self.credential.status.clone().unwrap_or_default();
        let pass = Pass {
            old: &old,
            generation: self.credential.metadata.generation,
            now: self.ctx.clock.now(),
            token,
        };
        let report = status::next(pass, outcome);
        log(&outcome, &report);
        self.ctx
            .metrics
            .token_times(self.credential, report.expires_at, report.next_request_at);
        for note in &report.events {
            self.event(note).await;
        }
        if report.status != old {
            self.write_status(&report).await?;
        }
        Ok(report
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue))
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

    /// The last failure's retry time, from the status as read.
    fn failure_gate(&self, fingerprint: &str) -> Option<FailureGate> {
        let status = self.credential.status.as_ref()?;
        if status.consecutive_failures == 0 {
            return None;
        }
        Some(FailureGate {
            retry_at: status.next_refresh_at.as_ref()?.0,
            inputs_match: status.inputs_fingerprint.as_deref() == Some(fingerprint),
        })
    }

    /// Picks this credential's jitter: stable for a given token, different across credentials.
    fn seed(&self, token: Option<TokenTimes>) -> u64 {
        let issued = token.map(|t| rfc3339(t.issued_at)).unwrap_or_default();
        schedule::seed_of(&[&self.uid, &issued])
    }

    async fn write_status(&self, report: &Report) -> Result<()> {
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
            "status": report.status,
        });
        api.patch_status(
            &self.credential.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    async fn event(&self, note: &Note) {
        let event = Event {
            type_: note.type_,
            reason: note.reason.as_str().to_owned(),
            note: Some(truncate(&note.message, MAX_EVENT_NOTE)),
            action: "ObtainToken".to_owned(),
            secondary: None,
        };
        let reference = self.credential.object_ref(&());
        if let Err(error) = self.ctx.recorder.publish(&event, &reference).await {
            warn!(%error, "could not record an event");
        }
    }
}

/// One log line for what a pass decided (Events carry the same words for users).
fn log(outcome: &Outcome<'_>, report: &Report) {
    let next = report.status.next_refresh_at.as_ref().map(|t| rfc3339(t.0));
    match outcome {
        Outcome::Blocked(problem) if !report.events.is_empty() => {
            warn!(reason = %problem.reason, message = %problem.message, "credential cannot be acted on");
        }
        Outcome::Failed { error, .. } => {
            let reason = report.events.first().map(|n| n.reason.as_str());
            warn!(reason, error = %error, consecutive_failures = report.status.consecutive_failures, retry_at = next, "could not obtain a token");
        }
        Outcome::Obtained(o) => {
            info!(grant = o.grant.grant.as_str(), expires_at = %rfc3339(o.times.expires_at), next_refresh_at = next, "token obtained");
        }
        _ => {}
    }
}
