//! The chart's values for clusters with policies (issue 12, item 4), each proven twice: rendered
//! with `helm template` (what the chart writes) and installed into the local control plane (that
//! the API server accepts it), plus the values schema's rejections and its duration pattern
//! against what the operator binary accepts.
//!
//! Installs into the shared control plane go into a namespace of their own, as a release named
//! after it (so cluster-wide objects get names unique to the run), with `crds.enabled=false`: the
//! CRD there belongs to no release (tests apply it with kubectl). They are uninstalled when the
//! test ends, even on failure. The CRD's own life cycle (install, upgrade from the earlier layout
//! with the CRD in crds/, uninstall with and without `crds.keep`) runs on a private control plane,
//! since it changes and deletes a cluster-wide object that other tests use; while it runs, no
//! other test of this file talks to a control plane (`PLANE`).
//!
//! helm is the project's pinned one: `$NSAPI_HELM` (scripts/test exports it), else `scripts/helm`.

mod control_plane;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nsapi_token_operator::schedule::parse_duration;
use serde::Deserialize;
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> String {
    repo()
        .join("charts/nsapi-token-operator")
        .display()
        .to_string()
}

fn helm_command() -> Command {
    match std::env::var_os("NSAPI_HELM").filter(|v| !v.is_empty()) {
        Some(helm) => Command::new(helm),
        None => Command::new(repo().join("scripts/helm")),
    }
}

/// Runs helm; returns its output whatever the exit status.
fn helm(args: &[&str]) -> Output {
    helm_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"))
}

/// The stdout of a finished `program args...`; panics with its stderr if it failed.
fn stdout_of(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every object of a multi-document YAML stream.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
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
