//! The gateway's layers, checked from its sources: every `crate::` path in production code
//! (test modules excluded) is read, and
//! - a layer uses only the layers below it (the table in `src/lib.rs`), and nothing inside the
//!   crate goes through the crate root's re-exports (which would pass by this check);
//! - no module cycle exists between the modules (`edge::auth`, `app::notes`, `web::officer`,
//!   …) of the crate.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Each layer and the layers it may use, top to bottom.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "tools",
        &[
            "web", "runtime", "store", "client", "api", "edge", "app", "crypto", "base",
        ],
    ),
    (
        "web",
        &["runtime", "client", "edge", "app", "crypto", "base"],
    ),
    (
        "runtime",
        &["store", "api", "edge", "app", "crypto", "base"],
    ),
    ("store", &["api", "edge", "app", "crypto", "base"]),
    ("client", &["edge", "app", "crypto", "base"]),
    ("api", &["edge", "app", "crypto", "base"]),
    ("edge", &["app", "crypto", "base"]),
    ("app", &["crypto", "base"]),
    ("crypto", &["base"]),
    ("base", &[]),
];

/// The names `lib.rs` re-exports at the crate root, for users outside the crate; code inside
/// it uses the layer paths.
const REEXPORTS: &[&str] = &[
    "notes",
    "reconcile",
    "replay",
    "report",
    "metrics",
    "keyring",
    "pseudonym",
    "https",
    "tls",
    "config",
    "server",
    "shutdown",
    "cli",
    "dev",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file belongs to: its first two path components under `src/`
/// (`edge/auth/jwks.rs` → `edge::auth`, `edge/auth.rs` → `edge::auth`, `edge.rs` → `edge`).
fn module_of(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    parts.iter().take(2).cloned().collect::<Vec<_>>().join("::")
}

/// Production code only: line comments, and everything from a `#[cfg(test)]` module on
/// (test modules come last in a file), left out.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().contains("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The first two segments of every path a use tree starting at `text` (just after
/// `crate::`) names.
fn paths_in_tree(text: &str, prefix: &[String], out: &mut BTreeSet<String>) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut segments: Vec<String> = prefix.to_vec();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                i += paths_in_tree(&text[i..], &segments, out);
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        return i;
                    }
                    _ => return i,
                }
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'}') {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            segments.push(text[start..i].to_owned());
        }
        if text[i..].starts_with("::") {
            i += 2;
            continue;
        }
        let named: Vec<&String> = segments.iter().take(2).collect();
        if !named.is_empty() {
            out.insert(
                named
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("::"),
            );
        }
        return i;
    }
}

/// Modules (`layer::module`) each module uses.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        if ["lib.rs", "main.rs"].contains(&relative.to_string_lossy().as_ref())
            || file.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let from = module_of(relative);
        let code = production_code(&std::fs::read_to_string(&file).expect("read"));
        let mut used = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            paths_in_tree(&code[at + "crate::".len()..], &[], &mut used);
        }
        let uses = graph.entry(from.clone()).or_default();
        for to in used {
            let first = to.split("::").next().unwrap_or_default();
            if REEXPORTS.contains(&first) {
                // A path through the crate root's re-exports would pass by the layer check.
                uses.insert(format!("reexport::{to}"));
            } else if to != from && LAYERS.iter().any(|(l, _)| *l == first) {
                uses.insert(to);
            }
        }
    }
    graph
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each use of a layer above, or of a root re-export, as "`from` uses `to`".
fn violations(graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (from, uses) in graph {
        let allowed = LAYERS
            .iter()
            .find(|(l, _)| *l == layer(from))
            .map_or(&[][..], |(_, below)| *below);
        for to in uses {
            if layer(to) != layer(from) && !allowed.contains(&layer(to)) {
                found.push(format!("{from} uses {to}"));
            }
        }
    }
    found
}

/// The modules that use each other: Tarjan's strongly connected components of two or more.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        cycles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.cycles.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.cycles
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let graph = graph();
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(
        graph.len() > 40 && edges > 100,
        "the sources were read: {} modules, {edges} uses",
        graph.len()
    );
    let found = violations(&graph);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn no_module_cycle() {
    let found = cycles(&graph());
    assert!(found.is_empty(), "modules that use each other: {found:?}");
}

#[test]
fn the_checks_find_a_use_upwards_a_root_reexport_and_a_cycle() {
    let graph: Graph = [
        ("base::clock", vec!["app::audit"]),
        ("app::audit", vec!["base::clock", "reexport::tls::provider"]),
        ("edge::auth", vec!["app::audit"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        violations(&graph),
        [
            "app::audit uses reexport::tls::provider",
            "base::clock uses app::audit"
        ]
    );
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut cycle = found[0].clone();
    cycle.sort();
    assert_eq!(cycle, ["app::audit", "base::clock"]);
}

#[test]
fn the_checker_finds_paths_in_use_trees() {
    let mut found = BTreeSet::new();
    let code = "use crate::{\n    app::{audit::{self, X}, notes::Note},\n    base::clock,\n};";
    let at = code.find("crate::").expect("crate::") + "crate::".len();
    paths_in_tree(&code[at..], &[], &mut found);
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["app::audit", "app::notes", "base::clock"]);
    assert_eq!(module_of(Path::new("edge/auth/jwks.rs")), "edge::auth");
    assert_eq!(module_of(Path::new("edge.rs")), "edge");
}
