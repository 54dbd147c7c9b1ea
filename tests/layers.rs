//! The source tree is the architecture (docs/development.md, "Where does my change go?"): each
//! folder of `src/` is a layer, and a layer uses only the layers below it. These tests read the
//! sources and fail on an arrow upwards, on an import circle between modules (in the operator
//! and in nsapi-sim), and on IO in the pure layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The operator's layers, lowest first.
const LAYERS: [&str; 5] = ["core", "telemetry", "nsapi", "cluster", "ops"];

/// What the pure layer must never name: the Kubernetes client (its types come from kube-core),
/// HTTP clients and servers, sockets, files and processes.
const NOT_PURE: [&str; 10] = [
    "kube::",
    "kube_runtime",
    "kube_client",
    "reqwest",
    "hyper",
    "axum",
    "tokio::net",
    "std::net",
    "std::fs",
    "std::process",
];

/// One Rust module: its path (`cluster::record`) and its source without its unit tests.
struct Module {
    path: String,
    file: PathBuf,
    code: String,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules of the crate rooted at `src` (the crate root itself is `""`).
fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = fs::read_to_string(&file).unwrap();
            // Unit tests may reach across (they build fixtures); the layers are about the code.
            let code = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            Module {
                path: parts.join("::"),
                file,
                code,
            }
        })
        .collect()
}

/// The paths a module's code names: `crate::a::b`, and `super::a` resolved against its parent.
fn referenced_paths(module: &Module) -> Vec<String> {
    let mut found = Vec::new();
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = module.path.split("::").filter(|s| !s.is_empty()).collect();
        p.pop();
        p
    };
    for line in module.code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                let after = &rest[at + prefix.len()..];
                rest = after;
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let names: Vec<&str> = after
                    .split("::")
                    .map(|seg| {
                        seg.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or("")
                    })
                    .take_while(|seg| !seg.is_empty())
                    .collect();
                // `use crate::{a, b}`: every name in the braces.
                let braced = after.strip_prefix('{').map(|inner| {
                    inner
                        .split(['}', ','])
                        .map(|s| s.trim().split("::").next().unwrap_or("").trim())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                });
                let heads: Vec<Vec<&str>> = match braced {
                    Some(items) => items.into_iter().map(|i| vec![i]).collect(),
                    None => vec![names],
                };
                for head in heads {
                    let mut full: Vec<&str> = base.clone();
                    full.extend(head);
                    found.push(full.join("::"));
                }
            }
        }
    }
    found
}

/// The module a path lands in: its longest prefix that is a module of the crate.
fn owning_module<'a>(path: &str, known: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| known.get(&parts[..n].join("::")))
}

/// Edges between distinct modules, an ancestor excluded (a module may use what its parent
/// folder's `mod.rs` declares for the whole folder, such as `cluster::Result`).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let known: BTreeSet<String> = modules.iter().map(|m| m.path.clone()).collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let edges: BTreeSet<String> = referenced_paths(module)
            .iter()
            .filter_map(|p| owning_module(p, &known))
            .filter(|target| {
                **target != module.path
                    && !target.is_empty()
                    && !module.path.starts_with(&format!("{target}::"))
            })
            .cloned()
            .collect();
        graph.insert(module.path.clone(), edges);
    }
    graph
}

/// Every import circle, each as the modules along it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_owned());
            found.push(circle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| *l == top)
}

#[test]
fn every_module_of_the_operator_is_in_a_layer() {
    let strays: Vec<String> = modules(&manifest_dir().join("src"))
        .into_iter()
        .filter(|m| !m.path.is_empty() && layer_of(&m.path).is_none() && m.path != "properties")
        .map(|m| m.path)
        .collect();
    assert!(
        strays.is_empty(),
        "modules outside the layer folders {LAYERS:?}: {strays:?}"
    );
}

#[test]
fn layers_use_only_the_layers_below_them() {
    let graph = module_graph(&manifest_dir().join("src"));
    let mut upwards = Vec::new();
    for (from, targets) in &graph {
        let Some(from_layer) = layer_of(from) else {
            continue; // the crate root and main.rs wire everything
        };
        for to in targets {
            match layer_of(to) {
                Some(to_layer) if to_layer <= from_layer => {}
                _ => upwards.push(format!("{from} -> {to}")),
            }
        }
    }
    assert!(
        upwards.is_empty(),
        "arrows that do not point down the layers {LAYERS:?} (move the shared item down): {upwards:#?}"
    );
}

#[test]
fn the_operator_has_no_import_circles() {
    let found = circles(&module_graph(&manifest_dir().join("src")));
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn the_simulator_has_no_import_circles() {
    let found = circles(&module_graph(&manifest_dir().join("nsapi-sim/src")));
    assert!(found.is_empty(), "import circles in nsapi-sim: {found:#?}");
}

#[test]
fn the_pure_layer_does_no_io_and_reads_no_clock() {
    let mut offences = Vec::new();
    for module in modules(&manifest_dir().join("src")) {
        if layer_of(&module.path) != Some(0) {
            continue;
        }
        for (n, line) in module.code.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in NOT_PURE {
                let hit = code.match_indices(banned).any(|(at, _)| {
                    // `kube_core::` and `kube_derive::` are the pure halves of kube.
                    !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if hit {
                    offences.push(format!("{}:{}: {banned}", module.file.display(), n + 1));
                }
            }
            // Time comes in as `now`; only the clock module's SystemClock reads it.
            if module.path != "core::clock"
                && (code.contains("Timestamp::now()") || code.contains("SystemTime::now()"))
            {
                offences.push(format!(
                    "{}:{}: reads the clock",
                    module.file.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(offences.is_empty(), "IO in the pure layer: {offences:#?}");
}

#[test]
fn the_checks_see_what_they_check() {
    // A check that finds nothing because it reads nothing proves nothing.
    let graph = module_graph(&manifest_dir().join("src"));
    assert!(graph.len() > 30, "only {} modules found", graph.len());
    let record = &graph["cluster::record"];
    assert!(record.contains("cluster::context"), "{record:?}");
    assert!(record.contains("core::status"), "{record:?}");
    let circle: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(circles(&circle).len(), 1);
}
