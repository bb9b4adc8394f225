//! The crate's layout as a rule: no import circle between its modules, nor between its
//! folders (the map at the top of `src/lib.rs`). A circle means two parts of the house can no
//! longer be read, tested or changed apart; this test names the edges that close it.
//!
//! The imports are read from the source: every `crate::a::b` path outside comments and outside
//! the `#[cfg(test)] mod tests` block at the end of a file (tests may reach anywhere).

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
        for (at, _) in code.match_indices("crate::") {
            let path: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(target) = resolve(&modules, path.trim_end_matches(':')) {
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
    assert!(
        graph["report::check"].contains("renew"),
        "check's import of renew not seen: {:?}",
        graph["report::check"]
    );
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
