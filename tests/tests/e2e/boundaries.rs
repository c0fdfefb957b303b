//! The dependency boundaries of ARCHITECTURE.md: `casegate-consent` and `casegate-audit` are
//! plain synchronous libraries that know nothing of the wire, TLS, the async runtime, or each
//! other.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use toml::{Table, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn read_toml(path: &Path) -> Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names forbidden to `crate_name`, directly or through anything it pulls in.
fn forbidden(name: &str, crate_name: &str) -> bool {
    let other = if crate_name == "casegate-consent" {
        "casegate-audit"
    } else {
        "casegate-consent"
    };
    [
        "tonic", "prost", "rustls", "tokio", "hyper", "h2", "mio", "socket2",
    ]
    .iter()
    .any(|p| name == *p || name.starts_with(&format!("{p}-")))
        || name == other
        || name == "casegate-proto"
        || name == "casegate"
}

/// Every dependency table of a manifest: normal, dev, build, and per-target ones.
fn declared(manifest: &Table) -> Vec<String> {
    let mut names = Vec::new();
    let mut collect = |t: &Table| {
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(Value::Table(deps)) = t.get(section) {
                names.extend(deps.keys().cloned());
            }
        }
    };
    collect(manifest);
    if let Some(Value::Table(targets)) = manifest.get("target") {
        for target in targets.values() {
            if let Value::Table(t) = target {
                collect(t);
            }
        }
    }
    names
}

#[test]
fn domain_crates_declare_no_network_or_wire_dependencies() {
    for (folder, crate_name) in [("consent", "casegate-consent"), ("audit", "casegate-audit")] {
        let manifest = read_toml(&root().join(folder).join("Cargo.toml"));
        let bad: Vec<String> = declared(&manifest)
            .into_iter()
            .filter(|d| forbidden(d, crate_name))
            .collect();
        assert!(bad.is_empty(), "{crate_name} declares {bad:?}");
    }
}

#[test]
fn domain_crates_pull_in_no_network_or_wire_crates_transitively() {
    let lock = read_toml(&root().join("Cargo.lock"));
    let Some(Value::Array(packages)) = lock.get("package") else {
        panic!("Cargo.lock has no packages");
    };
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in packages {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps: Vec<String> = package
            .get("dependencies")
            .and_then(Value::as_array)
            .map(|ds| {
                ds.iter()
                    .filter_map(Value::as_str)
                    // "name version" when several versions are locked
                    .map(|d| d.split(' ').next().unwrap_or(d).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        graph.entry(name).or_default().extend(deps);
    }
    for crate_name in ["casegate-consent", "casegate-audit"] {
        assert!(
            graph.contains_key(crate_name),
            "{crate_name} is not in Cargo.lock"
        );
        let mut seen = BTreeSet::new();
        let mut stack = vec![crate_name.to_owned()];
        while let Some(next) = stack.pop() {
            for dep in graph.get(&next).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        let bad: Vec<&String> = seen.iter().filter(|d| forbidden(d, crate_name)).collect();
        assert!(bad.is_empty(), "{crate_name} pulls in {bad:?}");
    }
}
