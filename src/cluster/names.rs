//! Credential names as the operator's long-lived tables keep them: a fleet has many credentials
//! in few namespaces, so each namespace is kept once and shared (`Namespaces`), and a
//! credential's name is its shared namespace and its own name (`CredentialName`).

use std::collections::HashSet;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

/// A credential's namespace (shared) and name.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialName {
    pub namespace: Arc<str>,
    pub name: Box<str>,
}

impl CredentialName {
    /// A reference to the credential, for the controller.
    pub fn object_ref<K: kube::Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// Each namespace named by a table, once.
#[derive(Debug, Default)]
pub struct Namespaces(HashSet<Arc<str>>);

impl Namespaces {
    /// The shared copy of `namespace`.
    pub fn get(&mut self, namespace: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(namespace) {
            return shared.clone();
        }
        let shared: Arc<str> = namespace.into();
        self.0.insert(shared.clone());
        shared
    }

    /// Called as a table lets go of a name in `namespace` (the caller's copy, about to be
    /// dropped): the namespace is forgotten once no other name of the table shares it.
    pub fn release(&mut self, namespace: &Arc<str>) {
        if Arc::strong_count(namespace) == 2 {
            self.0.remove(namespace);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_kept_once_and_forgotten_with_its_last_name() {
        let mut namespaces = Namespaces::default();
        let names: Vec<CredentialName> = (0..3)
            .map(|i| CredentialName {
                namespace: namespaces.get("team"),
                name: format!("c{i}").into(),
            })
            .collect();
        assert_eq!(namespaces.len(), 1);
        assert!(Arc::ptr_eq(&names[0].namespace, &names[2].namespace));
        let mut names = names.into_iter();
        for name in names.by_ref().take(2) {
            namespaces.release(&name.namespace);
        }
        assert_eq!(namespaces.len(), 1, "one name still shares it");
        let last = names.next().unwrap();
        namespaces.release(&last.namespace);
        assert!(namespaces.is_empty());
    }
}
