//! The server's architecture, checked: its layers only point down, no two files import
//! each other through a cycle, and the `//! # Layout` maps name every module.
//!
//! The layers, top to bottom (`lib.rs` wires them and is above them all):
//! `{api, acme} → service → dispatch → lifecycle → {statuses, notify} → config → {db,
//! metrics}`.
//! A module may use its own files and any module below it, never one above.
//!
//! Imports are read from the source text: every `crate::…`, `super::…` and `self::…`
//! path outside comments and `#[cfg(test)]` code, resolved to the deepest file it names
//! (`use a::{b, c}` groups included). A folder's `mod.rs` declaring and re-exporting its
//! own files is structure, not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: lower numbers are higher up.
const LAYERS: &[(&str, u8)] = &[
    ("api", 1),
    ("acme", 1),
    ("service", 2),
    ("dispatch", 3),
    ("lifecycle", 4),
    ("statuses", 5),
    ("notify", 5),
    ("config", 6),
    ("db", 7),
    ("metrics", 7),
];

type Module = Vec<String>;

struct Source {
    file: PathBuf,
    module: Module,
    /// Code lines (comments and test code removed).
    code: Vec<String>,
    /// The `//!` lines.
    docs: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn sources() -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src_dir()).unwrap().to_path_buf();
                let test_code = rel.iter().any(|c| c == "tests" || c == "tests.rs");
                if rel == Path::new("main.rs") || test_code {
                    continue; // the binary (a crate of its own), and test code
                }
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(Source {
                    module: module_of(&rel),
                    code: code_lines(&text),
                    docs: text
                        .lines()
                        .filter(|l| l.trim_start().starts_with("//!"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    file: rel,
                });
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// `api/mod.rs` → `[api]`, `api/git.rs` → `[api, git]`, `lib.rs` → `[]`.
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file's lines up to its first `#[cfg(test)]`, comments cut off, each `use`
/// statement joined into one line.
fn code_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open_use = false;
    for line in text.lines().take_while(|l| l.trim() != "#[cfg(test)]") {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        if open_use {
            out.last_mut().unwrap().push_str(line.trim());
        } else {
            out.push(line.to_string());
            let t = line.trim_start();
            open_use = t.starts_with("use ")
                || t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ");
        }
        if open_use && line.contains(';') {
            open_use = false;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path a line names from `crate`, `super` or `self`, as module segments
/// relative to the file's module (groups `{a, b::c}` expanded one level).
fn paths_in(line: &str, module: &Module, is_mod_file: bool) -> Vec<Module> {
    let mut found = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = line[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && is_ident(line[..at].chars().last().unwrap()) {
                continue; // e.g. `cdeploy_core::…` contains no `crate::` but be safe
            }
            // `super::super::x` is read once, from its first `super`.
            if start == "super::" && line[..at].ends_with("super::") {
                continue;
            }
            let rest = &line[at..];
            let end = rest
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(rest.len());
            let path: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Module = Vec::new();
            let mut segs = path.iter().peekable();
            match *segs.next().unwrap() {
                "crate" => {}
                "self" => {
                    base = module.clone();
                }
                "super" => {
                    // In `a/mod.rs` (module [a]) and in `a/b.rs` (module [a, b]), `super`
                    // is the parent of the module.
                    base = module.clone();
                    base.pop();
                    while segs.peek() == Some(&&"super") {
                        segs.next();
                        base.pop();
                    }
                }
                _ => unreachable!(),
            }
            let _ = is_mod_file;
            base.extend(segs.map(|s| s.to_string()));
            // A group: `…::{a, b::c, self}`.
            if rest[end..].starts_with('{') {
                let group = &rest[end + 1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let first: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                    if !first.is_empty() && first != "self" {
                        let mut p = base.clone();
                        p.push(first);
                        found.push(p);
                    }
                }
            }
            found.push(base);
        }
    }
    found
}

/// The deepest known module a path names (a path into an item resolves to its file).
fn resolve(path: &Module, modules: &BTreeSet<Module>) -> Module {
    let mut p = path.clone();
    while !p.is_empty() && !modules.contains(&p) {
        p.pop();
    }
    p
}

fn layer(module: &Module) -> Option<u8> {
    let top = module.first()?;
    LAYERS.iter().find(|(name, _)| name == top).map(|&(_, l)| l)
}

/// File → the files it imports.
fn graph(sources: &[Source]) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges = BTreeMap::new();
    for s in sources {
        let is_mod_file = s.file.ends_with("mod.rs") || s.file == Path::new("lib.rs");
        let mut to = BTreeSet::new();
        for line in &s.code {
            let t = line.trim_start();
            let declares = t.starts_with("pub mod ")
                || t.starts_with("mod ")
                || t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ");
            for path in paths_in(line, &s.module, is_mod_file) {
                let target = resolve(&path, &modules);
                if target == s.module {
                    continue;
                }
                // A folder's own files, declared or re-exported by it.
                if is_mod_file && declares && target.starts_with(&s.module) {
                    continue;
                }
                to.insert(target);
            }
        }
        edges.insert(s.module.clone(), to);
    }
    edges
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate (lib.rs)".into()
    } else {
        m.join("::")
    }
}

#[test]
fn every_top_level_module_has_a_layer() {
    for s in sources() {
        if s.module.len() == 1 || (s.module.len() > 1 && s.file.ends_with("mod.rs")) {
            assert!(
                layer(&s.module).is_some(),
                "{} has no layer: add it to LAYERS in server/tests/layers.rs and to the Layout of lib.rs",
                s.file.display()
            );
        }
    }
}

#[test]
fn imports_only_point_down() {
    let sources = sources();
    let mut wrong = Vec::new();
    for (from, tos) in graph(&sources) {
        for to in tos {
            if to.is_empty() && !from.is_empty() {
                wrong.push(format!("{} imports the crate root", name(&from)));
                continue;
            }
            let (Some(a), Some(b)) = (layer(&from), layer(&to)) else {
                continue; // the crate root wires everything
            };
            if from[0] != to[0] && a >= b {
                wrong.push(format!(
                    "{} (layer {a}) imports {} (layer {b})",
                    name(&from),
                    name(&to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_cycle_between_files() {
    let edges = graph(&sources());
    // Depth-first search with colours: a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour: BTreeMap<&Module, Colour> = edges.keys().map(|k| (k, Colour::White)).collect();
    fn visit<'a>(
        m: &'a Module,
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        colour: &mut BTreeMap<&'a Module, Colour>,
        path: &mut Vec<&'a Module>,
    ) -> Option<Vec<String>> {
        colour.insert(m, Colour::Grey);
        path.push(m);
        for next in edges.get(m).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(Colour::Black) {
                Colour::Grey => {
                    let start = path.iter().position(|p| *p == next).unwrap();
                    let mut cycle: Vec<String> = path[start..].iter().map(|m| name(m)).collect();
                    cycle.push(name(next));
                    return Some(cycle);
                }
                Colour::White => {
                    if let Some(c) = visit(next, edges, colour, path) {
                        return Some(c);
                    }
                }
                Colour::Black => {}
            }
        }
        path.pop();
        colour.insert(m, Colour::Black);
        None
    }
    let keys: Vec<&Module> = edges.keys().collect();
    for m in keys {
        if colour[m] == Colour::White {
            if let Some(cycle) = visit(m, &edges, &mut colour, &mut Vec::new()) {
                panic!("a cycle of imports: {}", cycle.join(" → "));
            }
        }
    }
}

#[test]
fn layout_maps_name_every_module() {
    let sources = sources();
    let mut missing = Vec::new();
    for parent in sources
        .iter()
        .filter(|s| s.file == Path::new("lib.rs") || s.file.ends_with("mod.rs"))
    {
        for child in sources.iter().filter(|c| {
            c.module.len() == parent.module.len() + 1 && c.module.starts_with(&parent.module)
        }) {
            let leaf = child.module.last().unwrap();
            if leaf == "tests" {
                continue;
            }
            // `[`name`]` (a link) or `` `name` `` (a private module) opening an entry.
            let named = parent.docs.contains(&format!("[`{leaf}`]"))
                || parent.docs.contains(&format!("* `{leaf}`"));
            if !named {
                missing.push(format!("{} does not name `{leaf}`", parent.file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "Layout maps missing modules:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    // The parser itself: a group, `super` from a file and from a folder's mod.rs.
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let found = paths_in(
        "use crate::service::{deployments, App};",
        &m("api::deployments"),
        false,
    );
    assert!(found.contains(&m("service::deployments")));
    assert!(found.contains(&m("service::App")));
    let up = paths_in("use super::error::ApiError;", &m("api::files"), false);
    assert_eq!(up, vec![m("api::error::ApiError")]);
    let twice = paths_in(
        "super::super::secrets::x",
        &m("service::git::deliver"),
        false,
    );
    assert_eq!(twice, vec![m("service::secrets::x")]);
    assert!(code_lines("a\n// crate::x\n#[cfg(test)]\ncrate::y").len() == 1);
}
