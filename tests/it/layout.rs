//! The crate's layout as a rule: no import circle between its modules, nor between its
//! folders (the map at the top of `src/lib.rs`). A circle means two parts of the house can no
//! longer be read, tested or changed apart; this test names the edges that close it.
//!
//! The imports are read from the source: every `crate::a::b` and `super::b` path (groups
//! `crate::{a, b::c}` included) outside comments and outside the `#[cfg(test)] mod tests` block
//! at the end of a file (tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`store::state`) → the modules of this crate it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// `src/store/mod.rs` → `store`, `src/store/state.rs` → `store::state`, `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file that the product is built from: without its trailing unit tests and
/// without comments (a doc link is not an import).
fn product_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths named after each `prefix` (`crate::`, `super::`) in `code`, relative to it: a
/// group `prefix{a::b, c}` gives each of its members.
fn named_paths(code: &str, prefix: &str) -> Vec<String> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // `self::super::`, `foo_crate::`: not ours to resolve
        }
        let rest = &code[at + prefix.len()..];
        let head: String = rest.chars().take_while(|c| is_path(*c)).collect();
        let after = &rest[head.len()..];
        if !after.starts_with('{') {
            paths.push(head.trim_end_matches(':').to_string());
            continue;
        }
        // A group: its members at depth one (nested groups name their own heads).
        let mut depth = 0;
        let mut member = String::new();
        for c in after.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 || (depth == 1 && c == ',') {
                let name: String = member.trim().chars().take_while(|c| is_path(*c)).collect();
                if !name.is_empty() && name != "self" {
                    paths.push(format!("{head}{}", name.trim_end_matches(':')));
                }
                member.clear();
                if depth == 0 {
                    break;
                }
            } else if depth == 1 && c != '{' {
                member.push(c);
            } else if depth > 1 {
                // inside a nested group: the head before it is enough
            }
        }
    }
    paths
}

/// The module a file's `super::` names: `pki::validate` → `pki`, `pki` (mod.rs) → the root.
fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(p, _)| p)
}

/// The longest module of `modules` that `path` (`store::state::State`) starts with.
fn resolve<'a>(modules: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|candidate| modules.get(&candidate))
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = product_code(&std::fs::read_to_string(file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        let from_super = named_paths(&code, "super::")
            .into_iter()
            .map(|p| match parent(&module) {
                "" => p,
                base => format!("{base}::{p}"),
            });
        for path in named_paths(&code, "crate::").into_iter().chain(from_super) {
            if let Some(target) = resolve(&modules, &path) {
                // A module may name its own items, and its parent's (`mod.rs` re-exports).
                let own = module == *target || module.starts_with(&format!("{target}::"));
                if !own && !target.is_empty() {
                    edges.insert(target.clone());
                }
            }
        }
    }
    graph
}

/// The strongly connected components with more than one member (Tarjan's algorithm).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The edges inside each circle, for the message: what to cut.
fn describe(graph: &Graph, found: &[Vec<String>]) -> String {
    found
        .iter()
        .map(|members| {
            let edges: Vec<String> = members
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| members.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("circle {members:?}: {}", edges.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same graph with each module replaced by its top-level folder (`store::state` → `store`).
fn folders(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut folded = Graph::new();
    for (from, to) in graph {
        let edges = folded.entry(top(from)).or_default();
        edges.extend(to.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    folded
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    // The reader must see the modules, or an empty graph would pass.
    for known in [
        "store::state",
        "renew::hooks",
        "report::check",
        "pki::validate",
    ] {
        assert!(
            graph.contains_key(known),
            "{known} not found: {:?}",
            graph.keys()
        );
    }
    // A `crate::` path, a `super::` path between siblings, and a member of a group.
    for (from, to) in [
        ("report::check", "renew"),
        ("pki::validate", "pki::anchors"),
        ("metadata::client", "metadata::api"),
    ] {
        assert!(
            graph[from].contains(to),
            "{from}'s import of {to} not seen: {:?}",
            graph[from]
        );
    }
    let found = circles(&graph);
    assert!(found.is_empty(), "{}", describe(&graph, &found));
}

#[test]
fn the_folders_form_layers() {
    let graph = folders(&graph());
    let found = circles(&graph);
    assert!(found.is_empty(), "{}", describe(&graph, &found));
}

#[test]
fn paths_are_read_from_groups_and_from_super() {
    let code = "use crate::{a::B, c, d::{e, f}};\nuse super::g::H;\nx = crate::i::j();\n";
    assert_eq!(named_paths(code, "crate::"), ["a::B", "c", "d", "i::j"]);
    assert_eq!(named_paths(code, "super::"), ["g::H"]);
    assert_eq!(parent("pki::validate"), "pki");
    assert_eq!(parent("pki"), "");
}

#[test]
fn a_circle_is_found_and_named() {
    // The negative control: the check above would see one.
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    let found = circles(&graph);
    assert_eq!(found, vec![vec!["a", "b", "c"]]);
    assert!(describe(&graph, &found).contains("c -> a"));
}
