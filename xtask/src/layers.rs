//! `cargo xtask lint`'s check that imports run one way: no circle of files that import each
//! other, and none between the top-level modules of a crate (`collect`, `record`, `write`, ...),
//! from `use` trees and inline `crate::…` and `super::…` paths, each resolved from the module that
//! names it (`super` of `record/profile.rs` is `record`). A rough reader like
//! `../shared/tools/modgraph.py` (no macro expansion), kept in the project so that every clone
//! checks it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{bail, Result};

/// The crates whose module graphs must have no circles.
pub const CRATES: &[&str] = &["autodump-user/src", "autodump-ebpf/src"];

type Module = Vec<String>;

/// A module's source.
struct Source {
    text: String,
}

/// Fails with every circle found, file by file and between top-level modules.
pub fn check(root: &Path) -> Result<()> {
    let mut circles = Vec::new();
    for src in CRATES {
        let modules = modules(&root.join(src))?;
        let edges = edges(&modules);
        let files: BTreeMap<String, BTreeSet<String>> =
            edges.iter().map(|(from, to)| (from.join("::"), to.iter().map(|t| t.join("::")).collect())).collect();
        let tops: BTreeMap<String, BTreeSet<String>> =
            edges.iter().filter(|(from, _)| !from.is_empty()).fold(BTreeMap::new(), |mut acc, (from, to)| {
                let entry: &mut BTreeSet<String> = acc.entry(from[0].clone()).or_default();
                entry.extend(to.iter().filter(|t| t[0] != from[0]).map(|t| t[0].clone()));
                acc
            });
        for (what, graph) in [("files", &files), ("top-level modules", &tops)] {
            for circle in strongly_connected(graph) {
                circles.push(format!("{src}: {what} import each other: {}", circle.join(", ")));
            }
        }
    }
    if !circles.is_empty() {
        bail!("imports must run one way, from the top layer down:\n  {}", circles.join("\n  "));
    }
    Ok(())
}

/// Module path -> file text, for every `.rs` file under `src` (binaries left out).
fn modules(src: &Path) -> Result<BTreeMap<Module, Source>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut module: Module = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.first().is_some_and(|m| m == "bin") {
                continue;
            }
            if module.last().is_some_and(|m| ["mod", "lib", "main"].contains(&m.as_str())) {
                module.pop();
            }
            out.insert(module, Source { text: std::fs::read_to_string(&path)? });
        }
    }
    Ok(out)
}

/// Each module's imports of other modules (not of the crate root).
fn edges(modules: &BTreeMap<Module, Source>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, source) in modules {
        // Paths resolve from the module itself, whether it is a file or a directory's `mod.rs`:
        // in `record/profile.rs` (`record::profile`), `super::kind` is `record::kind`.
        let targets = edges.entry(module.clone()).or_default();
        for path in paths(&source.text) {
            if let Some(target) = resolve(&path, module, modules) {
                if &target != module && !target.is_empty() {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

/// Every `crate::`/`super::`/`self::` path the text names, use trees expanded: in `use`
/// declarations, and written inline (`crate::a::b()`, `super::c::D`).
fn paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("use ") {
        let after = &rest[at + 4..];
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        let Some(end) = after.find(';') else { break };
        let tree = without_renames(&after[..end]);
        if boundary && ["crate::", "super::", "self::"].iter().any(|p| tree.starts_with(p)) {
            found.extend(expand(&tree));
        }
        rest = &after[end..];
    }
    for root in ["crate::", "super::"] {
        for (i, _) in code.match_indices(root) {
            let before = i.checked_sub(1).map(|b| code.as_bytes()[b]);
            // Inside a longer name, or the middle of a path already read (`super::super::x`).
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let path: String =
                code[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let path = path.trim_end_matches(':');
            // `crate::{…}` is a use tree, read above; a bare `super::` only starts one.
            if !["crate", "super"].contains(&path) {
                found.push(path.to_string());
            }
        }
    }
    // A `use` path is also read inline: each path once, in the order first read.
    let mut seen = BTreeSet::new();
    found
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .map(|p| p.split("::").filter(|s| !s.is_empty() && *s != "*").map(String::from).collect())
        .collect()
}

/// A use tree without whitespace and without `as` renames: `a::{B as C, d}` -> `a::{B,d}`.
fn without_renames(tree: &str) -> String {
    let mut out = String::new();
    let mut tokens = tree.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == "as" {
            // Keep what follows the new name: `C,` or `C}`.
            let renamed = tokens.next().unwrap_or("");
            out.extend(renamed.chars().skip_while(|c| c.is_ascii_alphanumeric() || *c == '_'));
        } else {
            out.push_str(token);
        }
    }
    out
}

/// `a::{b::C, d}` -> `a::b::C`, `a::d`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else { return vec![tree.to_string()] };
    let (prefix, inner) = (&tree[..open], tree[open + 1..].trim_end_matches('}'));
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' => (depth += 1, current.push(c)).1,
            '}' => (depth -= 1, current.push(c)).1,
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts.iter().filter(|p| !p.is_empty()).flat_map(|p| expand(&format!("{prefix}{p}"))).collect()
}

/// The longest prefix of `path` (from `here` for `super`/`self`) that names a module.
fn resolve(path: &[String], here: &Module, modules: &BTreeMap<Module, Source>) -> Option<Module> {
    let mut base = here.clone();
    let mut segments = path.iter().cloned().peekable();
    match segments.peek().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segments.next();
        }
        Some("super") | Some("self") => {
            while let Some(s) = segments.next_if(|s| s == "super" || s == "self") {
                if s == "super" {
                    base.pop();
                }
            }
        }
        _ => return None,
    }
    let mut best = None;
    let mut candidate = base;
    for segment in segments {
        candidate.push(segment);
        if modules.contains_key(&candidate) {
            best = Some(candidate.clone());
        }
    }
    best
}

/// Groups of two or more nodes that reach each other (Tarjan's algorithm).
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if s.stack.contains(&w.as_str()) {
                let iw = s.index[w.as_str()];
                s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().rposition(|x| *x == v).expect("on the stack");
            let component: Vec<String> = s.stack.drain(at..).map(String::from).collect();
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    }

    #[test]
    fn finds_circles_and_only_circles() {
        let circles = strongly_connected(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")]));
        assert_eq!(circles.len(), 1);
        assert_eq!(
            circles[0].iter().collect::<BTreeSet<_>>(),
            ["a", "b", "c"].iter().map(|s| s.to_string()).collect::<Vec<_>>().iter().collect()
        );
        assert!(strongly_connected(&graph(&[("a", "b"), ("b", "c")])).is_empty());
    }

    #[test]
    fn reads_use_trees_and_inline_paths() {
        let text =
            "use crate::{a::{B as Z, c::D}, e};\nuse super::f::G; // use crate::comment;\nfn x() { crate::h::i(); super::j::K; }";
        let found: Vec<String> = paths(text).iter().map(|p| p.join("::")).collect();
        assert_eq!(found, ["crate::a::B", "crate::a::c::D", "crate::e", "super::f::G", "crate::h::i", "super::j::K"]);
    }

    #[test]
    fn resolves_to_the_longest_module() {
        let modules: BTreeMap<Module, Source> = [vec!["a".to_string()], vec!["a".into(), "c".into()]]
            .into_iter()
            .map(|m| (m, Source { text: String::new() }))
            .collect();
        let path: Vec<String> = ["crate", "a", "c", "D"].map(String::from).to_vec();
        assert_eq!(resolve(&path, &vec![], &modules), Some(vec!["a".to_string(), "c".to_string()]));
    }

    #[test]
    fn super_is_the_parent_of_the_module_itself() {
        // `record/profile.rs` names `super::kind`, and `record/kind.rs` names `super::profile`
        // inline: two files of one folder that import each other.
        let modules: BTreeMap<Module, Source> = [
            (vec!["record".to_string()], "pub mod kind; pub mod profile;"),
            (vec!["record".into(), "profile".into()], "use super::kind::Kind;"),
            (vec!["record".into(), "kind".into()], "fn of(v: &super::profile::Value) {}"),
        ]
        .into_iter()
        .map(|(m, text)| (m, Source { text: text.into() }))
        .collect();
        let edges = edges(&modules);
        let record = |m: &str| vec!["record".to_string(), m.to_string()];
        assert!(edges[&record("profile")].contains(&record("kind")));
        assert!(edges[&record("kind")].contains(&record("profile")), "inline super:: paths are followed");
        let names: BTreeMap<String, BTreeSet<String>> =
            edges.iter().map(|(f, t)| (f.join("::"), t.iter().map(|t| t.join("::")).collect())).collect();
        assert_eq!(strongly_connected(&names).len(), 1);
    }

    #[test]
    fn this_workspace_has_no_circles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        check(root).unwrap();
    }
}
