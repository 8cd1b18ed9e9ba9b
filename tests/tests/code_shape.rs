//! The shape of the product code: no file over 600 lines and no function over 80, so a
//! newcomer reads each in one sitting. Test code (`tests/` folders, `tests.rs`, what
//! follows a file's first `#[cfg(test)]`) and the e2e crate are not product code.
//!
//! Functions are found by their `fn` line and the closing brace at the same indentation
//! (rustfmt's layout), which is what a reader sees too.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// Longer on purpose, and why.
const EXCEPTIONS: &[(&str, &str)] = &[];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Product sources: every crate's `src/`, test code left out.
fn product_files() -> Vec<PathBuf> {
    let root = workspace();
    let mut out = Vec::new();
    for krate in std::fs::read_dir(&root).unwrap().filter_map(Result::ok) {
        let src = krate.path().join("src");
        if krate.file_name() == "tests" || krate.file_name() == "fuzz" || !src.is_dir() {
            continue;
        }
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
                let path = entry.path();
                let name = entry.file_name();
                if path.is_dir() {
                    if name != "tests" {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

/// The lines before a file's first `#[cfg(test)]`.
fn product_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect()
}

/// `(name, first line, length)` of each function.
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(at) = fn_keyword(trimmed) else {
            continue;
        };
        let name: String = trimmed[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (a trait's) ends with `;` before any `{`.
        let Some(open) = (i..lines.len())
            .find(|&j| lines[j].contains('{') || lines[j].trim_end().ends_with(';'))
        else {
            continue;
        };
        if !lines[open].contains('{') {
            continue;
        }
        if lines[open].trim_end().ends_with('}') && open == i {
            continue; // one line
        }
        let close = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.len() > indent && l[..indent].trim().is_empty() && l[indent..].starts_with('}')
        });
        if let Some(close) = close {
            out.push((name, i + 1, close - i + 1));
        }
    }
    out
}

/// Where `fn ` starts in a line that declares one (after `pub`, `async`, `const`, …).
fn fn_keyword(trimmed: &str) -> Option<usize> {
    let mut rest = trimmed;
    let mut at = 0;
    loop {
        if rest.starts_with("fn ") {
            return Some(at);
        }
        let word_end = rest.find(' ')?;
        let word = &rest[..word_end];
        let qualifier = word == "pub"
            || word.starts_with("pub(")
            || matches!(word, "async" | "const" | "unsafe" | "extern" | "\"C\"");
        if !qualifier {
            return None;
        }
        at += word_end + 1;
        rest = &rest[word_end + 1..];
    }
}

#[test]
fn no_product_file_or_function_is_too_long() {
    let root = workspace();
    let mut long = Vec::new();
    for file in product_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = product_lines(&text);
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        if lines.len() > MAX_FILE_LINES && !EXCEPTIONS.iter().any(|(f, _)| *f == rel) {
            long.push(format!("{rel}: {} lines", lines.len()));
        }
        for (name, line, len) in functions(&lines) {
            let id = format!("{rel}::{name}");
            if len > MAX_FN_LINES && !EXCEPTIONS.iter().any(|(f, _)| *f == id) {
                long.push(format!("{rel}:{line}: fn {name} is {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_FILE_LINES} lines a file or {MAX_FN_LINES} a function (split it, or add it to EXCEPTIONS with the reason):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_finder_sees_bodies_not_declarations() {
    let src =
        "pub trait T {\n    fn a(&self);\n}\n\npub(crate) async fn b() {\n    x();\n}\nfn c() {}\n";
    let lines: Vec<&str> = src.lines().collect();
    let found = functions(&lines);
    assert_eq!(found, vec![("b".to_string(), 5, 3)]);
    assert_eq!(fn_keyword("pub(crate) async fn x()"), Some(17));
    assert_eq!(fn_keyword("let f = fn_x;"), None);
}
