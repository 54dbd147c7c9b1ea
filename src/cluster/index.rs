//! Which credentials use which Secret, kept current from the credential watch: an event about a
//! Secret costs one hash lookup, however many credentials and Secrets the cluster holds.
//! A credential uses the Secrets it names as inputs, output and CA bundle, and the output Secret
//! it wrote under an earlier name (until the token has moved).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::cluster::names::{CredentialName, Namespaces};
use crate::cluster::watched::Watched;

/// A digest of a Secret's namespace and name. Two Secrets with the same digest (keyed at random
/// per index, so not to be made on purpose) would only cost a pass that finds nothing to do.
type SecretDigest = u64;

/// What a credential is indexed under.
#[derive(PartialEq, Eq)]
struct Indexed {
    uid: Option<Box<str>>,
    secrets: Box<[SecretDigest]>,
}

#[derive(Default)]
struct Inner {
    /// Secret → the credentials that use it.
    by_secret: HashMap<SecretDigest, Vec<Arc<CredentialName>>>,
    /// Credential → its UID and the Secrets it is indexed under.
    by_credential: HashMap<Arc<CredentialName>, Indexed>,
    namespaces: Namespaces,
    digests: RandomState,
    /// During a re-list: the credentials seen so far.
    relisting: Option<HashSet<Arc<CredentialName>>>,
}

/// The Secret-to-credential index of one watch (one namespace, or the whole cluster). About
/// 300 bytes per credential: its name, UID and digests, and its place under each Secret.
#[derive(Default)]
pub struct SecretIndex(Mutex<Inner>);

impl SecretIndex {
    /// Indexes a credential as it is now (added or changed).
    pub fn apply(&self, credential: &Watched) {
        let Some(namespace) = credential.namespace() else {
            return;
        };
        let mut inner = self.lock();
        let mut secrets: Vec<SecretDigest> = credential
            .secret_names()
            .map(|name| inner.digest(&namespace, name))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        let entry = Indexed {
            uid: credential.uid().map(Into::into),
            secrets: secrets.into(),
        };
        let lookup = CredentialName {
            namespace: namespace.as_str().into(),
            name: credential.name_any().into(),
        };
        let key = match inner.by_credential.get_key_value(&lookup) {
            Some((key, indexed)) if *indexed == entry => {
                let key = key.clone();
                if let Some(seen) = inner.relisting.as_mut() {
                    seen.insert(key);
                }
                return;
            }
            Some((key, _)) => key.clone(),
            None => Arc::new(CredentialName {
                namespace: inner.namespaces.get(&namespace),
                name: lookup.name,
            }),
        };
        inner.unindex(&key);
        if let Some(seen) = inner.relisting.as_mut() {
            seen.insert(key.clone());
        }
        for secret in &entry.secrets {
            let users = inner.by_secret.entry(*secret).or_default();
            if let Err(at) = users.binary_search(&key) {
                users.insert(at, key.clone());
            }
        }
        inner.by_credential.insert(key, entry);
    }

    /// Drops a deleted credential.
    pub fn delete(&self, credential: &Watched) {
        let Some(namespace) = credential.namespace() else {
            return;
        };
        let key = CredentialName {
            namespace: namespace.into(),
            name: credential.name_any().into(),
        };
        let mut inner = self.lock();
        if let Some((key, _)) = inner.by_credential.get_key_value(&key) {
            let key = key.clone();
            inner.unindex(&key);
            inner.namespaces.release(&key.namespace);
        }
    }

    /// A re-list starts: what it does not mention again was deleted meanwhile.
    pub fn relist_started(&self) {
        self.lock().relisting = Some(HashSet::new());
    }

    /// A re-list is complete: drops the credentials it did not mention, and returns them.
    pub fn relist_done(&self) -> Vec<Gone> {
        let mut inner = self.lock();
        let Some(seen) = inner.relisting.take() else {
            return Vec::new();
        };
        let gone: Vec<Arc<CredentialName>> = inner
            .by_credential
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        drop(seen);
        gone.into_iter()
            .map(|key| {
                let uid = inner.unindex(&key);
                inner.namespaces.release(&key.namespace);
                Gone {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    uid,
                }
            })
            .collect()
    }

    /// The credentials that use the Secret `namespace/name`.
    pub fn credentials_using(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Watched>> {
        let inner = self.lock();
        let secret = inner.digest(namespace, name);
        inner
            .by_secret
            .get(&secret)
            .into_iter()
            .flatten()
            .filter(|credential| *credential.namespace == *namespace)
            .map(|credential| credential.object_ref())
            .collect()
    }

    /// How many credentials are indexed.
    pub fn len(&self) -> usize {
        self.lock().by_credential.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A credential that a re-list found deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl Inner {
    fn digest(&self, namespace: &str, name: &str) -> SecretDigest {
        self.digests.hash_one((namespace, name))
    }

    /// Removes a credential; returns its UID.
    fn unindex(&mut self, key: &Arc<CredentialName>) -> Option<String> {
        let Indexed { uid, secrets } = self.by_credential.remove(key)?;
        for secret in secrets {
            if let Some(users) = self.by_secret.get_mut(&secret) {
                users.retain(|user| user != key);
                if users.is_empty() {
                    self.by_secret.remove(&secret);
                }
            }
        }
        uid.map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crd::{NsApiCredential, NsApiCredentialSpec, NsApiCredentialStatus};
    use serde_json::json;

    fn credential(ns: &str, name: &str, client: &str, output: &str) -> Watched {
        Watched::of(&full(ns, name, client, output))
    }

    fn full(ns: &str, name: &str, client: &str, output: &str) -> NsApiCredential {
        let spec: NsApiCredentialSpec = serde_json::from_value(json!({
            "apiBaseUrl": "https://portal.example.com",
            "clientSecretRef": {"name": client},
            "subscriberSecretRef": {"name": "subscriber"},
            "tokenSecret": {"name": output},
        }))
        .unwrap();
        let mut c = NsApiCredential::new(name, spec);
        c.metadata.namespace = Some(ns.into());
        c
    }

    fn names(refs: Vec<ObjectRef<Watched>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn secrets_map_to_the_credentials_that_use_them() {
        let index = SecretIndex::default();
        index.apply(&credential("a", "one", "client", "one-token"));
        index.apply(&credential("a", "two", "client", "two-token"));
        index.apply(&credential("b", "three", "client", "three-token"));
        assert_eq!(
            names(index.credentials_using("a", "client")),
            ["one", "two"]
        );
        assert_eq!(
            names(index.credentials_using("a", "subscriber")),
            ["one", "two"]
        );
        assert_eq!(names(index.credentials_using("a", "one-token")), ["one"]);
        assert_eq!(names(index.credentials_using("b", "client")), ["three"]);
        assert!(index.credentials_using("a", "unrelated").is_empty());
        assert!(index.credentials_using("c", "client").is_empty());
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn a_change_reindexes_and_a_delete_unindexes() {
        let index = SecretIndex::default();
        index.apply(&credential("a", "one", "client", "one-token"));
        let mut renamed = full("a", "one", "other-client", "new-token");
        renamed.status = Some(NsApiCredentialStatus {
            token_secret_name: Some("one-token".into()),
            ..NsApiCredentialStatus::default()
        });
        let renamed = Watched::of(&renamed);
        index.apply(&renamed);
        assert!(index.credentials_using("a", "client").is_empty());
        assert_eq!(names(index.credentials_using("a", "other-client")), ["one"]);
        // The Secret written under the earlier name still matters until the token moved.
        assert_eq!(names(index.credentials_using("a", "one-token")), ["one"]);
        index.delete(&renamed);
        assert!(index.credentials_using("a", "other-client").is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_drops_what_was_deleted_meanwhile() {
        let index = SecretIndex::default();
        index.apply(&credential("a", "kept", "client", "kept-token"));
        index.apply(&credential("a", "gone", "client", "gone-token"));
        index.relist_started();
        index.apply(&credential("a", "kept", "client", "kept-token"));
        let gone = index.relist_done();
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].namespace.as_str(), gone[0].name.as_str()),
            ("a", "gone")
        );
        assert_eq!(names(index.credentials_using("a", "client")), ["kept"]);
        assert!(index.relist_done().is_empty());
    }

    #[test]
    fn an_index_keeps_each_namespace_once_and_forgets_it_with_its_last_credential() {
        let index = SecretIndex::default();
        let (one, two) = (
            credential("a", "one", "client", "one-token"),
            credential("a", "two", "client", "two-token"),
        );
        index.apply(&one);
        index.apply(&two);
        index.apply(&two);
        assert_eq!(index.lock().namespaces.len(), 1);
        assert_eq!(
            index.lock().by_secret.len(),
            4,
            "client, subscriber, two tokens"
        );
        index.delete(&one);
        assert_eq!(index.lock().namespaces.len(), 1);
        index.relist_started();
        assert_eq!(index.relist_done().len(), 1, "two, deleted meanwhile");
        assert!(index.lock().namespaces.is_empty());
        assert!(index.lock().by_secret.is_empty());
    }
}
