//! The size limits of the host's code (#18): no file in `host/src` over 600 lines, no
//! function over 80. Functions written before the limit and not yet split are listed in
//! [`KNOWN_LONG`] with the length they had; they may shrink or go, not grow, and no new one
//! may join them.

use std::path::{Path, PathBuf};

/// Lines a file in `host/src` may have.
const MAX_FILE_LINES: usize = 600;
/// Lines a function may have, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;

/// Functions over the limit when the check was written: (file under `host/src`, function,
/// its length then). Each is a debt of the file's owner.
const KNOWN_LONG: &[(&str, &str, usize)] = &[("runtime/agent.rs", "execute", 105)];

/// Files over the limit when the check was written, with their length then.
const KNOWN_LARGE: &[(&str, usize)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.next() {
        match word {
            "fn" => {
                let name = words.next()?;
                let end = name
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(name.len());
                return Some(&name[..end]);
            }
            "pub" | "async" | "const" | "unsafe" | "extern" | "\"C\"" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

/// Each function with a body in `text` (formatted by rustfmt, so its closing brace is the
/// first line at the `fn` line's indentation that is just `}`): its name and line count.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let indent = &line[..line.len() - line.trim_start().len()];
        let Some(open) = (start..lines.len())
            .find(|&i| lines[i].trim_end().ends_with('{') || lines[i].trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        if lines[open].trim_end().ends_with('}') {
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&i| lines[i].trim_end() == closing) {
            found.push((name.to_owned(), start + 1, end - start + 1));
        }
    }
    found
}

#[test]
fn no_host_file_over_600_lines_and_no_function_over_80() {
    let src = xtask::workspace_root().join("host/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let mut problems = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read source");
        let relative = path
            .strip_prefix(&src)
            .expect("under host/src")
            .to_string_lossy()
            .replace('\\', "/");
        let lines = text.lines().count();
        let file_limit = KNOWN_LARGE
            .iter()
            .find(|(file, _)| *file == relative)
            .map_or(MAX_FILE_LINES, |(_, then)| *then);
        if lines > file_limit {
            problems.push(format!("{relative}: {lines} lines (limit {file_limit})"));
        }
        for (name, line, length) in functions(&text) {
            let limit = KNOWN_LONG
                .iter()
                .find(|(file, function, _)| *file == relative && *function == name)
                .map_or(MAX_FN_LINES, |(_, _, then)| *then);
            if length > limit {
                problems.push(format!(
                    "{relative}:{line}: fn {name} has {length} lines (limit {limit})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "split these:\n{}", problems.join("\n"));
}

#[test]
fn the_function_finder_measures_bodies_and_skips_declarations() {
    let text = "trait T {\n    fn declared(&self)\n        -> u8;\n}\n\
                pub(crate) async fn two() {\n    let x = 1;\n    let y = {\n        x\n    };\n}\n\
                fn one() {}\n";
    assert_eq!(functions(text), vec![("two".to_owned(), 5, 6)]);
}
