//! Which credentials use which Secret, kept current from the credential watch: an event about a
//! Secret costs one hash lookup, however many credentials and Secrets the cluster holds.
//! A credential uses the Secrets it names as inputs, output and CA bundle, and the output Secret
//! it wrote under an earlier name (until the token has moved).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::cluster::watched::Watched;

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Default)]
struct Inner {
    /// Secret → the credentials that use it.
    by_secret: HashMap<Key, BTreeSet<String>>,
    /// Credential → its UID and the Secret names it is indexed under.
    by_credential: HashMap<Key, (Option<String>, Vec<String>)>,
    /// During a re-list: the credentials seen so far.
    relisting: Option<HashSet<Key>>,
}

/// The Secret-to-credential index of one watch (one namespace, or the whole cluster).
#[derive(Default)]
pub struct SecretIndex(Mutex<Inner>);

impl SecretIndex {
    /// Indexes a credential as it is now (added or changed).
    pub fn apply(&self, credential: &Watched) {
        let Some(key) = key_of(credential) else {
            return;
        };
        let mut names: Vec<String> = credential.secret_names().map(str::to_owned).collect();
        names.sort();
        names.dedup();
        let entry = (credential.uid(), names);
        let mut inner = self.lock();
        if let Some(seen) = inner.relisting.as_mut() {
            seen.insert(key.clone());
        }
        if inner.by_credential.get(&key) == Some(&entry) {
            return;
        }
        inner.unindex(&key);
        for name in &entry.1 {
            inner
                .by_secret
                .entry((key.0.clone(), name.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        inner.by_credential.insert(key, entry);
    }

    /// Drops a deleted credential.
    pub fn delete(&self, credential: &Watched) {
        if let Some(key) = key_of(credential) {
            let _ = self.lock().unindex(&key);
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
        let gone: Vec<Key> = inner
            .by_credential
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.into_iter()
            .map(|key| {
                let uid = inner.unindex(&key);
                Gone {
                    namespace: key.0,
                    name: key.1,
                    uid,
                }
            })
            .collect()
    }

    /// The credentials that use the Secret `namespace/name`.
    pub fn credentials_using(&self, namespace: &str, name: &str) -> Vec<ObjectRef<Watched>> {
        let inner = self.lock();
        inner
            .by_secret
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|credential| ObjectRef::new(credential).within(namespace))
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
    /// Removes a credential; returns its UID.
    fn unindex(&mut self, key: &Key) -> Option<String> {
        let (uid, names) = self.by_credential.remove(key)?;
        for name in names {
            let secret = (key.0.clone(), name);
            if let Some(users) = self.by_secret.get_mut(&secret) {
                users.remove(&key.1);
                if users.is_empty() {
                    self.by_secret.remove(&secret);
                }
            }
        }
        uid
    }
}

fn key_of(credential: &Watched) -> Option<Key> {
    Some((credential.namespace()?, credential.name_any()))
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
}
