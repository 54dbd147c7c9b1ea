//! The chart as tests use it: the project's pinned helm (`$NSAPI_HELM`, which scripts/test
//! exports, else `scripts/helm`), `helm template`, and the objects it renders.
#![allow(dead_code)] // each test file uses a different part of it

use std::path::Path;
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The chart's directory.
pub fn chart() -> String {
    repo()
        .join("charts/nsapi-token-operator")
        .display()
        .to_string()
}

pub fn helm_command() -> Command {
    match std::env::var_os("NSAPI_HELM").filter(|v| !v.is_empty()) {
        Some(helm) => Command::new(helm),
        None => Command::new(repo().join("scripts/helm")),
    }
}

/// Runs helm; returns its output whatever the exit status.
pub fn helm(args: &[&str]) -> Output {
    helm_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"))
}

/// The stdout of a finished `program args...`; panics with its stderr if it failed.
pub fn stdout_of(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs helm and returns its stdout; panics with its stderr if it fails.
pub fn helm_ok(args: &[&str]) -> String {
    stdout_of("helm", args, helm(args))
}

/// Every object of a multi-document YAML stream.
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// `helm template` of the chart as `release` in `namespace` with `--set` values.
pub fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    for s in set {
        args.extend(["--set", s]);
    }
    objects(&helm_ok(&args))
}
