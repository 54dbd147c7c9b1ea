//! Smoke test for the local control plane (`scripts/control-plane up`): proves that the test bed
//! is a real Kubernetes API server with the behaviours the operator depends on. Needs a running
//! control plane; `make test` starts one.

mod control_plane;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use control_plane::{TestNamespace, eventually, kubectl, kubectl_stdin};

/// Upper bound for every wait in this file.
const WAIT: Duration = Duration::from_secs(60);

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn namespace_secret_and_kubectl_apply() {
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-secret").await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("credentials".into()),
            ..ObjectMeta::default()
        },
        string_data: Some([("username".to_owned(), "alice".to_owned())].into()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    let stored = secrets.get("credentials").await.expect("get Secret");
    let data = stored.data.expect("Secret data");
    assert_eq!(data["username"].0, b"alice");

    // kubectl works against it: /readyz, and a client-side `apply`, which needs a working
    // /openapi/v2 (a kube-apiserver built with Go's jsonv2 experiment serves a broken one).
    let out = kubectl(&["get", "--raw", "/readyz"]);
    assert!(
        out.status.success(),
        "kubectl get --raw /readyz: {}",
        stderr_of(&out)
    );
    assert_eq!(stdout_of(&out).trim(), "ok");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {}\ndata:\n  key: value\n",
        ns.name
    );
    let out = kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(out.status.success(), "kubectl apply: {}", stderr_of(&out));
    let cm = Api::<ConfigMap>::namespaced(client, &ns.name)
        .get("applied")
        .await
        .expect("the applied ConfigMap exists");
    assert_eq!(cm.data.expect("data")["key"], "value");
}

/// Deletes a CRD when dropped (best effort, without waiting).
struct CrdGuard(String);

impl Drop for CrdGuard {
    fn drop(&mut self) {
        let out = kubectl(&[
            "delete",
            "crd",
            &self.0,
            "--wait=false",
            "--ignore-not-found",
        ]);
        if !out.status.success() {
            eprintln!("could not delete CRD {}: {}", self.0, stderr_of(&out));
        }
    }
}

#[tokio::test]
async fn crd_schema_and_cel_validation() {
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-crd").await;

    // A unique kind per run: several people may run the tests against one control plane.
    let suffix = control_plane::unique_name("w")
        .trim_start_matches("w-")
        .to_owned();
    let group = "smoke.nsapi.test";
    let plural = format!("widgets{suffix}");
    let kind = format!("Widget{suffix}");
    let crd_name = format!("{plural}.{group}");
    let rule_message = "spec.size must not exceed spec.max";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": format!("widget{suffix}")},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size", "max"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0},
                                "max": {"type": "integer", "minimum": 0}
                            },
                            "x-kubernetes-validations": [
                                {"rule": "self.size <= self.max", "message": rule_message}
                            ]
                        }
                    }
                }}
            }]
        }
    }))
    .expect("CRD manifest");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    let _cleanup = CrdGuard(crd_name.clone());

    eventually("the CRD to be Established", WAIT, || async {
        let crd = crds.get(&crd_name).await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;

    let ar = ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.clone(),
        plural: plural.clone(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ar);
    let widget = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"),
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("widget manifest")
    };

    // A good object is accepted (retrying briefly in case the new resource is not served yet).
    let good = widget("good", json!({"size": 2, "max": 3}));
    eventually("the good widget to be accepted", WAIT, || async {
        match widgets.create(&PostParams::default(), &good).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => None,
            Err(e) => panic!("good widget rejected: {e}"),
        }
    })
    .await;

    // The CEL rule rejects a bad one, the structural schema another.
    let status = api_error(
        widgets
            .create(
                &PostParams::default(),
                &widget("too-big", json!({"size": 5, "max": 3})),
            )
            .await,
    );
    assert!(status.is_invalid(), "expected 422 Invalid, got {status:?}");
    assert!(status.message.contains(rule_message), "{}", status.message);
    let status = api_error(
        widgets
            .create(
                &PostParams::default(),
                &widget("negative", json!({"size": -1, "max": 3})),
            )
            .await,
    );
    assert!(status.is_invalid(), "expected 422 Invalid, got {status:?}");

    // kubectl's server-side dry run reports the same rule.
    let manifest = format!(
        "apiVersion: {group}/v1\nkind: {kind}\nmetadata:\n  name: bad\n  namespace: {}\nspec:\n  size: 9\n  max: 1\n",
        ns.name
    );
    let out = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest);
    assert!(!out.status.success(), "bad widget accepted by dry run");
    assert!(
        stderr_of(&out).contains(rule_message),
        "kubectl: {}",
        stderr_of(&out)
    );

    let names: Vec<String> = widgets
        .list(&ListParams::default())
        .await
        .expect("list widgets")
        .items
        .into_iter()
        .filter_map(|w| w.metadata.name)
        .collect();
    assert_eq!(names, ["good"]);
}

#[tokio::test]
async fn watch_receives_events() {
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-watch").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns.name);

    let mut events = watcher(configmaps.clone(), watcher::Config::default()).boxed();
    // The initial list completes before anything is created, so the create arrives as a watch
    // event rather than as part of the list.
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.try_next().await.expect("watch") {
            if matches!(event, watcher::Event::InitDone) {
                return;
            }
        }
        panic!("watch stream ended");
    })
    .await
    .expect("timed out waiting for the initial list");

    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("watched".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");

    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.try_next().await.expect("watch") {
            if let watcher::Event::Apply(cm) = event
                && cm.metadata.name.as_deref() == Some("watched")
            {
                return;
            }
        }
        panic!("watch stream ended");
    })
    .await
    .expect("timed out waiting for the watch event");
}

#[tokio::test]
async fn garbage_collector_deletes_owned_objects() {
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "smoke-gc").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    let named = |name: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };

    let owner = configmaps
        .create(&PostParams::default(), &named("owner"))
        .await
        .expect("create owner");
    let mut owned = named("owned");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.expect("owner uid"),
        ..OwnerReference::default()
    }]);
    configmaps
        .create(&PostParams::default(), &owned)
        .await
        .expect("create owned");

    configmaps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    eventually(
        "kube-controller-manager to garbage-collect the owned ConfigMap",
        WAIT,
        || async {
            match configmaps.get_opt("owned").await.expect("get owned") {
                None => Some(()),
                Some(_) => None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn operator_identity_gets_403_without_rbac() {
    let admin = control_plane::admin_client().await;
    let ns = TestNamespace::create(&admin, "smoke-rbac").await;
    let operator: Client = control_plane::client_for(&control_plane::operator_kubeconfig()).await;

    let status = api_error(
        Api::<Secret>::namespaced(operator, &ns.name)
            .list(&ListParams::default())
            .await,
    );
    assert!(status.is_forbidden(), "expected 403, got {status:?}");
    assert!(
        status
            .message
            .contains("system:serviceaccount:nsapi-system:nsapi-token-operator"),
        "403 names the operator identity: {}",
        status.message
    );
}
