//! Pure: the output Secret a token should be written as, and the token read back from a Secret
//! already in the cluster. Knows the Secret's keys and annotations; talks to nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;

use crate::core::clock::rfc3339;
use crate::core::crd::{
    DeletionPolicy, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, MergePolicy, NsApiCredential,
};
use crate::core::credentials::Confidential;
use crate::core::schedule::TokenTimes;
use crate::core::template::{self, TemplateError};
use crate::core::token::TokenGrant;

pub const KEY_ACCESS_TOKEN: &str = "access_token";
pub const KEY_AUTHORIZATION: &str = "authorization";
pub const KEY_TOKEN_TYPE: &str = "token_type";
pub const KEY_EXPIRES_AT: &str = "expires_at";
pub const KEY_API_BASE_URL: &str = "api_base_url";
pub const KEY_DOMAIN: &str = "domain";
pub const KEY_SCOPE: &str = "scope";

pub const ANNOTATION_ISSUED_AT: &str = "nsapi.io/issued-at";
pub const ANNOTATION_EXPIRES_AT: &str = "nsapi.io/expires-at";
/// Keyed digest of the inputs the token was obtained with (see `fingerprint`).
pub const ANNOTATION_INPUTS: &str = "nsapi.io/inputs-fingerprint";
/// The name of the NsApiCredential that writes the Secret: with `deletionPolicy: Retain` the
/// Secret has no owner reference, and this is how a credential of that name takes it back.
pub const ANNOTATION_CREDENTIAL: &str = "nsapi.io/credential";
/// With a template's `mergePolicy: Replace`, what the standard keys would hold and a restart
/// needs (nothing secret) is kept in annotations instead.
pub const ANNOTATION_TOKEN_TYPE: &str = "nsapi.io/token-type";
pub const ANNOTATION_API_BASE_URL: &str = "nsapi.io/api-base-url";
pub const ANNOTATION_DOMAIN: &str = "nsapi.io/domain";
pub const ANNOTATION_SCOPE: &str = "nsapi.io/scope";

/// A token as the output Secret holds it. The refresh token is deliberately absent: every pod
/// that mounts the Secret could read it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredToken {
    pub access_token: Confidential,
    pub token_type: String,
    pub times: TokenTimes,
    pub api_base_url: String,
    pub domain: Option<String>,
    pub scope: Option<String>,
    pub inputs_fingerprint: String,
}

impl StoredToken {
    /// The record of a token just granted. Times are cut to whole seconds, towards the earlier
    /// time: never later than the server's expiry.
    pub fn from_grant(grant: &TokenGrant, api_base_url: &str, inputs_fingerprint: &str) -> Self {
        let floor = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
        StoredToken {
            access_token: grant.access_token.clone(),
            token_type: grant.token_type.clone(),
            times: TokenTimes {
                issued_at: floor(grant.requested_at),
                expires_at: floor(grant.expires_at),
            },
            api_base_url: api_base_url.to_owned(),
            domain: grant.domain.clone(),
            scope: grant.scope.clone(),
            inputs_fingerprint: inputs_fingerprint.to_owned(),
        }
    }
}

/// Who holds the Secret with the output name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    Absent,
    /// Controlled by this NsApiCredential.
    Owned,
    /// Someone else's: never overwritten.
    Foreign,
}

pub fn ownership(secret: Option<&Secret>, credential: &NsApiCredential) -> Ownership {
    let Some(secret) = secret else {
        return Ownership::Absent;
    };
    let uid = credential.meta().uid.as_deref();
    let mut controllers = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true));
    match controllers.next() {
        Some(owner) if Some(owner.uid.as_str()) == uid => Ownership::Owned,
        Some(_) => Ownership::Foreign,
        // No controller: a Secret retained by a credential of this name (deletionPolicy:
        // Retain, or one deleted and created again) is this credential's.
        None if retained_for(secret, credential) => Ownership::Owned,
        None => Ownership::Foreign,
    }
}

/// Whether `secret` was written by the operator for a credential named as `credential`.
fn retained_for(secret: &Secret, credential: &NsApiCredential) -> bool {
    let meta = &secret.metadata;
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let named = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CREDENTIAL))
        .is_some_and(|name| Some(name.as_str()) == credential.meta().name.as_deref());
    labelled && named
}

/// The Secret that should exist for `token`: keys (the standard ones, and what
/// `spec.tokenSecret.template` renders), labels, annotations, type, and, unless
/// `deletionPolicy` is `Retain`, a controller ownerReference to the credential (so it is
/// garbage-collected with it).
pub fn desired_secret(
    credential: &NsApiCredential,
    token: &StoredToken,
) -> Result<Secret, TemplateError> {
    let output = &credential.spec.token_secret;
    let mut labels = output.labels.clone();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    let mut annotations = output.annotations.clone();
    let mut note = |key: &str, value: String| {
        annotations.insert(key.to_owned(), value);
    };
    note(ANNOTATION_ISSUED_AT, rfc3339(token.times.issued_at));
    note(ANNOTATION_EXPIRES_AT, rfc3339(token.times.expires_at));
    note(ANNOTATION_INPUTS, token.inputs_fingerprint.clone());
    if let Some(name) = credential.meta().name.clone() {
        note(ANNOTATION_CREDENTIAL, name);
    }

    let mut data = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
    };
    put(KEY_ACCESS_TOKEN, token.access_token.expose());
    let replace = output
        .template
        .as_ref()
        .is_some_and(|t| t.merge_policy == MergePolicy::Replace);
    if replace {
        note(ANNOTATION_TOKEN_TYPE, token.token_type.clone());
        note(ANNOTATION_API_BASE_URL, token.api_base_url.clone());
        if let Some(domain) = &token.domain {
            note(ANNOTATION_DOMAIN, domain.clone());
        }
        if let Some(scope) = &token.scope {
            note(ANNOTATION_SCOPE, scope.clone());
        }
    } else {
        put(
            KEY_AUTHORIZATION,
            &format!("{} {}", token.token_type, token.access_token.expose()),
        );
        put(KEY_TOKEN_TYPE, &token.token_type);
        put(KEY_EXPIRES_AT, &rfc3339(token.times.expires_at));
        put(KEY_API_BASE_URL, &token.api_base_url);
        if let Some(domain) = &token.domain {
            put(KEY_DOMAIN, domain);
        }
        if let Some(scope) = &token.scope {
            put(KEY_SCOPE, scope);
        }
    }
    if let Some(template) = &output.template {
        let facts = template::TokenFacts {
            access_token: token.access_token.expose(),
            token_type: &token.token_type,
            issued_at: token.times.issued_at,
            expires_at: token.times.expires_at,
            api_base_url: &token.api_base_url,
            domain: token.domain.as_deref(),
            scope: token.scope.as_deref(),
        };
        for (key, value) in template::render(template, facts)? {
            put(&key, &value);
        }
    }

    let owner_references = match output.deletion_policy {
        DeletionPolicy::Delete => credential.controller_owner_ref(&()).map(|o| vec![o]),
        DeletionPolicy::Retain => None,
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(output.name.clone()),
            namespace: credential.meta().namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        type_: Some(output.type_.clone()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Whether writing `desired` would change `existing`: compares the data and what the operator
/// sets in the metadata, ignoring what others add (extra labels, annotations), but noticing a
/// label or annotation the operator applied before and no longer wants (server-side apply then
/// removes it).
pub fn needs_write(existing: &Secret, desired: &Secret) -> bool {
    fn subset(
        want: &Option<BTreeMap<String, String>>,
        have: &Option<BTreeMap<String, String>>,
    ) -> bool {
        let empty = BTreeMap::new();
        let have = have.as_ref().unwrap_or(&empty);
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    }
    let dropped = |field: &str, want: &Option<BTreeMap<String, String>>| {
        applied_keys(existing, field)
            .iter()
            .any(|key| !want.as_ref().is_some_and(|w| w.contains_key(key)))
    };
    existing.data != desired.data
        || existing.type_ != desired.type_
        || !subset(&desired.metadata.labels, &existing.metadata.labels)
        || !subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        || existing.metadata.owner_references != desired.metadata.owner_references
        || dropped("f:labels", &desired.metadata.labels)
        || dropped("f:annotations", &desired.metadata.annotations)
}

/// The keys of `metadata.labels` or `metadata.annotations` (`field` is `f:labels` or
/// `f:annotations`) that the operator's server-side apply owns in `secret`.
fn applied_keys(secret: &Secret, field: &str) -> Vec<String> {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|fields| fields.0.get("f:metadata")?.get(field)?.as_object())
        .flat_map(|keys| {
            keys.keys()
                .filter_map(|k| k.strip_prefix("f:"))
                .map(str::to_owned)
        })
        .collect()
}

/// The Secret to create: the desired Secret without what a later server-side apply could not
/// remove, the user's labels and annotations (fields a create sets stay owned by it). Data keys
/// and the controller reference are created too: `stale_fields` removes them when they are no
/// longer wanted. Where the spec asks for no labels or annotations of its own, the created
/// Secret is the desired one and needs no apply: one write.
pub fn creation_secret(desired: &Secret) -> Secret {
    let mut secret = desired.clone();
    let meta = &mut secret.metadata;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == MANAGED_BY_LABEL);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| ALWAYS_ANNOTATED.contains(&k.as_str()));
    }
    secret
}

/// The annotations every write sets, whatever the spec says.
const ALWAYS_ANNOTATED: [&str; 4] = [
    ANNOTATION_ISSUED_AT,
    ANNOTATION_EXPIRES_AT,
    ANNOTATION_INPUTS,
    ANNOTATION_CREDENTIAL,
];

/// A JSON merge patch that removes from `existing` what `desired` no longer has and a
/// server-side apply cannot remove, because an earlier version set it on creation: data keys
/// (a template's `mergePolicy: Replace`, a key dropped from a template, a key someone else
/// added) and the credential's controller reference (`deletionPolicy: Retain`). `None` when
/// nothing needs removing.
pub fn stale_fields(existing: &Secret, desired: &Secret) -> Option<serde_json::Value> {
    let wanted = desired.data.as_ref();
    let stale_keys: serde_json::Map<String, serde_json::Value> = existing
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !wanted.is_some_and(|w| w.contains_key(*k)))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    let mut metadata = serde_json::Map::new();
    if desired.metadata.owner_references.is_none()
        && let Some(refs) = existing.metadata.owner_references.as_ref()
    {
        let ours = |o: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference| {
            o.controller == Some(true) && o.kind == "NsApiCredential"
        };
        if refs.iter().any(|o| ours(&o)) {
            let kept: Vec<_> = refs.iter().filter(|o| !ours(o)).cloned().collect();
            metadata.insert("ownerReferences".into(), serde_json::json!(kept));
        }
    }
    if stale_keys.is_empty() && metadata.is_empty() {
        return None;
    }
    metadata.insert(
        "resourceVersion".into(),
        serde_json::json!(existing.metadata.resource_version),
    );
    let mut patch = serde_json::json!({ "metadata": metadata });
    if !stale_keys.is_empty() {
        patch["data"] = serde_json::Value::Object(stale_keys);
    }
    Some(patch)
}

/// Why a Secret holds no usable token record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableToken {
    #[error("the Secret has no {0:?} key")]
    MissingKey(&'static str),
    #[error("the Secret has no {0} annotation")]
    MissingAnnotation(&'static str),
    #[error("the {0} annotation is not an RFC 3339 time")]
    BadTime(&'static str),
    #[error("the {0:?} key is not UTF-8")]
    NotUtf8(&'static str),
}

/// Reads back the token an owned Secret holds, so a restarted operator knows whether it is
/// still fresh without calling the API.
pub fn read_token(secret: &Secret) -> Result<StoredToken, UnreadableToken> {
    let data = secret.data.as_ref();
    let text = |key: &'static str| -> Result<Option<String>, UnreadableToken> {
        match data.and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone())
                .map(Some)
                .map_err(|_| UnreadableToken::NotUtf8(key)),
        }
    };
    let required = |key: &'static str| text(key)?.ok_or(UnreadableToken::MissingKey(key));
    let annotations = secret.metadata.annotations.as_ref();
    let annotation = |key: &'static str| {
        annotations
            .and_then(|a| a.get(key))
            .cloned()
            .ok_or(UnreadableToken::MissingAnnotation(key))
    };
    let time = |key: &'static str| -> Result<Timestamp, UnreadableToken> {
        annotation(key)?
            .parse()
            .map_err(|_| UnreadableToken::BadTime(key))
    };

    let access_token = required(KEY_ACCESS_TOKEN)?;
    if access_token.is_empty() {
        return Err(UnreadableToken::MissingKey(KEY_ACCESS_TOKEN));
    }
    // A Secret written with `mergePolicy: Replace` keeps these in annotations; a template may
    // also have put other text under a standard key, so the annotation comes first.
    let noted = |key: &'static str| annotations.and_then(|a| a.get(key)).cloned();
    let replaced = noted(ANNOTATION_API_BASE_URL).is_some();
    let field = |annotation: &'static str, key: &'static str| {
        if replaced {
            Ok(noted(annotation))
        } else {
            text(key)
        }
    };
    Ok(StoredToken {
        access_token: Confidential::new(access_token),
        token_type: field(ANNOTATION_TOKEN_TYPE, KEY_TOKEN_TYPE)?
            .unwrap_or_else(|| "Bearer".to_owned()),
        times: TokenTimes {
            issued_at: time(ANNOTATION_ISSUED_AT)?,
            expires_at: time(ANNOTATION_EXPIRES_AT)?,
        },
        api_base_url: field(ANNOTATION_API_BASE_URL, KEY_API_BASE_URL)?
            .ok_or(UnreadableToken::MissingKey(KEY_API_BASE_URL))?,
        domain: field(ANNOTATION_DOMAIN, KEY_DOMAIN)?,
        scope: field(ANNOTATION_SCOPE, KEY_SCOPE)?,
        inputs_fingerprint: annotation(ANNOTATION_INPUTS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::NsApiCredentialSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn credential() -> NsApiCredential {
        let spec: NsApiCredentialSpec = serde_json::from_value(json!({
            "apiBaseUrl": "https://portal.example.com/ns-api/",
            "clientSecretRef": {"name": "client"},
            "subscriberSecretRef": {"name": "subscriber"},
            "tokenSecret": {"name": "abc-token", "labels": {"team": "voice"}, "annotations": {"note": "x"}},
        }))
        .unwrap();
        let mut cred = NsApiCredential::new("abc", spec);
        cred.metadata.namespace = Some("telephony".into());
        cred.metadata.uid = Some("uid-1".into());
        cred
    }

    fn token() -> StoredToken {
        StoredToken {
            access_token: Confidential::from("90679e87dc2e6409211e822434122aaf9480"),
            token_type: "Bearer".into(),
            times: TokenTimes {
                issued_at: "2026-01-01T10:00:00Z".parse().unwrap(),
                expires_at: "2026-01-01T11:00:00Z".parse().unwrap(),
            },
            api_base_url: "https://portal.example.com/ns-api/".into(),
            domain: Some("abc-company".into()),
            scope: Some("Office Manager".into()),
            inputs_fingerprint: "v1:abcd".into(),
        }
    }

    fn value(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn desired_secret_has_the_documented_keys_and_metadata() {
        let secret = desired_secret(&credential(), &token()).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("abc-token"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("telephony"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(
            value(&secret, "access_token"),
            "90679e87dc2e6409211e822434122aaf9480"
        );
        assert_eq!(
            value(&secret, "authorization"),
            "Bearer 90679e87dc2e6409211e822434122aaf9480"
        );
        assert_eq!(value(&secret, "token_type"), "Bearer");
        assert_eq!(value(&secret, "expires_at"), "2026-01-01T11:00:00Z");
        assert_eq!(
            value(&secret, "api_base_url"),
            "https://portal.example.com/ns-api/"
        );
        assert_eq!(value(&secret, "domain"), "abc-company");
        assert_eq!(value(&secret, "scope"), "Office Manager");
        let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        assert!(!keys.iter().any(|k| k.contains("refresh")), "{keys:?}");

        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["team"], "voice");
        let annotations = secret.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[ANNOTATION_ISSUED_AT], "2026-01-01T10:00:00Z");
        assert_eq!(annotations[ANNOTATION_EXPIRES_AT], "2026-01-01T11:00:00Z");
        assert_eq!(annotations["note"], "x");

        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "NsApiCredential");
        assert_eq!(owner.api_version, "nsapi.io/v1alpha1");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_written_token_reads_back_identically() {
        let secret = desired_secret(&credential(), &token()).unwrap();
        assert_eq!(read_token(&secret).unwrap(), token());
    }

    #[test]
    fn missing_or_corrupt_records_are_reported() {
        let good = desired_secret(&credential(), &token()).unwrap();
        let mut no_annotation = good.clone();
        no_annotation
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_EXPIRES_AT);
        let mut bad_time = good.clone();
        bad_time
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_ISSUED_AT.into(), "yesterday".into());
        let mut no_token = good.clone();
        no_token.data.as_mut().unwrap().remove(KEY_ACCESS_TOKEN);
        let mut empty_token = good.clone();
        empty_token
            .data
            .as_mut()
            .unwrap()
            .insert(KEY_ACCESS_TOKEN.into(), ByteString(vec![]));
        let mut binary = good.clone();
        binary
            .data
            .as_mut()
            .unwrap()
            .insert(KEY_ACCESS_TOKEN.into(), ByteString(vec![0xff, 0xfe]));
        let cases = [
            (
                no_annotation,
                UnreadableToken::MissingAnnotation(ANNOTATION_EXPIRES_AT),
            ),
            (bad_time, UnreadableToken::BadTime(ANNOTATION_ISSUED_AT)),
            (no_token, UnreadableToken::MissingKey(KEY_ACCESS_TOKEN)),
            (empty_token, UnreadableToken::MissingKey(KEY_ACCESS_TOKEN)),
            (binary, UnreadableToken::NotUtf8(KEY_ACCESS_TOKEN)),
            (
                Secret::default(),
                UnreadableToken::MissingKey(KEY_ACCESS_TOKEN),
            ),
        ];
        for (secret, expected) in cases {
            assert_eq!(read_token(&secret), Err(expected));
        }
    }

    #[test]
    fn ownership_follows_the_controller_reference() {
        let cred = credential();
        let ours = desired_secret(&cred, &token()).unwrap();
        assert_eq!(ownership(None, &cred), Ownership::Absent);
        assert_eq!(ownership(Some(&ours), &cred), Ownership::Owned);
        let mut other = ours.clone();
        other.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-2".into();
        assert_eq!(ownership(Some(&other), &cred), Ownership::Foreign);
        assert_eq!(
            ownership(Some(&Secret::default()), &cred),
            Ownership::Foreign
        );
    }

    #[test]
    fn a_secret_without_a_controller_is_ours_when_it_names_the_credential() {
        let mut cred = credential();
        cred.spec.token_secret.deletion_policy = DeletionPolicy::Retain;
        let retained = desired_secret(&cred, &token()).unwrap();
        assert_eq!(retained.metadata.owner_references, None);
        assert_eq!(ownership(Some(&retained), &cred), Ownership::Owned);
        // A credential created again has a new uid and the same name.
        let mut again = cred.clone();
        again.metadata.uid = Some("uid-2".into());
        assert_eq!(ownership(Some(&retained), &again), Ownership::Owned);
        let mut other_name = cred.clone();
        other_name.metadata.name = Some("other".into());
        assert_eq!(ownership(Some(&retained), &other_name), Ownership::Foreign);
        let mut unlabelled = retained.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(ownership(Some(&unlabelled), &cred), Ownership::Foreign);
    }

    #[test]
    fn retain_releases_the_owner_reference_and_stale_keys_are_removed() {
        let cred = credential();
        let owned = desired_secret(&cred, &token()).unwrap();
        assert_eq!(stale_fields(&owned, &owned), None);
        let mut retain = cred.clone();
        retain.spec.token_secret.deletion_policy = DeletionPolicy::Retain;
        let mut existing = owned.clone();
        existing.metadata.resource_version = Some("7".into());
        existing
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), ByteString(b"x".to_vec()));
        let patch = stale_fields(&existing, &desired_secret(&retain, &token()).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"ownerReferences": [], "resourceVersion": "7"},
                   "data": {"extra": null}})
        );
    }

    #[test]
    fn a_template_adds_keys_or_replaces_them_and_the_token_reads_back() {
        let mut cred = credential();
        cred.spec.token_secret.type_ = "example.com/nsapi-token".into();
        cred.spec.token_secret.template = Some(crate::core::crd::SecretDataTemplate {
            data: [("token".to_owned(), "{{ token }}".to_owned())].into(),
            merge_policy: MergePolicy::Merge,
        });
        let merged = desired_secret(&cred, &token()).unwrap();
        assert_eq!(merged.type_.as_deref(), Some("example.com/nsapi-token"));
        assert_eq!(value(&merged, "token"), value(&merged, KEY_ACCESS_TOKEN));
        assert!(
            merged
                .data
                .as_ref()
                .unwrap()
                .contains_key(KEY_AUTHORIZATION)
        );
        assert_eq!(read_token(&merged).unwrap(), token());

        cred.spec
            .token_secret
            .template
            .as_mut()
            .unwrap()
            .merge_policy = MergePolicy::Replace;
        let replaced = desired_secret(&cred, &token()).unwrap();
        let keys: Vec<_> = replaced.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(keys, [KEY_ACCESS_TOKEN, "token"]);
        assert_eq!(read_token(&replaced).unwrap(), token());
        assert_eq!(creation_secret(&replaced).data, replaced.data);
    }

    #[test]
    fn unchanged_content_needs_no_write() {
        let cred = credential();
        let desired = desired_secret(&cred, &token()).unwrap();
        let mut existing = desired.clone();
        existing.metadata.resource_version = Some("42".into());
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("added-by-someone".into(), "x".into());
        assert!(!needs_write(&existing, &desired));

        let mut relabelled = cred.clone();
        relabelled
            .spec
            .token_secret
            .labels
            .insert("team".into(), "data".into());
        assert!(needs_write(
            &existing,
            &desired_secret(&relabelled, &token()).unwrap()
        ));

        let mut rotated = token();
        rotated.access_token = Confidential::from("ffff");
        assert!(needs_write(
            &existing,
            &desired_secret(&cred, &rotated).unwrap()
        ));
    }

    /// What the API server records after the operator applied `labels` and `annotations`.
    fn applied(labels: &[&str], annotations: &[&str]) -> ManagedFieldsEntry {
        let keys = |names: &[&str]| {
            names
                .iter()
                .map(|n| (format!("f:{n}"), serde_json::json!({})))
                .collect::<serde_json::Map<_, _>>()
        };
        ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:labels": keys(labels), "f:annotations": keys(annotations)}
            }))),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn a_label_or_annotation_the_operator_no_longer_wants_needs_a_write() {
        let cred = credential();
        let desired = desired_secret(&cred, &token()).unwrap();
        let mut existing = desired.clone();
        existing.metadata.managed_fields = Some(vec![applied(
            &["team", MANAGED_BY_LABEL],
            &["note", ANNOTATION_ISSUED_AT],
        )]);
        assert!(!needs_write(&existing, &desired));

        let mut unlabelled = cred.clone();
        unlabelled.spec.token_secret.labels.clear();
        assert!(needs_write(
            &existing,
            &desired_secret(&unlabelled, &token()).unwrap()
        ));
        let mut unannotated = cred.clone();
        unannotated.spec.token_secret.annotations.clear();
        assert!(needs_write(
            &existing,
            &desired_secret(&unannotated, &token()).unwrap()
        ));

        // Labels another manager owns are none of the operator's business.
        let mut others = applied(&["team", "theirs"], &[]);
        others.manager = Some("kubectl".into());
        existing.metadata.managed_fields = Some(vec![applied(&["team"], &[]), others]);
        assert!(!needs_write(&existing, &desired));
    }

    #[test]
    fn the_creation_secret_is_the_desired_one_without_the_users_labels_and_annotations() {
        // No labels or annotations of the user's: one write, nothing to apply after it.
        let mut plain = credential();
        plain.spec.token_secret.labels.clear();
        plain.spec.token_secret.annotations.clear();
        let desired = desired_secret(&plain, &token()).unwrap();
        let created = creation_secret(&desired);
        assert_eq!(created, desired);
        assert!(!needs_write(&created, &desired));

        // The credential of these tests has a label and an annotation of the user's.
        let desired = desired_secret(&credential(), &token()).unwrap();
        let created = creation_secret(&desired);
        let labels = created.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.keys().collect::<Vec<_>>(), [MANAGED_BY_LABEL]);
        let annotations = created.metadata.annotations.as_ref().unwrap();
        assert!(annotations.keys().all(|k| k.starts_with("nsapi.io/")));
        assert_eq!(annotations.len(), 4);
        assert_eq!(created.data, desired.data);
        assert_eq!(
            created.metadata.owner_references,
            desired.metadata.owner_references
        );
        // The apply that follows sets the user's labels and annotations.
        assert!(needs_write(&created, &desired));
    }
}
