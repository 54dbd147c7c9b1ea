//! The API calls about the pods and workloads that read a credential's token, beside the
//! operator, in the credential's namespace only: restarting the `rolloutRestartTargets` after
//! each new token (those that consent to it), and a namespaced list of pods at rotation time
//! (never a cache). What to do is decided in `core::restarts`.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use crate::core::crd::{
    FIELD_MANAGER, NsApiCredential, RESTARTED_AT_ANNOTATION, RolloutRestartTarget, WorkloadKind,
    WorkloadRestart,
};
use crate::core::restarts::{
    RestartFailure, RestartPlan, RestartReport, TargetState, consent, failure_kind, plan,
    stale_consumers,
};

/// The API calls about consumers, in one namespace.
pub struct Consumers {
    client: kube::Client,
    namespace: String,
}

impl Consumers {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
        }
    }

    /// After a new token: the restarts, and (with `check_pods`, the operator's
    /// `--consumer-check`) the pods that will keep the old token.
    pub async fn after_new_token(
        &self,
        credential: &NsApiCredential,
        issued: Timestamp,
        now: Timestamp,
        check_pods: bool,
    ) -> (RestartReport, Option<Vec<String>>) {
        let restarts = self.restart_if_due(credential, issued, now).await;
        let spec = &credential.spec;
        let stale = if check_pods {
            self.stale(&spec.token_secret.name, &spec.rollout_restart_targets)
                .await
        } else {
            None
        };
        (restarts, stale)
    }

    /// Restarts a credential's targets not yet restarted for the token issued at `issued`
    /// (no API call when every one was).
    pub async fn restart_if_due(
        &self,
        credential: &NsApiCredential,
        issued: Timestamp,
        now: Timestamp,
    ) -> RestartReport {
        let targets = &credential.spec.rollout_restart_targets;
        let records: Vec<WorkloadRestart> = credential
            .status
            .iter()
            .flat_map(|s| &s.restarts)
            .filter(|r| {
                targets
                    .iter()
                    .any(|t| r.kind == t.kind.as_str() && r.name == t.name)
            })
            .cloned()
            .collect();
        let done = |t: &RolloutRestartTarget| {
            records.iter().any(|r| {
                r.kind == t.kind.as_str() && r.name == t.name && r.restarted_at.0 >= issued
            })
        };
        let credential_name = credential.metadata.name.clone().unwrap_or_default();
        let token_secret = credential.spec.token_secret.name.clone();
        if targets.iter().all(done) {
            return RestartReport {
                records,
                targets: targets.len(),
                credential: credential_name,
                token_secret,
                ..RestartReport::default()
            };
        }
        let consumer = (credential_name.as_str(), token_secret.as_str());
        self.restart(targets, records, consumer, issued, now).await
    }

    /// Restarts what needs a restart for the token issued at `token_issued`, of the targets
    /// that consent to restarts by `credential` (a name) whose output Secret is `secret`.
    pub async fn restart(
        &self,
        targets: &[RolloutRestartTarget],
        records: Vec<WorkloadRestart>,
        (credential, secret): (&str, &str),
        token_issued: Timestamp,
        now: Timestamp,
    ) -> RestartReport {
        let mut report = RestartReport {
            records,
            targets: targets.len(),
            credential: credential.to_owned(),
            token_secret: secret.to_owned(),
            ..RestartReport::default()
        };
        for target in targets {
            let (kind, name) = (target.kind.as_str().to_owned(), target.name.clone());
            let ours = report
                .records
                .iter()
                .find(|r| r.kind == kind && r.name == name)
                .map(|r| r.restarted_at.0);
            let failed = |(code, why): (Option<u16>, String)| RestartFailure {
                kind: kind.clone(),
                name: name.clone(),
                why,
                failure: failure_kind(code),
            };
            let state = match self.workload(target).await {
                Ok(Some((meta, template))) => {
                    let annotations = meta.annotations.as_ref();
                    if !consent(annotations, template.spec.as_ref(), secret, credential).given() {
                        report.not_consented.push((kind, name));
                        continue;
                    }
                    TargetState {
                        ours,
                        annotation: template
                            .metadata
                            .and_then(|m| m.annotations)
                            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION).cloned())
                            .and_then(|v| v.parse::<Timestamp>().ok()),
                        created: meta.creation_timestamp.as_ref().map(|t| t.0),
                    }
                }
                Ok(None) => {
                    report.missing.push((kind, name));
                    continue;
                }
                Err(error) => {
                    report.failed.push(failed(error));
                    continue;
                }
            };
            match plan(state, token_issued, now) {
                RestartPlan::Done => {}
                RestartPlan::Later(at) => report.pending.push((kind, name, at)),
                RestartPlan::Now => match self.patch(target, now).await {
                    Ok(()) => {
                        let record = WorkloadRestart {
                            kind: kind.clone(),
                            name: name.clone(),
                            restarted_at: crate::core::clock::whole_seconds(now),
                        };
                        report.records.retain(|r| r.kind != kind || r.name != name);
                        report.records.push(record);
                        report.restarted.push((kind, name));
                    }
                    Err(error) => report.failed.push(failed(error)),
                },
            }
        }
        report
    }

    /// A target's metadata and pod template; `None` if it does not exist.
    async fn workload(
        &self,
        target: &RolloutRestartTarget,
    ) -> Result<Option<(ObjectMeta, PodTemplateSpec)>, (Option<u16>, String)> {
        let ns = &self.namespace;
        let client = self.client.clone();
        let result = match target.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, ns)
                .get_opt(&target.name)
                .await
                .map(|w| w.map(|w| (w.metadata, w.spec.template))),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, ns)
                .get_opt(&target.name)
                .await
                .map(|w| w.map(|w| (w.metadata, w.spec.template))),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client, ns)
                .get_opt(&target.name)
                .await
                .map(|w| w.map(|w| (w.metadata, w.spec.template))),
        };
        result.map_err(|e| describe(&e))
    }

    async fn patch(
        &self,
        target: &RolloutRestartTarget,
        now: Timestamp,
    ) -> Result<(), (Option<u16>, String)> {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: crate::core::clock::rfc3339(now)
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let (ns, client, name) = (&self.namespace, self.client.clone(), &target.name);
        let result = match target.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client, ns)
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        result.map_err(|e| describe(&e))
    }

    /// The pods of the namespace that read `secret` and never see a new token; `None` when the
    /// list fails (the chart grants it with `consumerCheck.enabled`, with the flag).
    pub async fn stale(
        &self,
        secret: &str,
        targets: &[RolloutRestartTarget],
    ) -> Option<Vec<String>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        match pods.list(&ListParams::default()).await {
            Ok(list) => Some(stale_consumers(&list.items, secret, targets)),
            Err(error) => {
                warn!(%error, "cannot list pods; consumers are not checked (--consumer-check needs list on pods)");
                None
            }
        }
    }
}

/// A Kubernetes error's HTTP status (`None`: no answer) and a few words (its status message,
/// which names no secret).
fn describe(error: &kube::Error) -> (Option<u16>, String) {
    match error {
        kube::Error::Api(status) => (
            Some(status.code),
            format!("{} ({})", status.message, status.code),
        ),
        other => (None, crate::core::text::truncate(&other.to_string(), 200)),
    }
}
