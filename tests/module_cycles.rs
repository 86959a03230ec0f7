//! Layering check: in each crate of the workspace, at every level of the
//! module tree, the sibling modules import each other without a circle (a
//! module may use its ancestors and descendants freely: a parent re-exporting
//! its children and children using their parent's items is how Rust modules
//! work). Module `a` uses sibling `b` when any file under `a` names a path into
//! `b` (`use crate::b::…`, `crate::b::X`, `super::b::…`).
//!
//! Written by hand: `cargo-modules` (`dependencies --acyclic`) does this job
//! too, but it builds rust-analyzer and would add minutes to every fresh CI
//! machine; this is a plain scan of the source text, good enough for paths
//! written the way this project writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate, e.g. ["devices", "virtio"]; [] is the crate root.
type ModPath = Vec<String>;

struct Crate {
    /// Every module found from the crate roots, with the file that holds it.
    files: BTreeMap<ModPath, PathBuf>,
}

impl Crate {
    /// Walks `mod NAME;` declarations from the crate's root file.
    fn load(root: &str) -> Crate {
        let mut files = BTreeMap::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(root),
            Vec::new(),
            &mut files,
        );
        Crate { files }
    }

    /// The deepest module named by the start of `path`, if any.
    fn module_of(&self, path: &[String]) -> Option<ModPath> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.files.contains_key(p))
    }

    /// Edges "module uses module" between files, by full module path.
    fn uses(&self) -> BTreeSet<(ModPath, ModPath)> {
        let mut edges = BTreeSet::new();
        for (module, file) in &self.files {
            let text = strip_comments(&std::fs::read_to_string(file).unwrap());
            for path in paths_in(&text) {
                if let Some(target) = self.resolve(module, &path) {
                    edges.insert((module.clone(), target));
                }
            }
        }
        edges
    }

    /// Resolves `crate::…`, `super::…` and `self::…` paths to a known module.
    fn resolve(&self, module: &ModPath, path: &[String]) -> Option<ModPath> {
        let (first, rest) = path.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().checked_sub(1)?].to_vec(),
            _ => return None,
        };
        let mut rest = rest;
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        self.module_of(&base)
    }
}

/// Adds `file` as `module` and recurses into the modules it declares.
fn walk(file: &Path, module: ModPath, files: &mut BTreeMap<ModPath, PathBuf>) {
    let text = strip_comments(&std::fs::read_to_string(file).unwrap());
    let dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().unwrap().to_path_buf(),
        _ => file.with_extension(""),
    };
    let mut path_attr = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(p) = line.strip_prefix("#[path = \"") {
            path_attr = p
                .strip_suffix("\"]")
                .map(|p| file.parent().unwrap().join(p));
            continue;
        }
        let decl = line
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        let Some(name) = decl.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) else {
            continue;
        };
        let child = path_attr
            .take()
            .into_iter()
            .chain([
                dir.join(format!("{name}.rs")),
                dir.join(name).join("mod.rs"),
            ])
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{}: mod {name}: no file", file.display()));
        let mut path = module.clone();
        path.push(name.to_string());
        walk(&child, path, files);
    }
    files.insert(module, file.to_path_buf());
}

/// The text without `//` comments (doc comments name paths that are not imports).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with crate, super or self, with `use` groups
/// (`use crate::a::{b, c::D}`) expanded.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = |w: &str| text_at(&bytes, i, w) && (i == 0 || !is_ident(bytes[i - 1]));
        if ["crate::", "super::", "self::"].iter().any(|w| starts(w)) {
            let (tree, end) = read_tree(&bytes, i);
            expand(&tree, &mut Vec::new(), &mut out);
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn text_at(s: &[char], i: usize, w: &str) -> bool {
    w.chars().enumerate().all(|(k, c)| s.get(i + k) == Some(&c))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A use tree: a path of segments, then optionally a `{…}` group of subtrees.
struct Tree {
    segs: Vec<String>,
    group: Vec<Tree>,
}

/// Reads a path (and its brace group) starting at `i`; returns it and the end.
fn read_tree(s: &[char], mut i: usize) -> (Tree, usize) {
    let mut tree = Tree {
        segs: Vec::new(),
        group: Vec::new(),
    };
    loop {
        while s.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let start = i;
        while s.get(i).copied().is_some_and(is_ident) {
            i += 1;
        }
        if i > start {
            tree.segs.push(s[start..i].iter().collect());
        }
        if text_at(s, i, "::") {
            i += 2;
            continue;
        }
        break;
    }
    if s.get(i) == Some(&'{') && !tree.segs.is_empty() {
        i += 1;
        loop {
            let (sub, end) = read_tree(s, i);
            i = end;
            tree.group.push(sub);
            while s.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                i += 1;
            }
            if s.get(i).is_none_or(|c| *c == '}') {
                return (tree, i + 1);
            }
            if !s.get(i).copied().is_some_and(is_ident) {
                // Not a use group (`crate::X { field }` in an expression): stop here.
                return (tree, i);
            }
        }
    }
    (tree, i)
}

fn expand(tree: &Tree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let n = prefix.len();
    prefix.extend(tree.segs.iter().cloned());
    if tree.group.is_empty() {
        out.push(prefix.clone());
    }
    for sub in &tree.group {
        expand(sub, prefix, out);
    }
    prefix.truncate(n);
}

/// For each parent module, the use edges between its children: child `a` uses
/// child `b` when a module under `a` uses a module under `b`.
fn sibling_edges(
    edges: &BTreeSet<(ModPath, ModPath)>,
) -> BTreeMap<ModPath, BTreeSet<(String, String)>> {
    let mut out: BTreeMap<ModPath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (from, to) in edges {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue; // ancestor or descendant
        }
        out.entry(from[..common].to_vec())
            .or_default()
            .insert((from[common].clone(), to[common].clone()));
    }
    out
}

/// A circle among `edges`, as the names along it, if there is one.
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeSet<(String, String)>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for (_, to) in edges.iter().filter(|(f, _)| f == n) {
            if let Some(c) = visit(to, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .iter()
        .find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
}

fn circles(root: &str) -> Vec<String> {
    let krate = Crate::load(root);
    assert!(krate.files.len() > 1, "{root}: no `mod` declarations found");
    let edges = krate.uses();
    sibling_edges(&edges)
        .iter()
        .filter_map(|(parent, sib)| {
            find_cycle(sib).map(|c| {
                let at = if parent.is_empty() {
                    "crate".to_string()
                } else {
                    parent.join("::")
                };
                format!("{root}, under {at}: {}", c.join(" -> "))
            })
        })
        .collect()
}

#[test]
fn sibling_modules_import_each_other_without_circles() {
    let mut found = Vec::new();
    for root in [
        "src/lib.rs",
        "src/main.rs",
        "pci/src/lib.rs",
        "iommu/src/lib.rs",
    ] {
        found.extend(circles(root));
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_scan_sees_uses_and_groups() {
    let text = "use crate::a::{b::C, d};\nfn f() { super::e::F::new(); }\n";
    let paths: Vec<String> = paths_in(text).iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["crate::a::b::C", "crate::a::d", "super::e::F::new"]);
    let edges: BTreeSet<_> = [("a", "b"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    assert_eq!(find_cycle(&edges).unwrap().len(), 4);
}
