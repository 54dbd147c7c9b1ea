//! One reconcile pass over one credential, and only its IO: read the credential, the output
//! Secret and the inputs; ask `schedule` whether a token is due; call the NetSapiens API; write
//! the output Secret; then record what `status` decided (metrics, Events, the status). Every
//! decision is taken by the pure modules.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, error, info, instrument};

use crate::cluster::consumers::Consumers;
use crate::cluster::context::Context;
use crate::cluster::namespaces::is_namespace_terminating;
use crate::cluster::output_secret::{self, InPlace, OutputSecret};
use crate::cluster::record::{Next, Record};
use crate::cluster::trust;
use crate::cluster::watched::Watched;
use crate::cluster::{Error, Result};
use crate::core::clock::{later, rfc3339};
use crate::core::conditions::{Problem, Reason};
use crate::core::crd::{NsApiCredential, NsApiCredentialSpec, NsApiCredentialStatus};
use crate::core::credentials::{ClientCredentials, SubscriberCredentials};
use crate::core::inputs;
use crate::core::policy::{self, ValidSpec};
use crate::core::schedule::{self, CurrentToken, Decision, MintReason, TokenTimes, WaitReason};
use crate::core::status::{self, Extras, Obtained, Outcome};
use crate::core::token::Minted;
use crate::core::token_secret::StoredToken;
use crate::nsapi::nodes::is_outage;
use crate::nsapi::sessions::HeldToken;

/// How soon a credential whose CA bundle is missing or unusable is looked at again.
const CA_BUNDLE_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Reconciles one credential, starting from the object as the API server has it now: the
/// watch cache can lag behind this operator's own last status write, and a decision taken on a
/// stale status (failure count, retry time) could mint a token that is not due.
#[instrument(skip_all, fields(namespace = cached.namespace().unwrap_or_default(), credential = %cached.name_any()))]
pub async fn reconcile(cached: Arc<Watched>, ctx: Arc<Context>) -> Result<Next> {
    ctx.metrics.reconcile();
    let (namespace, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    let uid = cached.uid().unwrap_or_default();
    ctx.metrics.queue.started(&namespace, &name);
    let started = std::time::Instant::now();
    let result = reconcile_now(cached, &ctx).await;
    ctx.metrics.reconcile_duration(started.elapsed());
    match &result {
        // A failed pass is requeued by `controller::error_policy`, which books it.
        Err(_) => {}
        Ok(_) if ctx.is_gone(&uid) => ctx.metrics.queue.forget(&namespace, &name),
        Ok(next) => {
            ctx.metrics
                .queue
                .finished(&namespace, &name, std::time::Instant::now(), next.after())
        }
    }
    result
}

async fn reconcile_now(cached: Arc<Watched>, ctx: &Arc<Context>) -> Result<Next> {
    let ctx = ctx.clone();
    let namespace = cached.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<NsApiCredential> = Api::namespaced(ctx.client.clone(), &namespace);
    let credential = match api.get_opt(&cached.name_any()).await? {
        // Being deleted: its Secret goes with it (ownerReference), so no token is obtained or
        // written for it any more, even when its Secret is collected first.
        Some(c) if c.metadata.deletion_timestamp.is_none() => c,
        _ => {
            ctx.forget(&cached);
            return Ok(Next::await_change());
        }
    };
    let pass = Reconcile::new(&credential, &ctx)?;
    // A panic in one credential's pass (a bug) must not end the process and stop every other
    // credential's rotation: it becomes this credential's condition and a retry with backoff.
    let result = match AssertUnwindSafe(pass.run()).catch_unwind().await {
        Ok(result) => result,
        Err(_) => return internal_error(&credential, &ctx).await,
    };
    let uid = credential.uid().unwrap_or_default();
    // Deleted while this pass ran (its last writes may have failed for that): what the pass
    // left (a session, metric series, own-write records) is forgotten again, and nothing is
    // scheduled.
    if ctx.is_gone(&uid) {
        debug!("deleted while its pass ran: forgotten");
        ctx.forget(&Watched::of(&credential));
        return Ok(Next::await_change());
    }
    let action = result?;
    ctx.kube_retries.clear(&uid);
    Ok(action)
}

/// After a pass panicked: `InternalError` on the credential (the panic's text is not used: it
/// is a bug's words, not a message for users, and is in the log), and a retry with the same
/// backoff as a failed Kubernetes call.
async fn internal_error(credential: &NsApiCredential, ctx: &Context) -> Result<Next> {
    let uid = credential.uid().unwrap_or_default();
    error!(
        namespace = credential.namespace().unwrap_or_default(),
        credential = %credential.name_any(),
        "a pass panicked (a bug); other credentials are not affected"
    );
    ctx.metrics.reconcile_error("internal");
    let delay = ctx.kube_retries.next_delay(&uid);
    let problem = Problem::new(
        Reason::InternalError,
        format!(
            "a pass over this credential stopped on an internal error (a bug in the operator: \
             please report it with the operator's log); other credentials are not affected; \
             retried in {}s",
            delay.as_secs()
        ),
    );
    Record { credential, ctx }
        .report(None, Outcome::Blocked(&problem), Extras::default())
        .await?;
    Ok(Next::requeue(delay))
}

/// One pass over one credential.
struct Reconcile<'a> {
    credential: &'a NsApiCredential,
    ctx: &'a Context,
    uid: String,
    namespace: String,
    secrets: Api<Secret>,
    /// The optional settings found invalid when the spec was checked in this pass.
    ignored: Mutex<Option<Vec<String>>>,
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
            ignored: Mutex::new(None),
        })
    }

    async fn run(self) -> Result<Next> {
        let now = self.ctx.clock.now();
        let spec = &self.credential.spec;
        if let Some(target) = &self.ctx.panic_on {
            let this = format!("{}/{}", self.namespace, self.credential.name_any());
            assert!(
                *target != this,
                "NSAPI_TEST_PANIC_CREDENTIAL: a pass over {this}"
            );
        }

        let output = OutputSecret::new(self.secrets.clone(), self.credential, &self.ctx.own_writes);
        let Some(in_place) = output.find().await? else {
            let conflict = output_secret::conflict(self.credential);
            return self
                .report(None, Outcome::Blocked(&conflict), Extras::default())
                .await;
        };
        let times = in_place.token.as_ref().map(|t| t.times);

        let valid = match policy::validate(spec, &self.ctx.policy) {
            Ok(valid) => {
                *self.ignored_lock() = Some(valid.ignored.clone());
                valid
            }
            Err(problem) => {
                return self
                    .report(times, Outcome::Blocked(&problem), Extras::default())
                    .await;
            }
        };
        if spec.suspend {
            return self
                .report(times, Outcome::Suspended, Extras::default())
                .await;
        }
        let (client, subscriber) = match load_inputs(&self.secrets, spec).await? {
            Ok(inputs) => inputs,
            Err(problem) => {
                return self
                    .report(times, Outcome::Blocked(&problem), Extras::default())
                    .await;
            }
        };
        let ctx = self.ctx;
        let trusted = trust::client_for_credential(
            &ctx.client,
            &ctx.trusted,
            &ctx.nsapi,
            &self.namespace,
            spec.ca_bundle.as_ref(),
        )
        .await?;
        let (nsapi, ca_digest) = match trusted {
            Ok(trusted) => trusted,
            Err(problem) => {
                self.report(times, Outcome::Blocked(&problem), Extras::default())
                    .await?;
                // A ConfigMap is not watched: look again in a while.
                return Ok(Next::requeue(CA_BUNDLE_RECHECK));
            }
        };
        // The token's inputs, and what the status records of this attempt (a change to it lifts
        // a backoff): computed as the CLI's `check` computes them.
        let inputs::Fingerprints {
            token: fingerprint,
            attempt,
        } = inputs::fingerprints(&valid, &client, &subscriber, ca_digest.as_deref());

        // The newest token obtained for these inputs, if it is still valid and not older than
        // the one in place: a token whose write failed is written now without a new grant, and
        // an output Secret that was edited or deleted is restored from it.
        let held = self
            .ctx
            .sessions
            .held_token(&self.uid)
            .filter(|held| held.supersedes(in_place.token.as_ref(), &fingerprint, now));
        if let Some(HeldToken {
            stored,
            unwritten: Some(minted),
        }) = &held
        {
            info!("writing the token obtained in an earlier pass");
            return self
                .write_obtained(
                    &output,
                    &in_place,
                    &valid,
                    (stored, minted),
                    &attempt,
                    Extras::default(),
                )
                .await;
        }
        let token = held.as_ref().map(|h| &h.stored).or(in_place.token.as_ref());
        let times = token.map(|t| t.times);
        let current = token.map(|t| CurrentToken {
            times: t.times,
            inputs_match: t.inputs_fingerprint == fingerprint,
        });
        let seed = schedule::token_seed(&self.uid, times);
        let renew = status::renew_request(self.credential);
        // Woken by its host's answer after waiting out an outage: the backoff of the outage's
        // failures is over.
        let failure = status::failure_gate(self.status(), &attempt)
            .filter(|_| !self.ctx.outages.take_lifted(&self.uid));
        let mut extras = Extras::default();
        let mut decision = schedule::decide(
            now,
            current,
            valid.refresh_before,
            seed,
            failure,
            renew.is_some(),
        );
        // A token is checked only while no failure is being backed off from: a refused check
        // then would ask for a token every interval, past the backoff.
        if let (
            Decision::Wait {
                reason: WaitReason::Fresh,
                ..
            },
            Some(token),
            Some(interval),
        ) = (decision, token, valid.verify_interval)
        {
            let last = self.status().and_then(|s| s.last_verified_at.as_ref());
            let check = ctx
                .grants(
                    &nsapi,
                    ca_digest.as_deref().unwrap_or(""),
                    &self.uid,
                    token.times.expires_at,
                )
                .check_if_due(&valid, token, interval, last.map(|t| t.0))
                .await;
            extras.next_check = Some(check.next_check);
            extras.verified_at = check.verified_at;
            extras.revoked = check.revoked;
            if check.suspect {
                self.ignored_lock().get_or_insert_default().push(format!(
                    "spec.verifyInterval: the API refused {} new tokens within an hour; the check itself looks wrong (a permission error?), so a refusal no longer replaces the token for now",
                    schedule::MAX_REVOCATIONS_PER_HOUR
                ));
            }
            if check.revoked {
                decision = Decision::Mint(MintReason::Revoked);
            }
        }
        match decision {
            Decision::Wait { until, reason } => {
                debug!(?reason, until = %rfc3339(until), "no token needed now");
                let mut confirmed = None;
                let mut restarts = None;
                if let Some(token) = token {
                    if let Err(error) = output.write(token, &in_place).await {
                        return self.write_failed(error, times).await;
                    }
                    self.ctx.sessions.written(&self.uid, token);
                    confirmed = Some(spec.token_secret.name.as_str());
                    restarts = Some(
                        self.consumers()
                            .restart_if_due(self.credential, token.times.issued_at, now)
                            .await,
                    );
                }
                extras.restarts = restarts.as_ref();
                let waiting = Outcome::Waiting {
                    until,
                    token_secret: confirmed,
                };
                self.report(times, waiting, extras).await
            }
            Decision::Mint(why) => {
                if self.ctx.namespaces.terminating(&self.namespace).await {
                    info!("the namespace is being deleted: no token is obtained");
                    self.ctx.forget(&Watched::of(self.credential));
                    return Ok(Next::await_change());
                }
                info!(?why, "obtaining a token");
                extras.renew_honoured = renew.as_deref();
                let trust = ca_digest.as_deref().unwrap_or("");
                let deadline = times.map_or(now, |t| t.expires_at);
                let obtained = ctx
                    .grants(&nsapi, trust, &self.uid, deadline)
                    .obtain(&valid, &client, &subscriber, &fingerprint, why)
                    .await;
                // Found its host down: it waits on the host's nodes too, and is woken when one
                // answers; otherwise it waits on nothing.
                match &obtained {
                    Err(error) if is_outage(error) => self.ctx.outages.wait(
                        &self.uid,
                        (&self.namespace, &self.credential.name_any()),
                        deadline,
                        trust,
                        valid.nodes(),
                    ),
                    _ => self.ctx.outages.forget(&self.uid),
                }
                match obtained {
                    Ok(minted) => {
                        let stored = StoredToken::from_grant(
                            &minted.grant,
                            minted.served_by.as_str(),
                            &fingerprint,
                        );
                        // Held before the write: if the write fails, the next pass writes this
                        // token instead of obtaining another one.
                        self.ctx
                            .sessions
                            .hold_unwritten(&self.uid, stored.clone(), minted.clone());
                        let obtained = (&stored, &minted);
                        self.write_obtained(&output, &in_place, &valid, obtained, &attempt, extras)
                            .await
                    }
                    Err(error) => {
                        let failed = Outcome::Failed {
                            error: &error,
                            fingerprint: &attempt,
                            seed,
                        };
                        self.report(times, failed, extras).await
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
        mut extras: Extras<'_>,
    ) -> Result<Next> {
        if let Err(error) = output.write(stored, in_place).await {
            let times = in_place.token.as_ref().map(|t| t.times);
            return self.write_failed(error, times).await;
        }
        self.ctx.sessions.written(&self.uid, stored);
        if let Some(interval) = valid.verify_interval {
            // The API has just issued it: the first check is one interval from now.
            extras.verified_at = Some(stored.times.issued_at);
            extras.next_check = Some(later(stored.times.issued_at, interval));
        }
        // The workloads to restart, and the pods that will keep the old token.
        let now = self.ctx.clock.now();
        let (restarts, stale) = self
            .consumers()
            .after_new_token(
                self.credential,
                stored.times.issued_at,
                now,
                self.ctx.consumer_check,
            )
            .await;
        extras.restarts = Some(&restarts);
        extras.stale_consumers = stale.as_deref();
        let next_refresh_at = schedule::refresh_at(
            stored.times,
            valid.refresh_before,
            schedule::token_seed(&self.uid, Some(stored.times)),
        );
        let obtained = Outcome::Obtained(Obtained {
            grant: &minted.grant,
            info: minted.info.as_ref(),
            fallback_from: minted.fallback_from.as_ref(),
            times: stored.times,
            next_refresh_at,
            fingerprint,
            served_by: minted.served_by.as_str(),
            token_secret: &self.credential.spec.token_secret.name,
        });
        let times = in_place.token.as_ref().map(|t| t.times);
        self.report(times, obtained, extras).await
    }

    fn consumers(&self) -> Consumers {
        Consumers::new(self.ctx.client.clone(), &self.namespace)
    }

    fn status(&self) -> Option<&NsApiCredentialStatus> {
        self.credential.status.as_ref()
    }

    /// A refused write of the output Secret: retried with backoff (the token stays held), unless
    /// the namespace is going away, or the API server found the Secret invalid (a label the
    /// schema let through, say): that is the user's to fix, so it becomes a condition.
    async fn write_failed(&self, error: Error, token: Option<TokenTimes>) -> Result<Next> {
        match &error {
            Error::Kube(e) if is_namespace_terminating(e) => {
                info!("the namespace is being deleted: the output Secret is not written");
                self.ctx.namespaces.remember(&self.namespace, true);
                self.ctx.forget(&Watched::of(self.credential));
                Ok(Next::await_change())
            }
            Error::Template(error) => {
                let problem = crate::core::conditions::Problem::new(
                    crate::core::conditions::Reason::InvalidSpec,
                    error.to_string(),
                );
                self.report(token, Outcome::Blocked(&problem), Extras::default())
                    .await
            }
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => {
                let problem = output_secret::refused_as_invalid(self.credential, status);
                self.report(token, Outcome::Blocked(&problem), Extras::default())
                    .await
            }
            _ => Err(error),
        }
    }

    fn ignored_lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<String>>> {
        self.ignored
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records what `status` decides from this pass.
    async fn report(
        &self,
        token: Option<TokenTimes>,
        outcome: Outcome<'_>,
        mut extras: Extras<'_>,
    ) -> Result<Next> {
        let ignored = self.ignored_lock().clone();
        extras.ignored_settings = ignored.as_deref();
        Record {
            credential: self.credential,
            ctx: self.ctx,
        }
        .report(token, outcome, extras)
        .await
    }
}

/// Reads the credentials from the input Secrets, each Secret once (a problem with them is a
/// condition, not an error). The CLI's `check` reads them here too.
pub async fn load_inputs(
    secrets: &Api<Secret>,
    spec: &NsApiCredentialSpec,
) -> Result<std::result::Result<(ClientCredentials, SubscriberCredentials), Problem>> {
    let mut found = std::collections::BTreeMap::new();
    for name in inputs::input_secret_names(spec) {
        found.insert(name, secrets.get_opt(name).await?);
    }
    Ok(inputs::credentials(spec, |name| {
        found.get(name).and_then(Option::as_ref)
    }))
}
