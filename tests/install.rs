//! Installing like users do, proven against the local control plane: the Helm chart (lint,
//! template, its values schema, `helm install`), the plain manifests in deploy/ (no drift from the
//! chart), the examples (server-side dry run), and the operator run as its service-account
//! identity with nothing but the chart's RBAC, cluster-wide and namespace-scoped.
//!
//! helm is the project's pinned one: `$NSAPI_HELM` (scripts/test exports it), else `scripts/helm`,
//! which installs it on first use.
//!
//! The RBAC tests bind the control plane's static operator identity
//! (`system:serviceaccount:nsapi-system:nsapi-token-operator`). They take turns (one lock), use
//! binding names unique to the run, and delete what they applied when they end, even on failure.
//! Those objects carry the label `nsapi-token-operator.test/rbac=true`, should a killed run leave
//! one behind: `kubectl delete clusterrolebinding,clusterrole -l nsapi-token-operator.test/rbac`.

mod chart;
mod control_plane;
mod fixture;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chart::{chart, helm, helm_ok, kinds, objects, of_kind, render, repo, stdout_of};
use control_plane::TestNamespace;
use fixture::{CLIENT_SECRET_NAME, Fixture, SUBSCRIBER_SECRET_NAME, data};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nsapi_sim::SimConfig;
use nsapi_token_operator::core::crd::NsApiCredential;
use serde_json::{Value, json};

const RELEASE_NAMESPACE: &str = "nsapi-system";
const SERVICE_ACCOUNT: &str = "nsapi-token-operator";
const OPERATOR_USER: &str = "system:serviceaccount:nsapi-system:nsapi-token-operator";
const TEST_RBAC_LABEL: &str = "nsapi-token-operator.test/rbac";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Tokens of 20 s rotate about 10 s after they are issued (refreshBefore is clamped to half).
const TOKEN_TTL: Duration = Duration::from_secs(20);
const ROTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The RBAC tests bind the one static operator identity: one at a time.
static OPERATOR_IDENTITY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kubectl_ok(args: &[&str]) -> String {
    stdout_of("kubectl", args, control_plane::kubectl(args))
}

fn deployment_args(objects: &[Value]) -> Vec<String> {
    let deployment = of_kind(objects, "Deployment")[0];
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The rules every (Cluster)Role of the chart grants: exactly the operator's API calls.
fn expected_rules() -> Value {
    json!([
        {"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    ])
}

#[test]
fn chart_lints_and_renders_with_default_and_namespace_scoped_values() {
    let chart = chart();
    let scoped_values = format!("{chart}/ci/namespace-scoped-values.yaml");
    helm_ok(&["lint", "--strict", &chart]);
    helm_ok(&["lint", "--strict", &chart, "-f", &scoped_values]);

    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{chart}/Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));

    // Default values: cluster-wide, a ClusterRole.
    let objs = render("nsapi-token-operator", RELEASE_NAMESPACE, &[]);
    assert_eq!(
        kinds(&objs),
        [
            "PodDisruptionBudget",
            "ServiceAccount",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    for o in &objs {
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(
            [
                "nsapi-token-operator",
                "nsapi-token-operator-namespaces",
                "nsapi-token-operator-leader-election",
                "nsapicredentials.nsapi.io"
            ]
            .contains(&name),
            "{name}"
        );
    }
    assert_eq!(of_kind(&objs, "ClusterRole")[0]["rules"], expected_rules());
    // Namespaces: get only, to skip credentials whose namespace is being deleted.
    assert_eq!(
        of_kind(&objs, "ClusterRole")[1]["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}])
    );
    let binding = of_kind(&objs, "ClusterRoleBinding")[0];
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": RELEASE_NAMESPACE}])
    );
    let deployment = of_kind(&objs, "Deployment")[0];
    assert_eq!(deployment["metadata"]["namespace"], RELEASE_NAMESPACE);
    // Two replicas, one leader, rolled with a ready replica throughout.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].is_string(), "{kind}");
        assert!(container["resources"][kind]["cpu"].is_string(), "{kind}");
    }
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&json!({
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}
    })));
    assert_eq!(
        deployment_args(&objs),
        [
            "run",
            "--http-addr=0.0.0.0:8080",
            "--log-format=json",
            "--api-timeout=15s",
            "--kube-api-timeout=10s",
            "--api-rate-limit=10",
            "--api-burst=20",
            "--concurrency=64",
            "--leader-election",
            "--leader-election-namespace=nsapi-system",
            "--leader-election-lease=nsapi-token-operator",
            "--leader-election-lease-duration=15s",
            "--leader-election-renew-deadline=10s",
            "--leader-election-retry-period=2s"
        ]
    );
    let service = of_kind(&objs, "Service")[0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);

    // Namespace-scoped, with a list: a Role and a RoleBinding in each, no cluster-wide access.
    // (One replica without leader election here: the Lease's Role was checked above.)
    let single = "leaderElection.enabled=false,replicaCount=1,podDisruptionBudget.enabled=false";
    let objs = objects(&helm_ok(&[
        "template",
        "ops",
        &chart,
        "--namespace",
        "operators",
        "-f",
        &scoped_values,
        "--set",
        single,
    ]));
    assert_eq!(
        kinds(&objs),
        [
            "ServiceAccount",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    // The only cluster-scoped grant: get on the watched namespaces themselves, by name.
    assert_eq!(
        of_kind(&objs, "ClusterRole")[0]["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"],
                "resourceNames": ["telephony", "billing"], "verbs": ["get"]}])
    );
    for kind in ["Role", "RoleBinding"] {
        let namespaces: Vec<_> = of_kind(&objs, kind)
            .iter()
            .map(|o| o["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["telephony", "billing"], "{kind}");
    }
    for role in of_kind(&objs, "Role") {
        assert_eq!(role["rules"], expected_rules());
    }
    for binding in of_kind(&objs, "RoleBinding") {
        assert_eq!(
            binding["subjects"][0]["namespace"], "operators",
            "the ServiceAccount lives in the release namespace"
        );
    }
    let args = deployment_args(&objs);
    for arg in [
        "--namespace=telephony",
        "--namespace=billing",
        "--allowed-api-host=portal.example.com",
        "--allowed-api-host=*.ns-api.example.net",
        "--log-format=text",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing from {args:?}");
    }

    // Namespace-scoped without a list: the release namespace only.
    let objs = render("ops", "operators", &["scope=namespace", single]);
    let roles = of_kind(&objs, "Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], "operators");
    assert!(deployment_args(&objs).contains(&"--namespace=operators".to_owned()));

    // On the host network: no declared port (two replicas may share a node), SO_REUSEPORT.
    let objs = render("ops", "operators", &["hostNetwork=true", "httpPort=18080"]);
    let pod = &of_kind(&objs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let container = &pod["containers"][0];
    assert!(container.get("ports").is_none(), "{container}");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 18080);
    let args = deployment_args(&objs);
    assert!(args.contains(&"--http-reuse-port".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--http-addr=0.0.0.0:18080".to_owned()),
        "{args:?}"
    );
    assert_eq!(
        of_kind(&objs, "Service")[0]["spec"]["ports"][0]["targetPort"],
        18080
    );

    // The ServiceMonitor is off by default and renders when enabled.
    let objs = render("ops", "operators", &["serviceMonitor.enabled=true"]);
    let monitor = of_kind(&objs, "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["honorLabels"], true);
}

#[test]
fn day2_extras_are_opt_in() {
    // Off by default: no rule beyond the operator's own, no alerts, no dashboard.
    let objs = render("ops", "operators", &[]);
    for kind in ["PrometheusRule", "ConfigMap"] {
        assert!(
            of_kind(&objs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // Restarting rollout targets and checking consumers each add one rule, in every role.
    let mut with_restarts = expected_rules();
    with_restarts.as_array_mut().unwrap().push(json!(
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get", "patch"]}
    ));
    let mut with_both = with_restarts.clone();
    with_both.as_array_mut().unwrap().push(json!(
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    ));
    let objs = render("ops", "operators", &["rolloutRestart.enabled=true"]);
    assert_eq!(of_kind(&objs, "ClusterRole")[0]["rules"], with_restarts);
    let objs = render(
        "ops",
        "operators",
        &[
            "scope=namespace",
            "watchNamespaces={telephony,billing}",
            "rolloutRestart.enabled=true",
            "consumerCheck.enabled=true",
        ],
    );
    // One Role in each watched namespace (and the Lease's, for leader election).
    let roles: Vec<&Value> = of_kind(&objs, "Role")
        .into_iter()
        .filter(|r| {
            !r["metadata"]["name"]
                .as_str()
                .unwrap()
                .ends_with("-leader-election")
        })
        .collect();
    assert_eq!(roles.len(), 2);
    for role in roles {
        assert_eq!(role["rules"], with_both);
    }
    assert!(deployment_args(&objs).contains(&"--consumer-check".to_owned()));
    let default = render("ops", "operators", &[]);
    assert!(!deployment_args(&default).contains(&"--consumer-check".to_owned()));
    // Routine Events by default; events.routine=false leaves them out.
    let quiet = "--routine-events=false".to_owned();
    assert!(!deployment_args(&default).contains(&quiet));
    let objs = render("ops", "operators", &["events.routine=false"]);
    assert!(deployment_args(&objs).contains(&quiet));
    // The alerts and the dashboard, where asked for.
    let objs = render(
        "ops",
        "operators",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus",
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.namespace=monitoring",
        ],
    );
    let rule = of_kind(&objs, "PrometheusRule")[0];
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        [
            "NsApiTokenExpiringSoon",
            "NsApiCredentialNotReady",
            "NsApiTokenRefreshFailing",
            "NsApiTokenOperatorDown"
        ]
    );
    let dashboard = of_kind(&objs, "ConfigMap")[0];
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["nsapi-token-operator.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["uid"], "nsapi-token-operator");
}

#[test]
fn chart_schema_rejects_bad_values() {
    let chart = chart();
    for (set, expected) in [
        // Two replicas are the default; without leader election both would rotate.
        (
            "leaderElection.enabled=false,replicaCount=2",
            "/replicaCount",
        ),
        ("logFormat=xml", "/logFormat"),
        ("allowedApiHosts=portal.example.com", "/allowedApiHosts"),
        (
            "allowedApiHosts={https://portal.example.com/}",
            "/allowedApiHosts/0",
        ),
        ("scope=everywhere", "/scope"),
        ("watchNamespaces={telephony}", "/watchNamespaces"), // only with scope=namespace
        ("apiTimeout=soon", "/apiTimeout"),
        ("httpPort=0", "/httpPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("hostNetwork=yes", "/hostNetwork"),
        ("extraEnv[0].value=127.0.0.1", "/extraEnv/0"), // an env var needs a name
        ("replicas=1", "additional properties 'replicas'"), // a typo is an error too
        ("rolloutRestart.enabled=yes", "/rolloutRestart/enabled"),
        ("consumerCheck.enabled=1", "/consumerCheck/enabled"),
        ("events.routine=no", "/events/routine"),
        (
            "prometheusRule.alerts.NsApiCredentialNotReady.for=ten minutes",
            "/prometheusRule/alerts/NsApiCredentialNotReady/for",
        ),
        (
            "prometheusRule.alerts.NsApiTokenRefreshFailing.failures=0",
            "/prometheusRule/alerts/NsApiTokenRefreshFailing/failures",
        ),
        (
            "prometheusRule.alerts.NsApiTokenExpiringSoon.enable=false",
            "additional properties 'enable'",
        ),
        (
            "prometheusRule.additionalRules[0].expr=up",
            "/prometheusRule/additionalRules/0",
        ), // neither alert nor record
        (
            "podMonitor.enabled=true,serviceMonitor.enabled=true",
            "/serviceMonitor/enabled",
        ),
        (
            "grafanaDashboard.namespace=Monitoring",
            "/grafanaDashboard/namespace",
        ),
    ] {
        let out = helm(&["template", "x", &chart, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("don't meet the specifications of the schema")
                && stderr.contains(expected),
            "--set {set}: expected a schema error at {expected}, got: {stderr}"
        );
    }
    // Several replicas are fine once they elect a leader.
    let objs = render(
        "x",
        "nsapi-system",
        &["replicaCount=2", "leaderElection.enabled=true"],
    );
    assert!(deployment_args(&objs).contains(&"--leader-election".to_owned()));
}

#[test]
fn deploy_manifests_match_the_chart() {
    let out = Command::new(repo().join("scripts/render-manifests"))
        .arg("--check")
        .output()
        .expect("run scripts/render-manifests");
    assert!(
        out.status.success(),
        "deploy/ or the chart's files/ drifted from the chart and deploy/crds/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A complete install: the namespace first, then what the chart renders.
    let manifest =
        std::fs::read_to_string(repo().join("deploy/nsapi-token-operator.yaml")).unwrap();
    let objs = objects(&manifest);
    assert_eq!(
        kinds(&objs),
        [
            "Namespace",
            "PodDisruptionBudget",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    assert_eq!(objs[0]["metadata"]["name"], RELEASE_NAMESPACE);
}

#[test]
fn dockerfile_ships_what_ci_builds() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("RUN scripts/build-static --out /out/nsapi-token-operator"));
    assert!(dockerfile.contains("scripts/image-rootfs /rootfs /out/nsapi-token-operator"));
    // The final stage is what scripts/build-image builds with buildah (CI builds and checks it).
    let final_stage = dockerfile.rsplit_once("\nFROM ").unwrap().1;
    assert!(final_stage.starts_with("scratch"));
    assert!(final_stage.contains("COPY --from=build /rootfs/ /"));
    assert!(final_stage.contains("USER 65532:65532"));
    assert!(final_stage.contains("ENTRYPOINT [\"/nsapi-token-operator\"]"));
    let dockerignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(dockerignore.lines().any(|l| l == "**/target/"));
    assert!(
        !dockerignore
            .lines()
            .any(|l| ["*", "scripts/", "src/", "Cargo.lock"].contains(&l)),
        "the build context must keep what scripts/build-static needs"
    );
    let script = std::fs::read_to_string(repo().join("scripts/build-static")).unwrap();
    assert!(script.contains("+crt-static") && script.contains("--target \"$TARGET\""));
}

/// `helm uninstall` when dropped, so a failed test leaves no cluster-wide objects behind.
struct Release<'a> {
    name: String,
    namespace: &'a str,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let kubeconfig = control_plane::admin_kubeconfig().display().to_string();
        let out = helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            self.namespace,
            "--kubeconfig",
            &kubeconfig,
            "--ignore-not-found",
        ]);
        if !out.status.success() {
            eprintln!(
                "helm uninstall {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_creates_crd_rbac_deployment_and_service() {
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "helm-install").await;
    let release = Release {
        name: ns.name.clone(),
        namespace: &ns.name,
    };
    let fullname = format!("{}-nsapi-token-operator", release.name);
    let kubeconfig = control_plane::admin_kubeconfig().display().to_string();
    let chart = chart();
    let started = Instant::now();
    let notes = helm_ok(&[
        "install",
        &release.name,
        &chart,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "--set",
        "allowedApiHosts={portal.example.com}",
        // The CRD is a template of the release: adopt the one other tests applied with kubectl.
        "--take-ownership",
    ]);
    eprintln!("measure: helm install took {:?}", started.elapsed());
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(notes.contains("kubectl -n NS get nscred"), "NOTES: {notes}");
    assert!(!notes.contains("WARNING"), "NOTES: {notes}");

    kubectl_ok(&["get", "crd", "nsapicredentials.nsapi.io"]);
    kubectl_ok(&["get", "clusterrole", &fullname]);
    let binding: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "clusterrolebinding",
        &fullname,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": fullname, "namespace": ns.name}])
    );
    for kind in ["serviceaccount", "service", "deployment"] {
        kubectl_ok(&["get", "-n", &ns.name, kind, &fullname]);
    }
    let deployment: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "-n",
        &ns.name,
        "deployment",
        &fullname,
        "-o",
        "json",
    ]))
    .unwrap();
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--allowed-api-host=portal.example.com")),
        "{args}"
    );
    // The API server accepted the pod template as it is; no pod runs without a kubelet.
    let sc = &deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);

    // Bad values fail at install (here: upgrade) time, before anything changes.
    let out = helm(&[
        "upgrade",
        &release.name,
        &chart,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "--set",
        "leaderElection.enabled=false,replicaCount=2",
    ]);
    assert!(
        !out.status.success(),
        "two replicas without leader election were accepted"
    );
    let history = helm_ok(&[
        "history",
        &release.name,
        "--namespace",
        &ns.name,
        "--kubeconfig",
        &kubeconfig,
        "-o",
        "json",
    ]);
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");

    drop(release);
    let out = control_plane::kubectl(&["get", "clusterrolebinding", &fullname]);
    assert!(
        !out.status.success(),
        "helm uninstall left the ClusterRoleBinding"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_apply_cleanly_server_side_dry_run() {
    fixture::ensure_crd();
    let client = control_plane::admin_client().await;
    let ns = TestNamespace::create(&client, "examples").await;
    let examples = repo().join("examples");
    let mut args = vec![
        "apply".to_owned(),
        "--dry-run=server".to_owned(),
        "-n".to_owned(),
        ns.name.clone(),
    ];
    for file in [
        "client-secret.yaml",
        "subscriber-secret.yaml",
        "nsapicredential.yaml",
        "deployment.yaml",
    ] {
        args.push("-f".to_owned());
        args.push(examples.join(file).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kubectl_ok(&args);
    for object in [
        "secret/nsapi-client",
        "secret/nsapi-subscriber",
        "nsapicredential.nsapi.io/abc-company",
        "deployment.apps/call-reporter",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(object) && l.ends_with("(server dry run)")),
            "{object} not applied: {out}"
        );
    }
}

/// RBAC objects applied as admin; deleted when dropped.
struct AppliedRbac {
    yaml: String,
}

impl AppliedRbac {
    /// Applies the (Cluster)Roles and (Cluster)RoleBindings among `objects`.
    fn apply(objects: &[Value]) -> AppliedRbac {
        let mut docs = Vec::new();
        for o in objects {
            let kind = o["kind"].as_str().unwrap();
            if kind.ends_with("Role") || kind.ends_with("RoleBinding") {
                let mut o = o.clone();
                o["metadata"]["labels"][TEST_RBAC_LABEL] = json!("true");
                docs.push(serde_yaml::to_string(&o).unwrap());
            }
        }
        // One YAML document per object (kubectl before 1.30 reads JSON documents between `---`
        // as one stream, and fails).
        let yaml = docs.join("\n---\n");
        let out = control_plane::kubectl_stdin(&["apply", "-f", "-"], &yaml);
        let applied = AppliedRbac { yaml };
        assert!(
            out.status.success(),
            "cannot apply the chart's RBAC: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        applied
    }
}

impl Drop for AppliedRbac {
    fn drop(&mut self) {
        let out = control_plane::kubectl_stdin(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            &self.yaml,
        );
        if !out.status.success() {
            eprintln!(
                "could not delete the test's RBAC objects: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The chart rendered as a release in nsapi-system whose ServiceAccount is the control plane's
/// static operator identity; `release` keeps the (Cluster)Role names unique to this run.
fn render_for_operator_identity(release: &str, set: &[&str]) -> Vec<Value> {
    // One operator process, as these tests run it; a test that elects a leader says so.
    let mut all = vec![
        "serviceAccount.name=nsapi-token-operator",
        "leaderElection.enabled=false",
        "replicaCount=1",
    ];
    all.extend_from_slice(set);
    let objs = render(release, RELEASE_NAMESPACE, &all);
    for binding in objs
        .iter()
        .filter(|o| o["kind"].as_str().unwrap().ends_with("RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": RELEASE_NAMESPACE}])
        );
    }
    objs
}

/// Waits until RBAC lets the operator identity list NsApiCredentials in `namespace` (or in all).
async fn wait_granted(operator: &Client, namespace: Option<&str>) {
    let api: Api<NsApiCredential> = match namespace {
        Some(ns) => Api::namespaced(operator.clone(), ns),
        None => Api::all(operator.clone()),
    };
    control_plane::eventually(
        "the chart's RBAC to take effect",
        Duration::from_secs(10),
        || {
            let api = api.clone();
            async move { api.list(&ListParams::default().limit(1)).await.ok() }
        },
    )
    .await;
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            assert!(
                status.message.contains(OPERATOR_USER),
                "{what}: {}",
                status.message
            );
        }
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Creates the credential `name` whose manifest is `manifest` as admin.
async fn create(client: &Client, manifest: Value) {
    let cred: NsApiCredential = serde_json::from_value(manifest).unwrap();
    let ns = cred.namespace().unwrap();
    Api::<NsApiCredential>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cred)
        .await
        .unwrap_or_else(|e| panic!("cannot create NsApiCredential {}: {e}", cred.name_any()));
}

/// The core flow of one credential: Ready, then a rotation to a new token.
async fn ready_then_rotated(f: &Fixture, name: &str, secret: &str) {
    let started = Instant::now();
    f.wait_ready(name, READY_TIMEOUT).await;
    eprintln!("measure: {name} Ready after {:?}", started.elapsed());
    let first = data(
        &f.token_secret(secret).await.expect("output Secret"),
        "access_token",
    )
    .expect("access_token");
    assert!(f.sim.is_token_valid(&first));
    let second = f.wait_new_token(secret, &first, ROTATION_TIMEOUT).await;
    eprintln!("measure: {name} rotated after {:?}", started.elapsed());
    assert!(f.sim.is_token_valid(&second));
}

/// The events recorded by the operator about `name` in the fixture's namespace.
fn operator_events(f: &Fixture, name: &str) -> Vec<Value> {
    let events: Value = serde_json::from_str(&f.events_json()).unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reportingComponent"] == "nsapi-token-operator")
        .filter(|e| e["involvedObject"]["name"] == name)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_with_only_the_charts_cluster_rbac_runs_the_core_flow() {
    let _turn = OPERATOR_IDENTITY.lock().await;
    let f = Fixture::new("rbac-cluster", SimConfig::new().token_ttl(TOKEN_TTL)).await;
    let operator = control_plane::client_for(&control_plane::operator_kubeconfig()).await;
    let release = control_plane::unique_name("it-rbac-cluster");
    // With leader election, as a multi-replica install runs it: the Lease Role is proven too.
    let objs = render_for_operator_identity(&release, &["leaderElection.enabled=true"]);
    assert_eq!(
        kinds(&objs)
            .into_iter()
            .filter(|k| k.contains("Role"))
            .collect::<Vec<_>>(),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let lease = format!("{release}-nsapi-token-operator");
    let args = deployment_args(&objs);
    assert!(
        args.contains(&format!("--leader-election-lease={lease}")),
        "{args:?}"
    );
    let ns_yaml = kubectl_ok(&[
        "create",
        "namespace",
        RELEASE_NAMESPACE,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let out = control_plane::kubectl_stdin(&["apply", "-f", "-"], &ns_yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _rbac = AppliedRbac::apply(&objs);
    wait_granted(&operator, None).await;

    // Cluster-wide, as the chart runs it (no --namespace). A label selector unique to this test
    // keeps it off every other test's credentials.
    f.create_input_secrets().await;
    let shard = f.namespace().to_owned();
    let mut manifest = f.credential_manifest("abc", |_| {});
    manifest["metadata"]["labels"] = json!({"nsapi-token-operator.test/shard": shard});
    create(&f.client, manifest).await;
    let workdir = std::env::temp_dir().join(format!("nsapi-test-{shard}-cluster"));
    std::fs::create_dir_all(&workdir).unwrap();
    let log: PathBuf = workdir.join("operator.log");
    let selector = format!("nsapi-token-operator.test/shard={shard}");
    let process = fixture::Operator::start(
        &control_plane::operator_kubeconfig(),
        &[
            "run",
            "--allow-insecure-http",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--api-timeout",
            "3s",
            "--label-selector",
            &selector,
            "--leader-election",
            "--leader-election-namespace",
            RELEASE_NAMESPACE,
            "--leader-election-lease",
            &lease,
        ],
        &log,
    );

    // get + list/watch (inputs, metadata watch), create + patch (output Secret), status patch.
    ready_then_rotated(&f, "abc", "abc-token").await;
    assert!(process.log().contains("became the leader"));

    // delete: a new output name moves the token and removes the Secret under the old name.
    f.credentials()
        .patch(
            "abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tokenSecret": {"name": "abc-token-moved"}}})),
        )
        .await
        .unwrap();
    control_plane::eventually(
        "the token to move to abc-token-moved",
        READY_TIMEOUT,
        || async {
            let moved = f.token_secret("abc-token-moved").await?;
            let old_gone = f.secrets().get_opt("abc-token").await.unwrap().is_none();
            (data(&moved, "access_token").is_some() && old_gone).then_some(())
        },
    )
    .await;

    // events.k8s.io: the operator recorded what it did.
    let events = operator_events(&f, "abc");
    assert!(!events.is_empty(), "no event from the operator");

    assert!(
        process.stop(),
        "the operator did not exit within 10 s of SIGTERM"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the operator was denied something: {logs}"
    );
    f.assert_no_secret_in(&logs, "operator logs");
    let _ = std::fs::remove_dir_all(&workdir);
    kubectl_ok(&[
        "delete",
        "lease",
        &lease,
        "-n",
        RELEASE_NAMESPACE,
        "--ignore-not-found",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_scoped_rbac_confines_the_operator_to_its_namespaces() {
    let _turn = OPERATOR_IDENTITY.lock().await;
    let mut f = Fixture::new("rbac-scoped", SimConfig::new().token_ttl(TOKEN_TTL)).await;
    let outside = TestNamespace::create(&f.client, "rbac-outside").await;
    let operator = control_plane::client_for(&control_plane::operator_kubeconfig()).await;
    let release = control_plane::unique_name("it-rbac-scoped");
    let watch = format!("watchNamespaces={{{}}}", f.namespace());
    let objs = render_for_operator_identity(&release, &["scope=namespace", &watch]);
    assert_eq!(
        kinds(&objs)
            .into_iter()
            .filter(|k| k.contains("Role"))
            .collect::<Vec<_>>(),
        // The ClusterRole reads only the watched namespaces themselves, by name.
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    );
    for o in of_kind(&objs, "Role")
        .into_iter()
        .chain(of_kind(&objs, "RoleBinding"))
    {
        assert_eq!(o["metadata"]["namespace"], f.namespace());
    }
    assert!(deployment_args(&objs).contains(&format!("--namespace={}", f.namespace())));
    let _rbac = AppliedRbac::apply(&objs);
    wait_granted(&operator, Some(f.namespace())).await;

    // Inputs and a credential in both namespaces.
    f.create_input_secrets().await;
    fixture::put_secret(
        &f.client,
        &outside.name,
        CLIENT_SECRET_NAME,
        &[
            ("client_id", fixture::CLIENT_ID),
            ("client_secret", &f.client_secret),
        ],
    )
    .await;
    fixture::put_secret(
        &f.client,
        &outside.name,
        SUBSCRIBER_SECRET_NAME,
        &[("username", fixture::USERNAME), ("password", &f.password)],
    )
    .await;
    let mut manifest = f.credential_manifest("outside", |_| {});
    manifest["metadata"]["namespace"] = json!(outside.name);
    create(&f.client, manifest).await;

    // Outside its scope the operator's identity can read nothing.
    let secrets_outside: Api<Secret> = Api::namespaced(operator.clone(), &outside.name);
    assert_forbidden(
        secrets_outside.get(CLIENT_SECRET_NAME).await,
        "get a Secret outside the scope",
    );
    assert_forbidden(
        secrets_outside.list(&ListParams::default()).await,
        "list Secrets outside the scope",
    );
    assert_forbidden(
        Api::<Secret>::all(operator.clone())
            .list(&ListParams::default())
            .await,
        "list Secrets cluster-wide",
    );
    assert_forbidden(
        Api::<NsApiCredential>::namespaced(operator.clone(), &outside.name)
            .list(&ListParams::default())
            .await,
        "list NsApiCredentials outside the scope",
    );
    Api::<Secret>::namespaced(operator.clone(), f.namespace())
        .get(CLIENT_SECRET_NAME)
        .await
        .expect("the operator may read Secrets in its namespace");

    // Even told to watch the outside namespace too, the operator acts only where RBAC lets it.
    let outside_flag = outside.name.clone();
    f.start_operator_as(
        &control_plane::operator_kubeconfig(),
        &["--namespace", &outside_flag],
    );
    f.wait_operator_started().await;
    f.create_credential("abc", |_| {}).await;
    ready_then_rotated(&f, "abc", "abc-token").await;

    let cred = Api::<NsApiCredential>::namespaced(f.client.clone(), &outside.name)
        .get("outside")
        .await
        .unwrap();
    assert!(
        cred.status.is_none(),
        "the credential outside the scope got a status: {:?}",
        cred.status
    );
    let token_outside = Api::<Secret>::namespaced(f.client.clone(), &outside.name)
        .get_opt("outside-token")
        .await
        .unwrap();
    assert!(
        token_outside.is_none(),
        "an output Secret appeared outside the scope"
    );
    let logs = f.operator_logs();
    assert!(
        logs.contains("forbidden") && logs.contains(&outside.name),
        "the operator never tried the outside namespace (so the test proves nothing)"
    );

    // Even with a watch that keeps failing with 403, SIGTERM ends the process (after the
    // shutdown grace period at most).
    f.stop_operator();
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_that_keeps_failing_holds_back_no_rotation() {
    // The chart's namespace Role without watch on Secrets: the operator can still read its
    // inputs, write its output and list Secret metadata, but the watch that follows the list
    // fails with 403 for as long as it runs, each retry after a longer backoff. Rotations go on
    // as before (with the watch's errors passed on, kube's controller backed off as well, timers
    // included: `a_failing_watch_holds_back_no_timer`), and the operator says what is wrong.
    let _turn = OPERATOR_IDENTITY.lock().await;
    let mut f = Fixture::new("rbac-no-watch", SimConfig::new().token_ttl(TOKEN_TTL)).await;
    let operator = control_plane::client_for(&control_plane::operator_kubeconfig()).await;
    let release = control_plane::unique_name("it-rbac-no-watch");
    let watch = format!("watchNamespaces={{{}}}", f.namespace());
    let mut objs = render_for_operator_identity(&release, &["scope=namespace", &watch]);
    let mut cut = 0;
    for role in objs.iter_mut().filter(|o| o["kind"] == "Role") {
        for rule in role["rules"].as_array_mut().unwrap() {
            if rule["resources"] == json!(["secrets"]) {
                let verbs = rule["verbs"].as_array_mut().unwrap();
                verbs.retain(|v| v != "watch");
                cut += 1;
            }
        }
    }
    assert_eq!(cut, 1, "the chart's Role has one rule for Secrets");
    let _rbac = AppliedRbac::apply(&objs);
    wait_granted(&operator, Some(f.namespace())).await;
    let secrets = Api::<Secret>::namespaced(operator.clone(), f.namespace());
    secrets
        .list_metadata(&ListParams::default())
        .await
        .expect("the operator may list Secrets");
    assert_forbidden(
        secrets.watch(&Default::default(), "0").await.map(|_| ()),
        "watch Secrets",
    );

    f.create_input_secrets().await;
    f.start_operator_as(&control_plane::operator_kubeconfig(), &[]);
    f.wait_operator_started().await;
    f.create_credential("abc", |_| {}).await;
    f.wait_ready("abc", READY_TIMEOUT).await;
    // Five tokens of 20 s each, every one rotated before it expired.
    let mut seen = fixture::Observed::default();
    seen.until_tokens(&f, "abc-token", 5, Duration::from_secs(120))
        .await;
    seen.assert_sound();
    let stats = f.sim.stats();
    assert_eq!(
        stats.password_grants + stats.refresh_grants,
        seen.tokens.len() as u64,
        "a grant was wasted"
    );

    let logs = f.operator_logs();
    let failed = logs
        .lines()
        .filter(|l| l.contains("watch failed") && l.contains("\"Secrets\""))
        .count();
    assert!(
        failed >= 2 && logs.contains("forbidden"),
        "the operator did not say, again, that its Secret watch failed ({failed} lines)"
    );
    f.stop_operator();
    f.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lasting_kubernetes_api_error_backs_off_and_the_token_obtained_is_written_once_allowed() {
    let _turn = OPERATOR_IDENTITY.lock().await;
    let mut f = Fixture::new("rbac-denied", SimConfig::new()).await;
    let operator = control_plane::client_for(&control_plane::operator_kubeconfig()).await;
    let release = control_plane::unique_name("it-rbac-denied");
    let watch = format!("watchNamespaces={{{}}}", f.namespace());
    let granted = render_for_operator_identity(&release, &["scope=namespace", &watch]);
    // The chart's Role without `create` on Secrets: the operator can read everything and call the
    // API, but every attempt to write its output Secret is denied.
    let mut denied = granted.clone();
    for role in denied.iter_mut().filter(|o| o["kind"] == "Role") {
        for rule in role["rules"].as_array_mut().unwrap() {
            if rule["resources"] == json!(["secrets"]) {
                let verbs = rule["verbs"].as_array_mut().unwrap();
                verbs.retain(|v| v != "create");
            }
        }
    }
    let _rbac = AppliedRbac::apply(&denied);
    wait_granted(&operator, Some(f.namespace())).await;
    f.create_input_secrets().await;
    f.start_operator_as(&control_plane::operator_kubeconfig(), &[]);
    f.create_credential("abc", |_| {}).await;

    // The first pass obtains a token and cannot write it. Every retry writes that same token
    // instead of obtaining another one, backing off from 5 s and doubling: at most 6 passes
    // in 90 s (a fixed 10 s retry would make 10, a loop hundreds).
    tokio::time::sleep(Duration::from_secs(90)).await;
    let attempts = f.sim.stats().token_requests;
    let log = f.latest_operator_log();
    let passes = log
        .lines()
        .filter(|l| l.contains("reconcile failed") && l.contains("forbidden"))
        .count();
    eprintln!(
        "measure: in 90 s while the output Secret cannot be created: {attempts} token request(s), {passes} failed passes"
    );
    assert_eq!(attempts, 1, "a failed write cost another NetSapiens call");
    assert!(passes >= 2, "the failure was never retried ({passes})");
    assert!(passes <= 6, "{passes} passes in 90 s: no backoff");
    assert!(f.token_secret("abc-token").await.is_none());

    // Allowed again: the token obtained 90 s ago is written, still without another call.
    let _rbac = AppliedRbac::apply(&granted);
    f.wait_ready("abc", Duration::from_secs(330)).await;
    assert_eq!(f.sim.stats().token_requests, 1);
    let secret = f.token_secret("abc-token").await.unwrap();
    assert!(
        f.sim
            .is_token_valid(&data(&secret, "access_token").unwrap())
    );
    f.stop_operator();
    f.assert_no_secret_leaked().await;
}
