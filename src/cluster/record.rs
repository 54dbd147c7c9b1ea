//! Recording one pass (IO): what `status::next` decided becomes metrics, Events and, only when
//! it changed, the status (a conditional server-side apply), and the requeue.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::cluster::Result;
use crate::cluster::context::Context;
use crate::core::clock::rfc3339;
use crate::core::crd::{FIELD_MANAGER, NsApiCredential};
use crate::core::schedule::{self, TokenTimes};
use crate::core::status::{self, EventType, Extras, Note, Outcome, Pass, Report};
use crate::core::text::truncate;

/// When a credential's next pass is due, as a pass decided it: set as the credential's timer
/// (`timers`) and booked by the work queue's book (`telemetry::queue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next(Option<std::time::Duration>);

impl Next {
    pub const fn requeue(after: std::time::Duration) -> Self {
        Self(Some(after))
    }
    /// Only a change (or a re-list) starts the next pass.
    pub const fn await_change() -> Self {
        Self(None)
    }
    pub const fn after(self) -> Option<std::time::Duration> {
        self.0
    }
}

/// Kubernetes limits an Event's note to 1 KiB.
const MAX_EVENT_NOTE: usize = 1000;

/// Where one pass is recorded.
pub struct Record<'a> {
    pub credential: &'a NsApiCredential,
    pub ctx: &'a Context,
}

impl Record<'_> {
    /// Records what `status` decided: metrics, Events, then the status (only if it changed).
    pub async fn report(
        &self,
        token: Option<TokenTimes>,
        outcome: Outcome<'_>,
        extras: Extras<'_>,
    ) -> Result<Next> {
        let old = self.credential.status.clone().unwrap_or_default();
        let pass = Pass {
            old: &old,
            generation: self.credential.metadata.generation,
            now: self.ctx.clock.now(),
            token,
            extras,
        };
        let report = status::next(pass, outcome);
        log(&outcome, &report);
        let lead =
            report
                .expires_at
                .zip(report.status.issued_at.as_ref())
                .map(|(expires, issued)| {
                    let refresh_before =
                        schedule::parse_duration(&self.credential.spec.refresh_before)
                            .unwrap_or(schedule::DEFAULT_REFRESH_BEFORE);
                    schedule::refresh_lead(expires.duration_since(issued.0), refresh_before)
                });
        self.ctx.metrics.token_times(
            self.credential,
            report.expires_at,
            lead,
            report.next_request_at,
        );
        self.ctx
            .metrics
            .credential_status(self.credential, &report.status);
        let reference = self.credential.object_ref(&());
        let routine_events = self.ctx.routine_events;
        for note in report
            .events
            .iter()
            .filter(|n| routine_events || !n.is_routine())
        {
            self.event(note, &reference).await;
        }
        if report.status != old {
            self.write_status(&report).await?;
        }
        Ok(report
            .requeue_after
            .map_or_else(Next::await_change, Next::requeue))
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

    async fn event(&self, note: &Note, reference: &ObjectReference) {
        let event = Event {
            type_: match note.type_ {
                EventType::Normal => kube::runtime::events::EventType::Normal,
                EventType::Warning => kube::runtime::events::EventType::Warning,
            },
            reason: note.reason.as_str().to_owned(),
            note: Some(truncate(&note.message, MAX_EVENT_NOTE)),
            action: "ObtainToken".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.ctx.recorder.publish(&event, reference).await {
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
