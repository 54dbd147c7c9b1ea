//! What the credential watch keeps of each credential: its name, namespace, UID and resource
//! version, the Secrets it uses and a digest of what its user wrote. A pass reads the
//! credential afresh from the API server, so the watch's copy only has to name it, index it and
//! tell a user's change from the operator's own status write. At 10,000 credentials the whole `NsApiCredential` kept by the
//! reflector (1.3 KiB inline before its strings) was the largest holder of the heap left.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Deserialize;

use crate::core::crd::{CaBundleKind, NsApiCredential};
use crate::core::inputs::input_secret_names;

/// A credential as the watch keeps it. It is read from the API server as an `NsApiCredential`
/// (the same JSON) and reduced at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "NsApiCredential")]
pub struct Watched {
    /// Name, namespace, UID, resource version and deletion timestamp only. The watch resumes
    /// from the resource version of the last object it saw: without it, every event would
    /// start a re-list. A credential being deleted is owed no pass (`sweep`).
    metadata: ObjectMeta,
    /// The Secrets it reads: the inputs, and a CA bundle kept in a Secret.
    inputs: Box<[String]>,
    /// The Secrets it writes: `spec.tokenSecret.name`, and the name written before a rename
    /// while the status still names it.
    outputs: Box<[String]>,
    /// A digest of what the user writes: generation, labels, annotations.
    user_part: u64,
}

impl Watched {
    /// The watch's view of `credential`.
    pub fn of(credential: &NsApiCredential) -> Self {
        let spec = &credential.spec;
        let mut inputs: Vec<String> = input_secret_names(spec)
            .into_iter()
            .map(str::to_owned)
            .collect();
        // A CA bundle in a Secret (one in a ConfigMap is read at each attempt).
        if let Some(bundle) = spec
            .ca_bundle
            .as_ref()
            .filter(|b| b.kind == CaBundleKind::Secret)
        {
            inputs.push(bundle.name.clone());
        }
        let mut outputs = vec![spec.token_secret.name.clone()];
        if let Some(previous) = credential
            .status
            .as_ref()
            .and_then(|s| s.token_secret_name.as_ref())
            .filter(|previous| **previous != spec.token_secret.name)
        {
            outputs.push(previous.clone());
        }
        let meta = &credential.metadata;
        Self {
            metadata: ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                deletion_timestamp: meta.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            inputs: inputs.into(),
            outputs: outputs.into(),
            user_part: user_part(credential),
        }
    }

    /// The names of the Secrets it uses, inputs and outputs, in no particular order (a name can
    /// appear twice).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().chain(&*self.outputs).map(String::as_str)
    }

    /// Whether it is being deleted (it waits for finalizers: its pass does nothing).
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The output Secrets' names.
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(String::as_str)
    }

    /// A digest of what the user writes (spec, through the generation; labels; annotations):
    /// equal before and after a status write.
    pub fn user_part(&self) -> u64 {
        self.user_part
    }
}

impl From<NsApiCredential> for Watched {
    fn from(credential: NsApiCredential) -> Self {
        Self::of(&credential)
    }
}

fn user_part(credential: &NsApiCredential) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    credential.metadata.generation.hash(&mut hasher);
    credential.labels().hash(&mut hasher);
    // `kubectl apply`'s copy of the object changes with every apply, with the spec (so the
    // generation) when it matters.
    for (key, value) in credential.annotations() {
        if key != "kubectl.kubernetes.io/last-applied-configuration" {
            (key, value).hash(&mut hasher);
        }
    }
    hasher.finish()
}

impl Resource for Watched {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        NsApiCredential::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        NsApiCredential::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        NsApiCredential::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        NsApiCredential::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn credential(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({
            "apiVersion": "nsapi.io/v1alpha1", "kind": "NsApiCredential",
            "metadata": {"name": "abc", "namespace": "ns", "uid": "u1", "generation": 3,
                         "resourceVersion": "42", "labels": {"team": "voice"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"apiBaseUrl": "https://p.example.com", "clientSecretRef": {"name": "client"},
                     "subscriberSecretRef": {"name": "subscriber"},
                     "tokenSecret": {"name": "token", "labels": {"a": "b"}}},
            "status": {"tokenSecretName": "old-token", "observedGeneration": 2,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "R",
                       "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        });
        json_merge(&mut c, extra);
        c
    }

    fn json_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    json_merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (t, p) => *t = p,
        }
    }

    fn watched(extra: serde_json::Value) -> Watched {
        serde_json::from_value(credential(extra)).unwrap()
    }

    #[test]
    fn keeps_the_name_the_secrets_and_nothing_else() {
        let w = watched(
            json!({"spec": {"mfa": {"totpSecretRef": {"name": "totp", "key": "seed"}},
                                        "caBundle": {"kind": "Secret", "name": "ca", "key": "ca.crt"}}}),
        );
        assert_eq!(w.name_any(), "abc");
        assert_eq!(w.namespace().as_deref(), Some("ns"));
        assert_eq!(w.uid().as_deref(), Some("u1"));
        assert_eq!(
            w.secret_names().collect::<Vec<_>>(),
            ["client", "subscriber", "totp", "ca", "token", "old-token"]
        );
        assert_eq!(w.outputs().collect::<Vec<_>>(), ["token", "old-token"]);
        // The watch resumes from it (kube's watcher re-lists after an object without one).
        assert_eq!(w.resource_version().as_deref(), Some("42"));
        // What the watch does not need is not kept.
        assert_eq!(w.meta().labels, None);
        assert_eq!(w.meta().annotations, None);
        assert_eq!(w.meta().managed_fields, None);
    }

    #[test]
    fn a_ca_bundle_in_a_config_map_and_a_settled_rename_are_not_secrets_it_uses() {
        let w = watched(
            json!({"spec": {"caBundle": {"kind": "ConfigMap", "name": "ca", "key": "ca.crt"}},
                               "status": {"tokenSecretName": "token"}}),
        );
        assert_eq!(
            w.secret_names().collect::<Vec<_>>(),
            ["client", "subscriber", "token"]
        );
    }

    #[test]
    fn the_user_part_changes_with_what_the_user_writes_and_not_with_the_status() {
        let base = watched(json!({})).user_part();
        let status = watched(
            json!({"status": {"observedGeneration": 3, "servedBy": "https://p.example.com", "tokenSecretName": "x"}}),
        );
        assert_eq!(status.user_part(), base, "a status write");
        let applied = watched(
            json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}"}}}),
        );
        assert_eq!(applied.user_part(), base, "kubectl's copy of the object");
        for (what, change) in [
            ("generation", json!({"metadata": {"generation": 4}})),
            ("labels", json!({"metadata": {"labels": {"team": "data"}}})),
            (
                "annotations",
                json!({"metadata": {"annotations": {"nsapi.io/renew-requested-at": "now"}}}),
            ),
        ] {
            assert_ne!(watched(change).user_part(), base, "{what}");
        }
    }

    #[test]
    fn is_a_credential_to_the_api() {
        assert_eq!(Watched::kind(&()), "NsApiCredential");
        assert_eq!(Watched::api_version(&()), "nsapi.io/v1alpha1");
        assert_eq!(Watched::plural(&()), "nsapicredentials");
    }

    #[test]
    fn is_small() {
        // The reflector keeps one per credential; `NsApiCredential` is 1,304 bytes inline,
        // `ObjectMeta` 360 of them (the watch needs one to key its store).
        let (watched, meta) = (
            std::mem::size_of::<Watched>(),
            std::mem::size_of::<ObjectMeta>(),
        );
        assert!(watched <= meta + 48, "{watched} bytes, ObjectMeta {meta}");
        assert!(std::mem::size_of::<NsApiCredential>() > 3 * watched);
    }
}
