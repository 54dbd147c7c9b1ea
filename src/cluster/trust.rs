//! A credential's CA bundle (`spec.caBundle`): read from its ConfigMap or Secret, checked, and
//! the NetSapiens client that trusts it beside the system's roots and `--ca-file` (one client
//! per distinct bundle, shared by the credentials that name the same certificates).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use rustls::pki_types::CertificateDer;

use crate::cluster::Result;
use crate::core::conditions::{Problem, Reason};
use crate::core::crd::{CaBundleKind, CaBundleRef};
use crate::nsapi::NsApiClient;
use crate::nsapi::tls::parse_pem_bundle;

/// Clients kept for distinct bundles, at most; past that the cache starts over.
const MAX_CLIENTS: usize = 64;

/// The certificates of a credential's CA bundle.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// A digest of the bundle's text: the clients' cache key, and part of a credential's
    /// attempt fingerprint (so that a fixed bundle is tried at once).
    pub digest: String,
    pub certs: Vec<CertificateDer<'static>>,
}

/// Pure: the bundle in `text`, the value found under the reference (`None`: the object or the
/// key is missing).
pub fn bundle(reference: &CaBundleRef, text: Option<&str>) -> Result<Bundle, Problem> {
    let what = format!(
        "spec.caBundle: {} {:?}, key {:?}",
        kind_name(reference.kind),
        reference.name,
        reference.key
    );
    let text = text.ok_or_else(|| {
        Problem::new(
            Reason::CaBundleInvalid,
            format!("{what}: not found in this namespace"),
        )
    })?;
    let certs = parse_pem_bundle(text)
        .map_err(|why| Problem::new(Reason::CaBundleInvalid, format!("{what}: {why}")))?;
    Ok(Bundle {
        digest: crate::core::inputs::ca_bundle_digest(text),
        certs,
    })
}

fn kind_name(kind: CaBundleKind) -> &'static str {
    match kind {
        CaBundleKind::ConfigMap => "ConfigMap",
        CaBundleKind::Secret => "Secret",
    }
}

/// Reads a credential's CA bundle (`None` without `spec.caBundle`). A missing or unusable one
/// is a problem for the user; a failed API call is an error (retried).
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    reference: Option<&CaBundleRef>,
) -> Result<Result<Option<Bundle>, Problem>> {
    let Some(reference) = reference else {
        return Ok(Ok(None));
    };
    let text: Option<String> = match reference.kind {
        CaBundleKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(&reference.name)
            .await?
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(&reference.key)),
        CaBundleKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(&reference.name)
            .await?
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(&reference.key))
            .and_then(|v| String::from_utf8(v.0).ok()),
    };
    Ok(bundle(reference, text.as_deref()).map(Some))
}

/// The NetSapiens client for a credential: `base`, or the one that trusts its CA bundle, with
/// the bundle's digest (part of what an attempt was made with). A missing or unusable bundle is
/// a problem for the user; a failed API call is an error (retried).
pub async fn client_for_credential(
    client: &kube::Client,
    trusted: &TrustedClients,
    base: &NsApiClient,
    namespace: &str,
    reference: Option<&CaBundleRef>,
) -> Result<Result<(NsApiClient, Option<String>), Problem>> {
    Ok(load(client, namespace, reference)
        .await?
        .and_then(|bundle| {
            let nsapi = trusted.client_for(base, bundle.as_ref())?;
            Ok((nsapi, bundle.map(|b| b.digest)))
        }))
}

/// The NetSapiens clients for CA bundles, by digest, with when each was last used: past
/// [`MAX_CLIENTS`] the least recently used goes (one tenant with many bundles never empties
/// the others' cache).
#[derive(Default)]
pub struct TrustedClients(Mutex<HashMap<String, (NsApiClient, u64)>>, AtomicU64);

impl TrustedClients {
    /// The client to use with `bundle`: `base` itself without one.
    pub fn client_for(
        &self,
        base: &NsApiClient,
        bundle: Option<&Bundle>,
    ) -> Result<NsApiClient, Problem> {
        let Some(bundle) = bundle else {
            return Ok(base.clone());
        };
        let used = self.1.fetch_add(1, Ordering::Relaxed);
        let mut clients = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((client, last_used)) = clients.get_mut(&bundle.digest) {
            *last_used = used;
            return Ok(client.clone());
        }
        let client = base
            .with_ca_bundle(&bundle.certs)
            .map_err(|e| Problem::new(Reason::CaBundleInvalid, format!("spec.caBundle: {e}")))?;
        while clients.len() >= MAX_CLIENTS {
            let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(digest, _)| digest.clone())
            else {
                break;
            };
            clients.remove(&oldest);
        }
        clients.insert(bundle.digest.clone(), (client.clone(), used));
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> CaBundleRef {
        CaBundleRef {
            kind: CaBundleKind::ConfigMap,
            name: "portal-ca".into(),
            key: "ca.crt".into(),
        }
    }

    #[test]
    fn a_missing_or_empty_bundle_says_where_it_looked() {
        let missing = bundle(&reference(), None).unwrap_err();
        assert_eq!(missing.reason, Reason::CaBundleInvalid);
        assert_eq!(
            missing.message,
            "spec.caBundle: ConfigMap \"portal-ca\", key \"ca.crt\": not found in this namespace"
        );
        let empty = bundle(&reference(), Some("not a certificate")).unwrap_err();
        assert!(
            empty
                .message
                .ends_with("no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
        );
    }

    #[test]
    fn the_client_cache_evicts_the_least_recently_used_bundle_not_all() {
        let clock: std::sync::Arc<dyn crate::core::clock::Clock> =
            std::sync::Arc::new(crate::core::clock::SystemClock);
        let base = NsApiClient::new(crate::nsapi::NsApiClientConfig::default(), clock).unwrap();
        let bundle = |i: usize| {
            let cert = rcgen::generate_simple_self_signed(vec![format!("ca{i}.example")]).unwrap();
            Bundle {
                digest: format!("digest-{i}"),
                certs: vec![cert.cert.der().clone()],
            }
        };
        let cache = TrustedClients::default();
        let bundles: Vec<Bundle> = (0..=MAX_CLIENTS).map(bundle).collect();
        for b in &bundles[..MAX_CLIENTS] {
            cache.client_for(&base, Some(b)).unwrap();
        }
        // The first bundle is used again: the second is now the least recently used.
        cache.client_for(&base, Some(&bundles[0])).unwrap();
        cache
            .client_for(&base, Some(&bundles[MAX_CLIENTS]))
            .unwrap();
        let kept = cache.0.lock().unwrap();
        assert_eq!(kept.len(), MAX_CLIENTS);
        assert!(kept.contains_key("digest-0"), "a bundle in use stays");
        assert!(
            !kept.contains_key("digest-1"),
            "the least recently used goes"
        );
    }
}
