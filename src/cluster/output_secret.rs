//! The output Secret in the cluster (IO): the token in place, read back from the Secret with the
//! output name or, after a rename, from the one written under the previous name; and writing a
//! token, which creates, patches or leaves the Secret as its content requires. What the Secret
//! should contain is decided in `core::token_secret`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use tracing::{info, warn};

use crate::cluster::Result;
use crate::core::crd::FIELD_MANAGER;
use crate::core::crd::NsApiCredential;
use crate::core::token_secret::{self, Ownership, StoredToken};

/// What the cluster holds for a credential's token.
pub struct InPlace {
    /// The token in place, if its record is readable.
    pub token: Option<StoredToken>,
    /// The Secret with the output name (owned by the credential), if it exists.
    existing: Option<Secret>,
    /// The Secret written under the previous output name, to be removed once the token moved.
    previous: Option<Secret>,
}

/// The versions of output Secrets that this operator wrote itself, so that the watch event of
/// its own write starts no pass (that pass would find nothing to do). The last few per Secret;
/// an event that arrives before its write is recorded starts a pass, which is harmless.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<(String, String), VecDeque<String>>>);

/// Versions remembered per Secret (a creation is followed by an apply).
const OWN_VERSIONS: usize = 3;

impl OwnWrites {
    fn record(&self, secret: &Secret) {
        let (Some(ns), Some(rv)) = (secret.namespace(), secret.resource_version()) else {
            return;
        };
        let mut writes = self.lock();
        let versions = writes.entry((ns, secret.name_any())).or_default();
        if versions.len() == OWN_VERSIONS {
            versions.pop_front();
        }
        versions.push_back(rv);
    }

    /// Whether the object in a watch event is as this operator wrote it.
    pub fn is_own(&self, meta: &ObjectMeta) -> bool {
        let (Some(ns), Some(name), Some(rv)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return false;
        };
        let mut writes = self.lock();
        let key = (ns.clone(), name.clone());
        match writes.get(&key) {
            Some(versions) if versions.contains(rv) => true,
            Some(_) if meta.deletion_timestamp.is_some() => {
                writes.remove(&key);
                false
            }
            _ => false,
        }
    }

    /// Forgets a Secret (its credential is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), VecDeque<String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One credential's output Secret.
pub struct OutputSecret<'a> {
    api: Api<Secret>,
    credential: &'a NsApiCredential,
    own: &'a OwnWrites,
}

impl<'a> OutputSecret<'a> {
    /// `api` is the Secrets of the credential's namespace.
    pub fn new(api: Api<Secret>, credential: &'a NsApiCredential, own: &'a OwnWrites) -> Self {
        Self {
            api,
            credential,
            own,
        }
    }

    /// The token in place, or `None` when a Secret with the output name belongs to someone
    /// else (it is never touched).
    pub async fn find(&self) -> Result<Option<InPlace>> {
        let existing = self
            .api
            .get_opt(&self.credential.spec.token_secret.name)
            .await?;
        Ok(
            match token_secret::ownership(existing.as_ref(), self.credential) {
                Ownership::Foreign => None,
                Ownership::Owned => Some(InPlace {
                    token: self.stored_token(existing.as_ref()),
                    existing,
                    previous: None,
                }),
                Ownership::Absent => {
                    let (token, previous) = self.previous_token().await?;
                    Some(InPlace {
                        token,
                        existing: None,
                        previous,
                    })
                }
            },
        )
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
        let status = self.credential.status.as_ref();
        let Some(old_name) = status.and_then(|s| s.token_secret_name.as_deref()) else {
            return Ok((None, None));
        };
        if old_name == self.credential.spec.token_secret.name {
            return Ok((None, None));
        }
        let old = self.api.get_opt(old_name).await?;
        if token_secret::ownership(old.as_ref(), self.credential) != Ownership::Owned {
            return Ok((None, None));
        }
        Ok((self.stored_token(old.as_ref()), old))
    }

    /// Writes the output Secret when its content would change; never touches a Secret this
    /// credential does not control. Removes the Secret written under an earlier name.
    pub async fn write(&self, token: &StoredToken, in_place: &InPlace) -> Result<()> {
        let (existing, previous) = (in_place.existing.as_ref(), in_place.previous.as_ref());
        let desired = token_secret::desired_secret(self.credential, token)?;
        let name = &self.credential.spec.token_secret.name;
        let created;
        let existing = match existing {
            // Kubernetes does not change a Secret's type: replace the Secret.
            Some(existing) if existing.type_ != desired.type_ => {
                self.delete(existing, "its type changed").await?;
                created = self.create(&desired).await?;
                &created
            }
            Some(existing) => existing,
            None => {
                created = self.create(&desired).await?;
                &created
            }
        };
        if let Some(patch) = token_secret::stale_fields(existing, &desired) {
            // Keys or an owner reference the apply cannot remove (set on creation, or by
            // someone else): removed first, with the version read as a precondition.
            let written = self
                .api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.own.record(&written);
            info!(secret = %name, "removed keys or an owner reference the spec no longer asks for");
            return self.apply(&written, desired, previous).await;
        }
        self.apply(existing, desired, previous).await
    }

    async fn create(&self, desired: &Secret) -> Result<Secret> {
        let name = &self.credential.spec.token_secret.name;
        // Create, not apply: if a Secret of this name appeared meanwhile, creation fails
        // instead of taking it over. The apply that follows owns every field it sets.
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let created = self
            .api
            .create(&params, &token_secret::creation_secret(desired))
            .await?;
        self.own.record(&created);
        info!(secret = %name, "output Secret created");
        Ok(created)
    }

    async fn delete(&self, secret: &Secret, why: &str) -> Result<()> {
        let name = secret.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => {
                info!(secret = %name, why, "output Secret deleted");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn apply(
        &self,
        existing: &Secret,
        desired: Secret,
        previous: Option<&Secret>,
    ) -> Result<()> {
        let name = &self.credential.spec.token_secret.name;
        if token_secret::needs_write(existing, &desired) {
            let mut patch = desired;
            // Optimistic concurrency: fail rather than overwrite a Secret changed since read.
            patch.metadata.resource_version = existing.metadata.resource_version.clone();
            let written = self
                .api
                .patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
            self.own.record(&written);
            info!(secret = %name, "output Secret updated");
        }
        if let Some(previous) = previous {
            self.delete(
                previous,
                "the token moved to a Secret of another name (spec.tokenSecret.name changed)",
            )
            .await?;
        }
        Ok(())
    }
}

/// The problem to report when the API server refuses the output Secret as invalid (422): a
/// label or annotation the schema let through, say. The user fixes it in the spec.
pub fn refused_as_invalid(
    credential: &NsApiCredential,
    status: &kube::core::Status,
) -> crate::core::conditions::Problem {
    crate::core::conditions::Problem::new(
        crate::core::conditions::Reason::InvalidSpec,
        format!(
            "the API server refused the output Secret {:?} as invalid ({}): fix spec.tokenSecret",
            credential.spec.token_secret.name,
            crate::core::text::truncate(&status.message, 300)
        ),
    )
}

/// The problem to report when a Secret with the output name belongs to someone else.
pub fn conflict(credential: &NsApiCredential) -> crate::core::conditions::Problem {
    crate::core::conditions::Problem::new(
        crate::core::conditions::Reason::SecretConflict,
        format!(
            "Secret {:?} already exists and is not owned by this NsApiCredential; it is left \
             untouched. Delete it, or choose another spec.tokenSecret.name",
            credential.spec.token_secret.name
        ),
    )
}
