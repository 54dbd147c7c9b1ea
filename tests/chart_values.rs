//! The chart's values for clusters with policies (issue 12, item 4), each proven twice: rendered
//! with `helm template` (what the chart writes) and installed into the local control plane (that
//! the API server accepts it), plus the values schema's rejections and its duration pattern
//! against what the operator binary accepts.
//!
//! Installs into the shared control plane go into a namespace of their own, as a release named
//! after it (so cluster-wide objects get names unique to the run), with `crds.enabled=false`: the
//! CRD there belongs to no release (tests apply it with kubectl). They are uninstalled when the
//! test ends, even on failure. Two tests run on a private control plane: the CRD's own life cycle
//! (install, upgrade from the earlier layout with the CRD in crds/, uninstall with and without
//! `crds.keep`), since it changes and deletes a cluster-wide object that other tests use, and
//! the aggregated roles, which need the ClusterRole aggregation controller (a shared control plane
//! started before scripts/control-plane ran it has none). While one runs, no other test of this
//! file talks to a control plane (`PLANE`).
//!
//! helm is the project's pinned one: `$NSAPI_HELM` (scripts/test exports it), else `scripts/helm`.

mod chart;
mod control_plane;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chart::{chart, helm, kinds, objects, of_kind, repo, stdout_of};
use control_plane::{PrivatePlane, TestNamespace};
use nsapi_token_operator::core::schedule::parse_duration;
use serde_json::{Value, json};

fn kubectl_ok(args: &[&str]) -> String {
    stdout_of("kubectl", args, control_plane::kubectl(args))
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&all)).unwrap()
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "one {kind} expected in {:?}",
        kinds(objects)
    );
    found[0]
}

fn pod_spec(objects: &[Value]) -> &Value {
    &the(objects, "Deployment")["spec"]["template"]["spec"]
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A values file (JSON is YAML) in the temp dir, removed when dropped.
struct ValuesFile(PathBuf);

impl ValuesFile {
    fn new(values: &Value) -> ValuesFile {
        let path =
            std::env::temp_dir().join(format!("{}.yaml", control_plane::unique_name("values")));
        std::fs::write(&path, serde_json::to_string_pretty(values).unwrap()).unwrap();
        ValuesFile(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for ValuesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Tests on the shared control plane hold a read lock; a test on a private one the write lock,
/// since every `control_plane` helper follows a private plane while one runs.
static PLANE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// `helm template` of `chart` as release "x" in namespace "nsapi-system" with `values`; returns
/// helm's output whatever the exit status.
fn template_of(chart: &str, values: &Value) -> Output {
    let file = ValuesFile::new(values);
    let path = file.path();
    helm(&[
        "template",
        "x",
        chart,
        "--namespace",
        "nsapi-system",
        "-f",
        &path,
    ])
}

/// The objects the chart renders with `values`; panics if helm fails.
fn render(values: &Value) -> Vec<Value> {
    let chart = chart();
    let out = template_of(&chart, values);
    objects(&stdout_of(
        "helm",
        &["template", "-f", &values.to_string()],
        out,
    ))
}

/// helm's complaint about `values`; panics if the chart renders them.
fn refused(values: &Value) -> String {
    let out = template_of(&chart(), values);
    assert!(!out.status.success(), "{values} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A release installed into a test namespace of the shared control plane (named after it), with
/// `crds.enabled=false`; `helm uninstall` when dropped, so a failed test leaves no cluster-wide
/// object behind. The namespace goes after the release.
struct Installed {
    release: String,
    fullname: String,
    /// What helm printed, NOTES included.
    notes: String,
    _namespace: TestNamespace,
}

impl Installed {
    /// Installs the chart with `values`; panics with helm's error if it fails.
    async fn new(prefix: &str, values: &Value) -> Installed {
        let installed = Self::attempt(prefix, values).await;
        match installed {
            (installed, Ok(_)) => installed,
            (_, Err(e)) => panic!("helm install with {values} failed: {e}"),
        }
    }

    /// Installs the chart with `values`; the release (to uninstall) and helm's verdict.
    async fn attempt(prefix: &str, values: &Value) -> (Installed, Result<String, String>) {
        let client = control_plane::admin_client().await;
        let namespace = TestNamespace::create(&client, prefix).await;
        let release = namespace.name.clone();
        let file = ValuesFile::new(values);
        let (values_path, kubeconfig) = (
            file.path(),
            control_plane::admin_kubeconfig().display().to_string(),
        );
        let chart = chart();
        let out = helm(&[
            "install",
            &release,
            &chart,
            "--namespace",
            &release,
            "--kubeconfig",
            &kubeconfig,
            "-f",
            &values_path,
            "--set",
            "crds.enabled=false",
        ]);
        let notes = String::from_utf8_lossy(&out.stdout).into_owned();
        let verdict = if out.status.success() {
            Ok(notes.clone())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let installed = Installed {
            fullname: format!("{release}-nsapi-token-operator"),
            release,
            notes,
            _namespace: namespace,
        };
        (installed, verdict)
    }

    /// A namespaced object of the release, as the API server stores it.
    fn get(&self, kind: &str, name: &str) -> Value {
        kubectl_json(&["get", "-n", &self.release, kind, name])
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let kubeconfig = control_plane::admin_kubeconfig().display().to_string();
        let out = helm(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.release,
            "--kubeconfig",
            &kubeconfig,
            "--ignore-not-found",
        ]);
        if !out.status.success() {
            eprintln!(
                "helm uninstall {} failed: {}",
                self.release,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations: the schema's pattern against the operator's parser.

/// The `timeout` definition of values.schema.json: its pattern, compiled, and its maxLength.
fn timeout_rule() -> (regex::Regex, usize) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/values.schema.json", chart())).unwrap(),
    )
    .unwrap();
    let timeout = &schema["definitions"]["timeout"];
    for value in ["apiTimeout", "kubeApiTimeout"] {
        assert_eq!(
            schema["properties"][value]["$ref"], "#/definitions/timeout",
            "{value}"
        );
    }
    let pattern = timeout["pattern"].as_str().unwrap();
    // Go's regexp (RE2), which helm validates with, has no lookaround; neither has this crate.
    assert!(!pattern.contains("(?="), "{pattern}");
    (
        regex::Regex::new(pattern).unwrap(),
        timeout["maxLength"].as_u64().unwrap() as usize,
    )
}

fn schema_accepts(rule: &(regex::Regex, usize), value: &str) -> bool {
    value.chars().count() <= rule.1 && rule.0.is_match(value)
}

/// What `--api-timeout` accepts, as src/main.rs's `parse_timeout` decides: a duration that
/// parses (`schedule::parse_duration`), of at least 1 ms.
fn parser_accepts(value: &str) -> bool {
    parse_duration(value).is_ok_and(|d| d.as_nanos() >= 1_000_000)
}

/// What the operator binary itself accepts for `--api-timeout` and `--kube-api-timeout`: clap
/// parses every value before it complains about the unknown flag after them, so nothing runs.
fn binary_accepts(value: &str) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_nsapi-token-operator"))
        .arg("run")
        .arg(format!("--api-timeout={value}"))
        .arg(format!("--kube-api-timeout={value}"))
        .arg("--not-a-flag-of-the-operator")
        .output()
        .expect("run the operator binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unexpected argument '--not-a-flag-of-the-operator'") {
        true
    } else {
        assert!(
            stderr.contains("invalid value"),
            "{value}: unexpected answer: {stderr}"
        );
        false
    }
}

#[test]
fn timeout_pattern_accepts_exactly_what_the_parser_accepts_up_to_five_characters() {
    let rule = timeout_rule();
    // Every string of up to 5 characters of digits, '.', and the unit letters: 177,155 strings.
    let alphabet: Vec<char> = "0126789.msh".chars().collect();
    let mut current = vec![String::new()];
    let (mut checked, mut accepted) = (0, 0);
    for _ in 0..5 {
        let mut next = Vec::with_capacity(current.len() * alphabet.len());
        for prefix in &current {
            for c in &alphabet {
                let s = format!("{prefix}{c}");
                let (schema, parser) = (schema_accepts(&rule, &s), parser_accepts(&s));
                assert_eq!(
                    schema, parser,
                    "{s:?}: the schema says {schema}, the operator's parser {parser}"
                );
                checked += 1;
                accepted += usize::from(parser);
                next.push(s);
            }
        }
        current = next;
    }
    eprintln!("measure: {checked} strings, {accepted} valid timeouts, no disagreement");
    assert!(accepted > 10_000, "{accepted}");
}

#[test]
fn timeout_pattern_agrees_with_the_operator_binary_at_the_edges() {
    let rule = timeout_rule();
    // (value, accepted by both)
    let cases = [
        ("15s", true),
        ("10s", true),
        ("1h30m", true),
        ("1.5h", true),
        ("1h0.5m10s100ms", true),
        (".5s", true),
        ("1.s", true),
        ("1ms", true), // the least timeout
        ("1.0ms", true),
        ("0.001s", true),
        ("0.0010s", true),
        ("0.0000167m", true),       // 1.002 ms
        ("0.000016667m", true),     // 1.00002 ms
        ("0.00000028h", true),      // 1.008 ms
        ("0.000000278h", true),     // 1.0008 ms
        ("0s0s1ms", true),          // zeros around a valid part
        ("999999999999999h", true), // the longest: 16 characters, no overflow
        ("0s", false),
        ("0", false),
        ("00ms", false),
        ("0.0h", false),
        ("0.5ms", false),
        ("0.9ms", false),
        ("0.0009s", false),
        ("0.000016m", false),      // 0.96 ms
        ("0.00001666m", false),    // 0.9996 ms
        ("0.00000027h", false),    // 0.972 ms
        ("0.00000027777h", false), // 0.99997 ms
        ("500us", false),
        ("1µs", false),
        ("1ns", false),
        ("1d", false),
        ("-1s", false),
        ("+1s", false),
        ("1e3s", false),
        ("1.2.3s", false),
        (".s", false),
        ("s", false),
        ("15", false),
        ("15 s", false),
        ("", false),
        ("99999999999999999999h", false), // overflows the parser; too long for the schema
    ];
    for (value, expected) in cases {
        assert_eq!(binary_accepts(value), expected, "the binary, on {value:?}");
        assert_eq!(parser_accepts(value), expected, "the parser, on {value:?}");
        assert_eq!(
            schema_accepts(&rule, value),
            expected,
            "the schema, on {value:?}"
        );
    }
    // The one known difference, on the safe side: a total of at least 1 ms made only of parts
    // below 1 ms. A regular expression cannot add; the schema refuses what the binary takes.
    for value in ["0.5ms0.5ms", "0.0005s0.0005s"] {
        assert!(binary_accepts(value), "{value}");
        assert!(!schema_accepts(&rule, value), "{value}");
    }
}

#[test]
fn schema_refuses_durations_the_binary_rejects_and_accepts_prometheus_ones_for_the_monitor() {
    for key in ["apiTimeout", "kubeApiTimeout"] {
        for bad in ["500us", "0s", "1µs", "0.5ms", "1d"] {
            let stderr = refused(&json!({ key: bad }));
            assert!(
                stderr.contains("don't meet the specifications of the schema")
                    && stderr.contains(&format!("/{key}")),
                "{key}={bad}: {stderr}"
            );
        }
    }
    let objs = render(&json!({"apiTimeout": "1.5s", "kubeApiTimeout": "1m30s"}));
    let args = args_of(the(&objs, "Deployment"));
    assert!(args.contains(&"--api-timeout=1.5s".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--kube-api-timeout=1m30s".to_owned()),
        "{args:?}"
    );

    // The ServiceMonitor's durations are Prometheus's (its CRD's pattern): whole numbers only.
    for (interval, ok) in [
        ("30s", true),
        ("1m30s", true),
        ("1.5m", false),
        ("30", false),
    ] {
        let values = json!({"serviceMonitor": {"enabled": true, "interval": interval}});
        if ok {
            let objs = render(&values);
            assert_eq!(
                the(&objs, "ServiceMonitor")["spec"]["endpoints"][0]["interval"],
                interval
            );
        } else {
            assert!(
                refused(&values).contains("/serviceMonitor/interval"),
                "{interval}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// crds.enabled, crds.keep

const CRD_NAME: &str = "nsapicredentials.nsapi.io";
const CRD_FILE: &str = "nsapi.io_nsapicredentials.yaml";

fn source_crd() -> Value {
    let path = repo().join("deploy/crds").join(CRD_FILE);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The top-level description of the CRD's schema.
fn crd_description(crd: &Value) -> &str {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
        .as_str()
        .unwrap()
}

#[test]
fn crds_render_from_deploy_crds_with_the_keep_policy_and_can_be_left_out() {
    let objs = render(&json!({}));
    let crd = the(&objs, "CustomResourceDefinition");
    let source = source_crd();
    for key in ["apiVersion", "kind", "spec"] {
        assert_eq!(crd[key], source[key], "{key}");
    }
    assert_eq!(crd["metadata"]["name"], CRD_NAME);
    assert_eq!(
        crd["metadata"]["annotations"],
        json!({"helm.sh/resource-policy": "keep"})
    );
    assert_eq!(crd["metadata"]["labels"]["app.kubernetes.io/instance"], "x");
    // Helm's crds/ is gone: nothing would upgrade a CRD there.
    assert!(!Path::new(&chart()).join("crds").exists());

    let objs = render(&json!({"crds": {"keep": false}}));
    let crd = the(&objs, "CustomResourceDefinition");
    assert!(crd["metadata"].get("annotations").is_none(), "{crd}");
    assert_eq!(crd["spec"], source["spec"]);

    let objs = render(&json!({"crds": {"enabled": false}}));
    assert!(of_kind(&objs, "CustomResourceDefinition").is_empty());
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies of the chart in a temp dir: `old`, laid out as before this change (the CRD in crds/,
/// which Helm installs once and never upgrades), `new` as it is, and `changed`, whose CRD has
/// another description.
fn chart_layouts() -> (TempDir, String, String, String, String) {
    let dir = TempDir(std::env::temp_dir().join(control_plane::unique_name("chart-layouts")));
    let source = Path::new(&chart()).to_owned();
    let old = dir.0.join("old/nsapi-token-operator");
    copy_dir(&source, &old);
    std::fs::remove_file(old.join("templates/crd.yaml")).unwrap();
    std::fs::create_dir_all(old.join("crds")).unwrap();
    std::fs::rename(
        old.join("files").join(CRD_FILE),
        old.join("crds").join(CRD_FILE),
    )
    .unwrap();
    let new = dir.0.join("new/nsapi-token-operator");
    copy_dir(&source, &new);
    let changed = dir.0.join("changed/nsapi-token-operator");
    copy_dir(&source, &changed);
    let description = format!(
        "Changed by the upgrade test {}.",
        control_plane::unique_name("run")
    );
    let file = changed.join("files").join(CRD_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let original = format!("        description: {}\n", crd_description(&source_crd()));
    assert!(text.contains(&original));
    std::fs::write(
        &file,
        text.replacen(
            &original,
            &format!("        description: {description}\n"),
            1,
        ),
    )
    .unwrap();
    let path = |p: &Path| p.display().to_string();
    (dir, path(&old), path(&new), path(&changed), description)
}

/// The CRD as the API server serves it, if it exists.
fn served_crd() -> Option<Value> {
    let out = control_plane::kubectl(&["get", "crd", CRD_NAME, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn crd_upgrades_with_the_release_and_outlives_it_unless_told_otherwise() {
    // A control plane of its own: this test replaces and deletes the cluster-wide CRD.
    let _plane = PLANE.write().await;
    let _private = PrivatePlane::start().await;
    let (_dir, old, new, changed, description) = chart_layouts();
    let original = crd_description(&source_crd()).to_owned();
    let kubeconfig = control_plane::admin_kubeconfig().display().to_string();
    let helm_in = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--namespace", "ops", "--kubeconfig", &kubeconfig]);
        helm(&all)
    };
    let ok = |args: &[&str]| {
        let out = helm_in(args);
        stdout_of("helm", args, out)
    };
    let revisions = || -> usize {
        let history: Value = serde_json::from_str(&ok(&["history", "r", "-o", "json"])).unwrap();
        history.as_array().unwrap().len()
    };
    let credential_exists = || {
        control_plane::kubectl(&["get", "nscred", "abc-company", "-n", "team"])
            .status
            .success()
    };

    // The earlier layout: Helm installs crds/ untracked, so the CRD belongs to no release.
    ok(&[
        "install",
        "r",
        &old,
        "--create-namespace",
        "--set",
        "allowedApiHosts={portal.example.com}",
    ]);
    let crd = served_crd().expect("the CRD from crds/");
    assert!(crd["metadata"].get("annotations").is_none(), "{crd}");
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{CRD_NAME}"),
    ]);
    kubectl_ok(&["create", "namespace", "team"]);
    let example = repo()
        .join("examples/nsapicredential.yaml")
        .display()
        .to_string();
    kubectl_ok(&["apply", "-n", "team", "-f", &example]);
    assert!(credential_exists());

    // Upgrading to the templated CRD: Helm refuses to adopt an object it does not own...
    let out = helm_in(&["upgrade", "r", &new]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "adopted without --take-ownership");
    assert!(
        stderr.contains(CRD_NAME) && stderr.contains("invalid ownership metadata"),
        "{stderr}"
    );
    assert_eq!(revisions(), 1, "the failed upgrade changed the release");
    assert!(
        served_crd().unwrap()["metadata"]
            .get("annotations")
            .is_none()
    );
    // ...unless told to, with the command of docs/install.md: the CRD is the release's from then
    // on, and the values given before are kept.
    ok(&[
        "upgrade",
        "r",
        &new,
        "--reset-then-reuse-values",
        "--take-ownership",
    ]);
    assert!(ok(&["get", "values", "r"]).contains("portal.example.com"));
    let crd = served_crd().unwrap();
    let annotations = &crd["metadata"]["annotations"];
    assert_eq!(annotations["meta.helm.sh/release-name"], "r");
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert_eq!(crd_description(&crd), original);

    // A chart whose CRD changed: `helm upgrade` changes the served CRD.
    ok(&["upgrade", "r", &changed]);
    assert_eq!(crd_description(&served_crd().unwrap()), description);
    assert_eq!(revisions(), 3);
    assert!(credential_exists());

    // crds.keep (the default): the CRD and every NsApiCredential outlive the release.
    let out = ok(&["uninstall", "r"]);
    assert!(out.contains(CRD_NAME), "{out}");
    assert!(served_crd().is_some(), "helm uninstall deleted the CRD");
    assert!(
        credential_exists(),
        "helm uninstall deleted an NsApiCredential"
    );

    // Installed again under the same name, the release takes its kept CRD back without
    // --take-ownership (its annotations name it), and brings the chart's own version back.
    ok(&["install", "r", &new]);
    assert_eq!(crd_description(&served_crd().unwrap()), original);

    // crds.keep=false: uninstall deletes the CRD, and with it every NsApiCredential.
    ok(&["upgrade", "r", &new, "--set", "crds.keep=false"]);
    let crd = served_crd().unwrap();
    assert!(
        crd["metadata"]["annotations"]
            .get("helm.sh/resource-policy")
            .is_none(),
        "{crd}"
    );
    ok(&["uninstall", "r"]);
    control_plane::eventually("the CRD to be deleted", Duration::from_secs(60), || async {
        served_crd().is_none().then_some(())
    })
    .await;
    assert!(!credential_exists());
}

// ---------------------------------------------------------------------------------------------
// The pod: extraArgs, extraEnv, extraVolumes/extraVolumeMounts, topologySpreadConstraints.

/// The operator's first arguments with the default values (leader election's come after them).
const DEFAULT_ARGS: [&str; 8] = [
    "run",
    "--http-addr=0.0.0.0:8080",
    "--log-format=json",
    "--api-timeout=15s",
    "--kube-api-timeout=10s",
    "--api-rate-limit=10",
    "--api-burst=20",
    "--concurrency=64",
];

#[tokio::test(flavor = "multi_thread")]
async fn extra_args_come_after_the_charts_own() {
    let _plane = PLANE.read().await;
    let extra = ["--ca-file=/etc/nsapi/ca/ca.crt", "--x=a b,\"c\" {{ d }}"];
    let values = json!({"extraArgs": extra, "leaderElection": {"enabled": true}});
    let objs = render(&values);
    let args = args_of(the(&objs, "Deployment"));
    assert_eq!(args[..DEFAULT_ARGS.len()], DEFAULT_ARGS);
    assert_eq!(args[args.len() - 2..], extra, "{args:?}");
    assert!(args.contains(&"--leader-election".to_owned()), "{args:?}");
    assert_eq!(
        args_of(the(
            &render(&json!({"leaderElection": {"enabled": false}, "replicaCount": 1})),
            "Deployment"
        )),
        DEFAULT_ARGS
    );

    let installed = Installed::new("chart-extra-args", &values).await;
    let live = installed.get("deployment", &installed.fullname);
    assert_eq!(args_of(&live)[args.len() - 2..], extra);
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_env_carries_a_proxy_after_the_charts_own_variables() {
    let _plane = PLANE.read().await;
    let extra = json!([
        {"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"},
        {"name": "NO_PROXY", "value": "10.0.0.1,.svc,.cluster.local"},
        {"name": "PROXY_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "password"}}},
    ]);
    let values = json!({"extraEnv": extra});
    let objs = render(&values);
    let env = &pod_spec(&objs)["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "POD_NAME",
            "RUST_LOG",
            "MALLOC_ARENA_MAX",
            "HTTPS_PROXY",
            "NO_PROXY",
            "PROXY_PASSWORD"
        ]
    );
    assert_eq!(env.as_array().unwrap()[3..], extra.as_array().unwrap()[..]);

    let installed = Installed::new("chart-extra-env", &values).await;
    let live = installed.get("deployment", &installed.fullname);
    let live_env = &live["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        live_env.as_array().unwrap()[3..],
        extra.as_array().unwrap()[..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_volumes_mount_a_private_ca_bundle() {
    let _plane = PLANE.read().await;
    let volumes = json!([{"name": "private-ca", "configMap": {"name": "private-ca"}}]);
    let mounts = json!([{"name": "private-ca", "mountPath": "/etc/nsapi/ca", "readOnly": true}]);
    let values = json!({
        "extraVolumes": volumes,
        "extraVolumeMounts": mounts,
        "extraArgs": ["--ca-file=/etc/nsapi/ca/ca.crt"],
    });
    let objs = render(&values);
    let pod = pod_spec(&objs);
    assert_eq!(pod["volumes"], volumes);
    assert_eq!(pod["containers"][0]["volumeMounts"], mounts);
    // None by default: the pod has no volume but the service-account token.
    let default = render(&json!({}));
    assert!(pod_spec(&default).get("volumes").is_none());
    assert!(
        pod_spec(&default)["containers"][0]
            .get("volumeMounts")
            .is_none()
    );

    let installed = Installed::new("chart-extra-volumes", &values).await;
    let live = installed.get("deployment", &installed.fullname);
    let live_pod = &live["spec"]["template"]["spec"];
    assert_eq!(live_pod["volumes"][0]["configMap"]["name"], "private-ca");
    assert_eq!(live_pod["containers"][0]["volumeMounts"], mounts);

    // The install is a real check: the API server refuses a mount of a volume that is not there.
    let (_failed, verdict) = Installed::attempt(
        "chart-extra-volumes-bad",
        &json!({"extraVolumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}),
    )
    .await;
    let error = verdict.expect_err("a mount without its volume was accepted");
    assert!(
        error.contains("volumeMounts[0].name") && error.contains("Not found"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_bundle_and_proxy_values_reach_the_operator_as_ca_file_and_proxy_variables() {
    let _plane = PLANE.read().await;
    let values = json!({
        "caBundle": {"configMap": "portal-ca"},
        "proxy": {"https": "http://proxy.internal:3128", "noProxy": [".internal.example.com", "10.0.0.0/8"]},
    });
    let objs = render(&values);
    let pod = pod_spec(&objs);
    let container = &pod["containers"][0];
    assert!(
        args_of(of_kind(&objs, "Deployment")[0])
            .contains(&"--ca-file=/etc/nsapi-token-operator/ca/ca.crt".to_owned())
    );
    assert_eq!(
        pod["volumes"],
        json!([{"name": "ca-bundle", "configMap": {"name": "portal-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}])
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "ca-bundle", "mountPath": "/etc/nsapi-token-operator/ca", "readOnly": true}])
    );
    let env = container["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"})));
    assert!(
        env.contains(&json!({"name": "NO_PROXY", "value": ".internal.example.com,10.0.0.0/8"}))
    );
    assert!(
        !env.iter().any(|e| e["name"] == "HTTP_PROXY"),
        "unset values add nothing"
    );
    // A Secret instead, with another key, beside extra volumes.
    let secret = render(&json!({
        "caBundle": {"secret": "portal-ca", "key": "bundle.pem"},
        "extraVolumes": [{"name": "x", "emptyDir": {}}],
    }));
    let volumes = &pod_spec(&secret)["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "portal-ca");
    assert_eq!(volumes[0]["secret"]["items"][0]["key"], "bundle.pem");
    assert_eq!(volumes[1]["name"], "x");
    // Both at once is refused.
    let error = refused(&json!({"caBundle": {"configMap": "a", "secret": "b"}}));
    assert!(error.contains("/caBundle"), "{error}");
    let error = refused(&json!({"proxy": {"https": "proxy.internal:3128"}}));
    assert!(error.contains("/proxy/https"), "{error}");

    let installed = Installed::new("chart-ca-proxy", &values).await;
    let live = installed.get("deployment", &installed.fullname);
    let live_pod = &live["spec"]["template"]["spec"];
    assert_eq!(live_pod["volumes"][0]["configMap"]["name"], "portal-ca");
    let live_env = live_pod["containers"][0]["env"].as_array().unwrap().clone();
    assert!(
        live_env.contains(&json!({"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_spread_constraints_default_their_selector_to_the_releases_pods() {
    let _plane = PLANE.read().await;
    let values = json!({
        "replicaCount": 2,
        "leaderElection": {"enabled": true},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway"},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"team": "telephony"}}},
        ],
    });
    let objs = render(&values);
    let deployment = the(&objs, "Deployment");
    let constraints = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(
        constraints[0]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
        "a constraint without a selector counts this release's pods"
    );
    assert_eq!(constraints[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        constraints[1]["labelSelector"],
        json!({"matchLabels": {"team": "telephony"}})
    );
    assert!(
        pod_spec(&render(&json!({})))
            .get("topologySpreadConstraints")
            .is_none()
    );

    let installed = Installed::new("chart-topology", &values).await;
    let live = installed.get("deployment", &installed.fullname);
    let live_constraints = &live["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(live_constraints.as_array().unwrap().len(), 2);
    assert_eq!(
        live_constraints[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        installed.release
    );
}

// ---------------------------------------------------------------------------------------------
// podDisruptionBudget

#[tokio::test(flavor = "multi_thread")]
async fn pod_disruption_budget_lets_one_of_two_replicas_go_at_a_time() {
    let _plane = PLANE.read().await;
    // On by default, with the two replicas of the default; off on request.
    assert_eq!(
        the(&render(&json!({})), "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    assert!(
        of_kind(
            &render(&json!({"podDisruptionBudget": {"enabled": false}})),
            "PodDisruptionBudget"
        )
        .is_empty()
    );
    let two = json!({"replicaCount": 2, "leaderElection": {"enabled": true}});
    let values = json!({
        "replicaCount": 2,
        "leaderElection": {"enabled": true},
        "podDisruptionBudget": {"enabled": true},
    });
    let objs = render(&values);
    let pdb = the(&objs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none(), "{pdb}");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        the(&objs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    // minAvailable, when set, replaces maxUnavailable; a percentage stays a string.
    for (min, expected) in [(json!(1), json!(1)), (json!("50%"), json!("50%"))] {
        let mut v = two.clone();
        v["podDisruptionBudget"] = json!({"enabled": true, "minAvailable": min});
        let objs = render(&v);
        let spec = &the(&objs, "PodDisruptionBudget")["spec"];
        assert_eq!(spec["minAvailable"], expected);
        assert!(spec.get("maxUnavailable").is_none(), "{spec}");
    }
    // A budget no eviction can meet would block every node drain: refused.
    for (replicas, budget) in [
        (1, json!({"enabled": true, "minAvailable": 1})),
        (2, json!({"enabled": true, "minAvailable": 2})),
        (2, json!({"enabled": true, "minAvailable": "51%"})), // rounds up to 2
        (1, json!({"enabled": true, "minAvailable": "100%"})),
        (2, json!({"enabled": true, "maxUnavailable": 0})),
    ] {
        let stderr = refused(&json!({
            "replicaCount": replicas,
            "leaderElection": {"enabled": true},
            "podDisruptionBudget": budget,
        }));
        assert!(
            stderr.contains("would block every node drain"),
            "{budget}: {stderr}"
        );
    }
    let stderr = refused(
        &json!({"podDisruptionBudget": {"enabled": true, "minAvailable": "", "maxUnavailable": ""}}),
    );
    assert!(
        stderr.contains("set minAvailable or maxUnavailable"),
        "{stderr}"
    );
    // One replica with the default maxUnavailable: 1 is allowed (a drain may evict it).
    let objs = render(&json!({"podDisruptionBudget": {"enabled": true}}));
    assert_eq!(
        the(&objs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );

    let installed = Installed::new("chart-pdb", &values).await;
    let live = installed.get("poddisruptionbudget", &installed.fullname);
    assert_eq!(live["spec"]["maxUnavailable"], 1);
    assert_eq!(
        live["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        installed.release
    );
}

// ---------------------------------------------------------------------------------------------
// networkPolicy

/// The egress rules of a NetworkPolicy as (ports, peers) pairs, in order.
fn egress_rules(policy: &Value) -> Vec<(Value, Value)> {
    policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            (
                rule["ports"].clone(),
                rule.get("to").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn tcp(ports: &[u16]) -> Value {
    ports
        .iter()
        .map(|p| json!({"protocol": "TCP", "port": p}))
        .collect()
}

fn kube_dns() -> Value {
    json!([{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }])
}

fn dns_ports() -> Value {
    json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
}

#[tokio::test(flavor = "multi_thread")]
async fn network_policy_allows_the_api_server_netsapiens_dns_and_metrics_scrapes_only() {
    let _plane = PLANE.read().await;
    assert!(of_kind(&render(&json!({})), "NetworkPolicy").is_empty());

    // Enabled with the defaults: the ports to any address, DNS to kube-dns, no ingress.
    let objs = render(&json!({"networkPolicy": {"enabled": true}}));
    let policy = the(&objs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        the(&objs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["spec"]["ingress"], json!([]));
    assert_eq!(
        egress_rules(policy),
        [
            (tcp(&[443, 6443]), Value::Null),
            (tcp(&[443]), Value::Null),
            (dns_ports(), kube_dns()),
        ]
    );

    // A cluster whose API server is 10.0.0.1:6443, two NetSapiens networks, Prometheus.
    let prometheus = json!([
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        {"ipBlock": {"cidr": "192.0.2.0/24"}},
    ]);
    let values = json!({"networkPolicy": {
        "enabled": true,
        "apiServerCIDRs": ["10.0.0.1/32"],
        "apiServerPorts": [6443],
        "nsapiCIDRs": ["203.0.113.10/32", "2001:db8::/64"],
        "metricsFrom": prometheus,
    }, "httpPort": 9090});
    let objs = render(&values);
    let policy = the(&objs, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"from": prometheus, "ports": tcp(&[9090])}])
    );
    let block = |cidr: &str| json!({"ipBlock": {"cidr": cidr}});
    assert_eq!(
        egress_rules(policy),
        [
            (tcp(&[6443]), json!([block("10.0.0.1/32")])),
            (
                tcp(&[443]),
                json!([block("203.0.113.10/32"), block("2001:db8::/64")])
            ),
            (dns_ports(), kube_dns()),
        ]
    );
    // Other DNS peers, e.g. NodeLocal DNSCache.
    let objs = render(&json!({"networkPolicy": {
        "enabled": true, "dnsPeers": [{"ipBlock": {"cidr": "169.254.20.10/32"}}],
    }}));
    assert_eq!(
        egress_rules(the(&objs, "NetworkPolicy"))[2].1,
        json!([block("169.254.20.10/32")])
    );

    // The API server stores it as rendered (nothing dropped, nothing defaulted differently).
    let installed = Installed::new("chart-netpol", &values).await;
    let live = installed.get("networkpolicy", &installed.fullname);
    let mut expected = policy["spec"].clone();
    expected["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] = json!(installed.release);
    assert_eq!(live["spec"], expected);
    assert!(
        !installed.notes.contains("WARNING: networkPolicy"),
        "{}",
        installed.notes
    );

    // On the host network a NetworkPolicy does nothing: NOTES say so.
    let file = ValuesFile::new(&json!({"networkPolicy": {"enabled": true}, "hostNetwork": true}));
    let (path, kubeconfig) = (
        file.path(),
        control_plane::admin_kubeconfig().display().to_string(),
    );
    let chart = chart();
    let args = [
        "install",
        "x",
        &chart,
        "--dry-run=client",
        "--kubeconfig",
        &kubeconfig,
        "-f",
        &path,
        "--set",
        "crds.enabled=false",
    ];
    let notes = stdout_of("helm", &args, helm(&args));
    assert!(
        notes.contains("WARNING: networkPolicy.enabled has no effect on a pod on the host network"),
        "{notes}"
    );
}

// ---------------------------------------------------------------------------------------------
// aggregateClusterRoles

/// Whether the API server lets `user` `verb` NsApiCredentials in `namespace`
/// (a SubjectAccessReview, as `kubectl auth can-i` makes).
fn can(user: &str, verb: &str, namespace: &str) -> bool {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": {
            "namespace": namespace, "verb": verb, "group": "nsapi.io", "resource": "nsapicredentials",
        }},
    });
    let args = ["create", "-f", "-", "-o", "json"];
    let out = control_plane::kubectl_stdin(&args, &review.to_string());
    let answer: Value = serde_json::from_str(&stdout_of("kubectl", &args, out)).unwrap();
    answer["status"]["allowed"] == true
}

/// ClusterRoles other than `ours` that aggregate rules on NsApiCredentials into view or edit
/// (say, left behind by a killed run).
fn other_aggregated_credential_roles(ours: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for label in ["aggregate-to-view", "aggregate-to-edit"] {
        let selector = format!("rbac.authorization.k8s.io/{label}=true");
        let roles = kubectl_json(&["get", "clusterroles", "-l", &selector]);
        for role in roles["items"].as_array().unwrap() {
            let name = role["metadata"]["name"].as_str().unwrap().to_owned();
            if role["rules"].to_string().contains("nsapicredentials") && !ours.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregate_cluster_roles_let_namespace_viewers_read_and_editors_manage_credentials() {
    // On a private control plane: it always runs the ClusterRole aggregation controller (a
    // shared one started before scripts/control-plane did may not), and the built-in roles of
    // the shared one stay as they are.
    let _plane = PLANE.write().await;
    let names = |objs: &[Value]| -> Vec<String> {
        of_kind(objs, "ClusterRole")
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&render(&json!({}))),
        [
            "x-nsapi-token-operator",
            "x-nsapi-token-operator-namespaces"
        ],
        "none by default"
    );
    let values = json!({"aggregateClusterRoles": true});
    let objs = render(&values);
    let role = |name: &str| {
        *of_kind(&objs, "ClusterRole")
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
    };
    let view = role("x-nsapi-token-operator-view");
    let edit = role("x-nsapi-token-operator-edit");
    let aggregation = |role: &Value| -> Vec<String> {
        let labels = role["metadata"]["labels"].as_object().unwrap();
        labels
            .iter()
            .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            .map(|(k, v)| {
                assert_eq!(v, "true", "{k}");
                k.rsplit('-').next().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(aggregation(view), ["view"]);
    assert_eq!(aggregation(edit), ["admin", "edit"]);
    assert_eq!(
        view["rules"],
        json!([{"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials"],
                "verbs": ["get", "list", "watch"]}])
    );
    assert_eq!(
        edit["rules"],
        json!([{"apiGroups": ["nsapi.io"], "resources": ["nsapicredentials"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]}])
    );

    // People holding the built-in roles in a namespace (bound before the install).
    let _private = PrivatePlane::start().await;
    let client = control_plane::admin_client().await;
    let team = TestNamespace::create(&client, "chart-aggregate-team").await;
    let user = |role: &str| format!("{role}-{}", team.name);
    for role in ["view", "edit", "admin"] {
        kubectl_ok(&[
            "create",
            "rolebinding",
            role,
            "-n",
            &team.name,
            "--clusterrole",
            role,
            "--user",
            &user(role),
        ]);
    }
    let installed = Installed::new("chart-aggregate", &values).await;
    let ours = [
        format!("{}-view", installed.fullname),
        format!("{}-edit", installed.fullname),
    ];
    for name in &ours {
        kubectl_ok(&["get", "clusterrole", name]);
    }
    // The aggregation controller (kube-controller-manager) copies the rules into the roles.
    let ns = team.name.clone();
    control_plane::eventually(
        "view, edit and admin to grant NsApiCredentials",
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            let user = &user;
            async move {
                (can(&user("view"), "list", &ns)
                    && can(&user("edit"), "create", &ns)
                    && can(&user("admin"), "delete", &ns))
                .then_some(())
            }
        },
    )
    .await;
    assert!(!can(&user("view"), "create", &team.name), "view may create");
    assert!(!can(&user("view"), "list", "default"), "beyond the binding");
    let built_in_edit = kubectl_json(&["get", "clusterrole", "edit"]);
    assert!(
        built_in_edit["rules"]
            .to_string()
            .contains("nsapicredentials"),
        "{built_in_edit}"
    );

    // Uninstalled, the roles go, and with them the grants (unless another role gives them).
    drop(installed);
    for name in &ours {
        assert!(
            !control_plane::kubectl(&["get", "clusterrole", name])
                .status
                .success()
        );
    }
    let others = other_aggregated_credential_roles(&ours);
    if others.is_empty() {
        control_plane::eventually(
            "edit to lose NsApiCredentials",
            Duration::from_secs(30),
            || {
                let ns = ns.clone();
                let user = &user;
                async move { (!can(&user("edit"), "create", &ns)).then_some(()) }
            },
        )
        .await;
    } else {
        eprintln!("not checking the grants' removal: other roles aggregate them: {others:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// extraObjects

#[tokio::test(flavor = "multi_thread")]
async fn extra_objects_are_rendered_with_tpl_and_installed_with_the_release() {
    let _plane = PLANE.read().await;
    assert!(of_kind(&render(&json!({})), "ConfigMap").is_empty());
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let values = json!({"extraObjects": [
        // A map: every string in it goes through tpl.
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "{{ include \"nsapi-token-operator.fullname\" . }}-ca",
                      "labels": {"release": "{{ .Release.Name }}"}},
         "data": {"ca.crt": pem, "port": "{{ .Values.httpPort }}"}},
        // A string: a YAML document, tpl first.
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-plain\n  namespace: {{ .Release.Namespace }}\ndata:\n  scope: {{ .Values.scope | quote }}\n",
    ]});
    let objs = render(&values);
    let maps = of_kind(&objs, "ConfigMap");
    assert_eq!(maps.len(), 2, "{:?}", kinds(&objs));
    assert_eq!(maps[0]["metadata"]["name"], "x-nsapi-token-operator-ca");
    assert_eq!(maps[0]["metadata"]["labels"]["release"], "x");
    assert_eq!(maps[0]["data"], json!({"ca.crt": pem, "port": "8080"}));
    assert_eq!(maps[1]["metadata"]["name"], "x-plain");
    assert_eq!(maps[1]["metadata"]["namespace"], "nsapi-system");
    assert_eq!(maps[1]["data"], json!({"scope": "cluster"}));

    let installed = Installed::new("chart-extra-objects", &values).await;
    let ca = installed.get("configmap", &format!("{}-ca", installed.fullname));
    assert_eq!(ca["data"]["ca.crt"], pem);
    assert_eq!(
        ca["metadata"]["labels"]["release"],
        json!(installed.release)
    );
    assert_eq!(
        ca["metadata"]["annotations"]["meta.helm.sh/release-name"],
        json!(installed.release),
        "part of the release"
    );
    let plain = installed.get("configmap", &format!("{}-plain", installed.release));
    assert_eq!(plain["data"]["scope"], "cluster");
}

// ---------------------------------------------------------------------------------------------
// metrics.secure: /metrics over HTTPS with TokenReview and SubjectAccessReview (issue 17, 10).

/// A SubjectAccessReview as `kubectl auth can-i` makes it: may `user` (in `groups`) do `verb` on
/// `attributes` (resourceAttributes or nonResourceAttributes)?
fn may(user: &str, groups: &[&str], attributes: Value) -> bool {
    let mut spec = json!({"user": user, "groups": groups});
    let key = if attributes.get("path").is_some() {
        "nonResourceAttributes"
    } else {
        "resourceAttributes"
    };
    spec[key] = attributes;
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    });
    let args = ["create", "-f", "-", "-o", "json"];
    let out = control_plane::kubectl_stdin(&args, &review.to_string());
    let answer: Value = serde_json::from_str(&stdout_of("kubectl", &args, out)).unwrap();
    answer["status"]["allowed"] == true
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[test]
fn secure_metrics_render_an_https_port_its_certificate_rbac_and_an_https_service_monitor() {
    let prometheus =
        json!({"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"});
    let values = json!({
        "metrics": {"secure": {"enabled": true, "certSecret": "operator-metrics-tls", "readers": [prometheus]}},
        "serviceMonitor": {"enabled": true},
    });
    let objs = render(&values);
    let deployment = the(&objs, "Deployment");
    let args = args_of(deployment);
    for arg in [
        "--http-addr=0.0.0.0:8080",
        "--metrics-addr=0.0.0.0:8443",
        "--metrics-tls-cert-file=/etc/nsapi-token-operator/metrics-tls/tls.crt",
        "--metrics-tls-key-file=/etc/nsapi-token-operator/metrics-tls/tls.key",
        "--metrics-auth=kubernetes",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} missing: {args:?}");
    }
    let pod = pod_spec(&objs);
    let container = &pod["containers"][0];
    assert_eq!(
        container["ports"],
        json!([
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "https-metrics", "containerPort": 8443, "protocol": "TCP"},
        ])
    );
    // The probes stay on the plain port.
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 8080);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 8080);
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "metrics-tls", "mountPath": "/etc/nsapi-token-operator/metrics-tls", "readOnly": true}])
    );
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        "operator-metrics-tls"
    );

    let service = the(&objs, "Service");
    assert_eq!(
        service["spec"]["ports"][1],
        json!({"name": "https-metrics", "port": 8443, "targetPort": 8443, "protocol": "TCP"})
    );

    let endpoint = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "https-metrics");
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"],
        json!({
            "serverName": "x-nsapi-token-operator.nsapi-system.svc",
            "ca": {"secret": {"name": "operator-metrics-tls", "key": "ca.crt"}},
        })
    );
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(endpoint["honorLabels"], true);

    let auth = named(&objs, "ClusterRole", "x-nsapi-token-operator-metrics-auth")
        .expect("the operator's review ClusterRole");
    assert_eq!(
        auth["rules"],
        json!([
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ])
    );
    let auth_binding = named(
        &objs,
        "ClusterRoleBinding",
        "x-nsapi-token-operator-metrics-auth",
    )
    .expect("its binding");
    assert_eq!(
        auth_binding["subjects"][0]["name"],
        "x-nsapi-token-operator"
    );
    let reader = named(
        &objs,
        "ClusterRole",
        "x-nsapi-token-operator-metrics-reader",
    )
    .expect("the metrics-reader ClusterRole");
    assert_eq!(
        reader["rules"],
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let reader_binding = named(
        &objs,
        "ClusterRoleBinding",
        "x-nsapi-token-operator-metrics-reader",
    )
    .expect("the readers' binding");
    assert_eq!(reader_binding["subjects"], json!([prometheus]));
    // The operator's namespaced rules did not grow: the reviews are in their own ClusterRole.
    let operator_role = named(&objs, "ClusterRole", "x-nsapi-token-operator").unwrap();
    assert!(!operator_role["rules"].to_string().contains("tokenreviews"));

    // A token from a Secret instead of Prometheus' own, and a tlsConfig of one's own.
    let objs = render(&json!({
        "metrics": {"secure": {"enabled": true, "certSecret": "tls"}},
        "serviceMonitor": {
            "enabled": true,
            "tlsConfig": {"insecureSkipVerify": true},
            "bearerTokenSecret": {"name": "scraper-token", "key": "token"},
        },
    }));
    let endpoint = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["tlsConfig"], json!({"insecureSkipVerify": true}));
    assert_eq!(
        endpoint["authorization"],
        json!({"type": "Bearer", "credentials": {"name": "scraper-token", "key": "token"}})
    );
    assert!(endpoint.get("bearerTokenFile").is_none());
    assert!(
        named(
            &objs,
            "ClusterRoleBinding",
            "x-nsapi-token-operator-metrics-reader"
        )
        .is_none()
    );

    // auth: none: TLS only, no review RBAC, no token sent.
    let objs = render(&json!({
        "metrics": {"secure": {"enabled": true, "certSecret": "tls", "auth": "none"}},
        "serviceMonitor": {"enabled": true},
    }));
    assert!(args_of(the(&objs, "Deployment")).contains(&"--metrics-auth=none".to_owned()));
    assert!(named(&objs, "ClusterRole", "x-nsapi-token-operator-metrics-auth").is_none());
    assert!(
        named(
            &objs,
            "ClusterRole",
            "x-nsapi-token-operator-metrics-reader"
        )
        .is_none()
    );
    let endpoint = &the(&objs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert!(endpoint.get("bearerTokenFile").is_none() && endpoint.get("authorization").is_none());

    // Off by default: plain /metrics on the http port, no HTTPS port, no review RBAC.
    let objs = render(&json!({"serviceMonitor": {"enabled": true}}));
    assert_eq!(
        the(&objs, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "http"
    );
    assert_eq!(
        the(&objs, "Service")["spec"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(!objs.iter().any(|o| o.to_string().contains("tokenreviews")));
    assert!(
        !objs
            .iter()
            .any(|o| o.to_string().contains("nonResourceURLs"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_metrics_rbac_lets_the_operator_review_tokens_and_only_readers_get_metrics() {
    let _plane = PLANE.read().await;
    let values = json!({
        "scope": "namespace",
        "metrics": {"secure": {"enabled": true, "certSecret": "operator-metrics-tls"}},
    });
    // The readers are in the release namespace, which the release itself creates.
    let (installed, verdict) = Installed::attempt("chart-secure-metrics", &values).await;
    verdict.unwrap_or_else(|e| panic!("helm install failed: {e}"));
    let ns = installed.release.clone();
    let operator = format!("system:serviceaccount:{ns}:{}", installed.fullname);
    let sa_groups = ["system:serviceaccounts", "system:authenticated"];
    let review = |resource: &str, group: &str| json!({"verb": "create", "group": group, "resource": resource});
    assert!(may(
        &operator,
        &sa_groups,
        review("tokenreviews", "authentication.k8s.io")
    ));
    assert!(may(
        &operator,
        &sa_groups,
        review("subjectaccessreviews", "authorization.k8s.io")
    ));
    // The operator itself may not read /metrics, and nobody may until bound.
    let metrics = json!({"verb": "get", "path": "/metrics"});
    let scraper = format!("system:serviceaccount:{ns}:prometheus");
    assert!(!may(&scraper, &sa_groups, metrics.clone()));

    // helm upgrade with a reader: the binding lets exactly that ServiceAccount in.
    let file = ValuesFile::new(&json!({
        "scope": "namespace",
        "crds": {"enabled": false},
        "metrics": {"secure": {
            "enabled": true,
            "certSecret": "operator-metrics-tls",
            "readers": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": ns}],
        }},
    }));
    let kubeconfig = control_plane::admin_kubeconfig().display().to_string();
    let (chart, path) = (chart(), file.path());
    let args = [
        "upgrade",
        &ns,
        &chart,
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "-f",
        &path,
    ];
    stdout_of("helm", &args, helm(&args));
    assert!(may(&scraper, &sa_groups, metrics.clone()));
    let other = format!("system:serviceaccount:{ns}:someone-else");
    assert!(!may(&other, &sa_groups, metrics.clone()));
    assert!(!may(
        &scraper,
        &sa_groups,
        json!({"verb": "get", "path": "/healthz/x"})
    ));
    let deployment = installed.get("deployment", &installed.fullname);
    assert!(args_of(&deployment).contains(&"--metrics-auth=kubernetes".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// The schema: a bad value of each new key fails `helm template` (and so install and upgrade).

#[test]
fn schema_refuses_bad_values_of_every_new_key() {
    let cases = [
        (json!({"extraArgs": "--ca-file=/x"}), "/extraArgs"),
        (json!({"extraArgs": [""]}), "/extraArgs/0"),
        (json!({"extraArgs": [7]}), "/extraArgs/0"),
        (
            json!({"extraVolumes": [{"configMap": {"name": "ca"}}]}),
            "/extraVolumes/0",
        ),
        (json!({"extraVolumes": [{"name": "ca"}]}), "/extraVolumes/0"), // no source
        (
            json!({"extraVolumes": [{"name": "Private_CA", "emptyDir": {}}]}),
            "/extraVolumes/0/name",
        ),
        (
            json!({"extraVolumeMounts": [{"name": "ca"}]}),
            "/extraVolumeMounts/0",
        ),
        (
            json!({"extraVolumeMounts": [{"name": "ca", "mountPath": "etc/ca"}]}),
            "/extraVolumeMounts/0/mountPath",
        ),
        (
            json!({"extraVolumeMounts": [{"name": "ca", "mountPath": "/ca", "readonly": true}]}),
            "/extraVolumeMounts/0",
        ),
        (
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]}),
            "/topologySpreadConstraints/0",
        ),
        (
            json!({"topologySpreadConstraints": [{"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}),
            "/topologySpreadConstraints/0/maxSkew",
        ),
        (
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Never"}]}),
            "/topologySpreadConstraints/0/whenUnsatisfiable",
        ),
        (
            json!({"podDisruptionBudget": {"enabled": "true"}}),
            "/podDisruptionBudget/enabled",
        ),
        (
            json!({"podDisruptionBudget": {"enabled": true, "maxUnavailable": "150%"}}),
            "/podDisruptionBudget/maxUnavailable",
        ),
        (
            json!({"podDisruptionBudget": {"enabled": true, "minAvailable": -1}}),
            "/podDisruptionBudget/minAvailable",
        ),
        (
            json!({"podDisruptionBudget": {"enabled": true, "minAvailable": "one"}}),
            "/podDisruptionBudget/minAvailable",
        ),
        (
            json!({"podDisruptionBudget": {"minReplicas": 1}}),
            "/podDisruptionBudget",
        ),
        (
            json!({"networkPolicy": {"enabled": 1}}),
            "/networkPolicy/enabled",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "apiServerCIDRs": ["10.0.0.1"]}}),
            "/networkPolicy/apiServerCIDRs/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "apiServerCIDRs": ["10.0.0.0/33"]}}),
            "/networkPolicy/apiServerCIDRs/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "nsapiCIDRs": ["portal.example.com/32"]}}),
            "/networkPolicy/nsapiCIDRs/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "apiServerPorts": [0]}}),
            "/networkPolicy/apiServerPorts/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "nsapiPorts": []}}),
            "/networkPolicy/nsapiPorts",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "nsapiPorts": ["https"]}}),
            "/networkPolicy/nsapiPorts/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "metricsFrom": [{}]}}),
            "/networkPolicy/metricsFrom/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "metricsFrom": [{"namespace": "monitoring"}]}}),
            "/networkPolicy/metricsFrom/0",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "metricsFrom": [{"podSelector": {"app": "prometheus"}}]}}),
            "/networkPolicy/metricsFrom/0/podSelector",
        ),
        (
            json!({"networkPolicy": {"enabled": true, "dnsPeers": [{"ipBlock": {"cidr": "169.254.20.10/32"}, "podSelector": {}}]}}),
            "/networkPolicy/dnsPeers/0",
        ),
        (json!({"networkPolicy": {"egress": []}}), "/networkPolicy"),
        (
            json!({"aggregateClusterRoles": "true"}),
            "/aggregateClusterRoles",
        ),
        (
            json!({"aggregateClusterRoles": {"enabled": true}}),
            "/aggregateClusterRoles",
        ),
        (
            json!({"extraObjects": {"kind": "ConfigMap"}}),
            "/extraObjects",
        ),
        (json!({"extraObjects": [""]}), "/extraObjects/0"),
        (
            json!({"extraObjects": [{"kind": "ConfigMap", "metadata": {"name": "a"}}]}),
            "/extraObjects/0",
        ),
        (
            json!({"extraObjects": [["apiVersion: v1"]]}),
            "/extraObjects/0",
        ),
        (json!({"crds": {"enabled": "yes"}}), "/crds/enabled"),
        (json!({"crds": {"keep": null}}), "/crds"),
        (json!({"crds": {"upgrade": true}}), "/crds"),
        // certSecret defaults to "": enabled without one is refused there.
        (
            json!({"metrics": {"secure": {"enabled": true}}}),
            "/metrics/secure/certSecret",
        ),
        (
            json!({"metrics": {"secure": {"certSecret": "Bad_Name"}}}),
            "/metrics/secure/certSecret",
        ),
        (
            json!({"metrics": {"secure": {"auth": "tokenreview"}}}),
            "/metrics/secure/auth",
        ),
        (
            json!({"metrics": {"secure": {"port": 0}}}),
            "/metrics/secure/port",
        ),
        (
            json!({"metrics": {"secure": {"tls": true}}}),
            "/metrics/secure",
        ),
        (json!({"metrics": {"insecure": {}}}), "/metrics"),
        (
            json!({"metrics": {"secure": {"readers": [{"kind": "ServiceAccount", "name": "prometheus"}]}}}),
            "/metrics/secure/readers/0",
        ),
        (
            json!({"metrics": {"secure": {"readers": [{"kind": "Robot", "name": "r"}]}}}),
            "/metrics/secure/readers/0/kind",
        ),
        (
            json!({"serviceMonitor": {"bearerTokenSecret": {"name": "s", "key": ""}}}),
            "/serviceMonitor/bearerTokenSecret/key",
        ),
        (
            json!({"serviceMonitor": {"tlsConfig": "insecure"}}),
            "/serviceMonitor/tlsConfig",
        ),
    ];
    for (values, at) in cases {
        let stderr = refused(&values);
        assert!(
            stderr.contains("don't meet the specifications of the schema")
                && stderr.contains(&format!("at '{at}'")),
            "{values}: expected a schema error at {at}, got: {stderr}"
        );
    }
}

/// Serves prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs on the
/// shared control plane (idempotent; nothing else there uses them).
fn serve_monitoring_crds() {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/monitoring-crds"))
        .arg("--path")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let applied = control_plane::kubectl(&["apply", "--server-side", "-f", dir.trim()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let established = control_plane::kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ]);
    assert!(established.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_conventions_render_and_install() {
    let _plane = PLANE.read().await;
    // The defaults: two replicas electing a leader, rolled one at a time with a ready replica
    // throughout, on different nodes where there are several, under a disruption budget.
    let objs = render(&json!({}));
    let deployment = the(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let args = args_of(deployment);
    for arg in [
        "--leader-election",
        "--leader-election-lease-duration=15s",
        "--leader-election-renew-deadline=10s",
        "--leader-election-retry-period=2s",
    ] {
        assert!(args.contains(&arg.to_owned()), "{args:?}");
    }
    let affinity = &pod_spec(&objs)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(affinity["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        the(&objs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let container = &pod_spec(&objs)["containers"][0];
    assert_eq!(container["livenessProbe"]["periodSeconds"], 10);
    assert_eq!(container["readinessProbe"]["periodSeconds"], 5);
    // One replica without leader election: Recreate, never two operators at once.
    let single = render(&json!({"leaderElection": {"enabled": false}, "replicaCount": 1}));
    let deployment = the(&single, "Deployment");
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(!args_of(deployment).contains(&"--leader-election".to_owned()));
    assert!(pod_spec(&single).get("affinity").is_none());

    let values = json!({
        "commonLabels": {"team": "voice", "cost-center": "c42"},
        "deploymentAnnotations": {"example.com/owner": "voice-platform"},
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        "livenessProbe": {"initialDelaySeconds": 1, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6},
        "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 2},
        "runtimeClassName": "gvisor",
        "hostAliases": [{"ip": "192.0.2.10", "hostnames": ["api.portal.example"]}],
        "leaderElection": {"enabled": true, "leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "4s"},
        "replicaCount": 2,
        "serviceMonitor": {"enabled": true, "namespace": "monitoring", "honorLabels": false,
                           "relabelings": [{"targetLabel": "cluster", "replacement": "eu-1"}],
                           "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]},
    });
    let objs = render(&values);
    for object in &objs {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["team"], "voice", "{}", object["kind"]);
        assert_eq!(labels["cost-center"], "c42", "{}", object["kind"]);
    }
    let monitor = the(&objs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["honorLabels"], false);
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    let args = args_of(the(&objs, "Deployment"));
    for arg in [
        "--leader-election-lease-duration=30s",
        "--leader-election-renew-deadline=20s",
        "--leader-election-retry-period=4s",
    ] {
        assert!(args.contains(&arg.to_owned()), "{args:?}");
    }

    // Installed, with prometheus-operator's own CRDs served (scripts/monitoring-crds), so the
    // API server checks the ServiceMonitor, the PodMonitor and the PrometheusRule with their
    // schemas: the API server keeps every setting.
    serve_monitoring_crds();
    let mut install = values.clone();
    install["serviceMonitor"]["namespace"] = json!("");
    install["prometheusRule"] = json!({
        "enabled": true,
        "alerts": {"NsApiCredentialNotReady": {"enabled": false},
                   "NsApiTokenRefreshFailing": {"for": "5m", "failures": 10, "labels": {"team": "oncall"}}},
        "additionalRules": [{"record": "nsapi:not_ready:count", "expr": "count(nsapi_token_operator_credential_ready == 0)"}],
    });
    let installed = Installed::new("chart-conventions", &install).await;
    let monitor = installed.get("servicemonitor", &installed.fullname);
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], false);
    assert_eq!(
        monitor["spec"]["endpoints"][0]["metricRelabelings"][0]["action"],
        "drop"
    );
    let rules = installed.get("prometheusrule", &installed.fullname);
    assert_eq!(
        rules["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        rules["spec"]["groups"][1]["rules"][0]["record"],
        "nsapi:not_ready:count"
    );
    // The PodMonitor alternative: every pod scraped, its job named as the Service's would be.
    let mut pod_monitor = values.clone();
    pod_monitor["serviceMonitor"] = json!({"enabled": false, "relabelings": [{"targetLabel": "cluster", "replacement": "eu-1"}]});
    pod_monitor["podMonitor"] = json!({"enabled": true, "labels": {"release": "prometheus"}});
    let with_pods = Installed::new("chart-podmonitor", &pod_monitor).await;
    let live = with_pods.get("podmonitor", &with_pods.fullname);
    assert_eq!(live["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &live["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(
        endpoint["relabelings"],
        json!([
            {"action": "replace", "targetLabel": "job", "replacement": with_pods.fullname},
            {"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"},
        ])
    );
    assert_eq!(
        live["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        with_pods.release.as_str()
    );
    drop(with_pods);
    let live = installed.get("deployment", &installed.fullname);
    assert_eq!(live["metadata"]["labels"]["team"], "voice");
    assert_eq!(
        live["metadata"]["annotations"]["example.com/owner"],
        "voice-platform"
    );
    assert_eq!(live["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(live["spec"]["strategy"], values["strategy"]);
    let pod = &live["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "gvisor");
    assert_eq!(pod["hostAliases"], values["hostAliases"]);
    let container = &pod["containers"][0];
    for (probe, want) in [
        ("livenessProbe", &values["livenessProbe"]),
        ("readinessProbe", &values["readinessProbe"]),
    ] {
        for (field, value) in want.as_object().unwrap() {
            // The API server leaves out a zero (the default).
            assert_eq!(
                container[probe][field].as_i64().unwrap_or(0),
                value.as_i64().unwrap(),
                "{probe}.{field}"
            );
        }
    }
    let account = installed.get("serviceaccount", &installed.fullname);
    assert_eq!(account["metadata"]["labels"]["team"], "voice");

    // The schema refuses what Kubernetes or the operator would.
    for (bad, why) in [
        (json!({"strategy": {"type": "Sometimes"}}), "strategy"),
        (
            json!({"livenessProbe": {"periodSeconds": 0}}),
            "periodSeconds",
        ),
        (json!({"revisionHistoryLimit": -1}), "revisionHistoryLimit"),
        (
            json!({"leaderElection": {"enabled": true, "leaseDuration": "soon"}}),
            "leaseDuration",
        ),
        (json!({"hostAliases": [{"ip": "192.0.2.1"}]}), "hostnames"),
    ] {
        let error = refused(&bad);
        assert!(error.contains(why), "{bad}: {error}");
    }
}
