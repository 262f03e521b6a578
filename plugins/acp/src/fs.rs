//! The client's `fs/read_text_file` and `fs/write_text_file`, confined to the workspace.
//!
//! The guest has no file system of its own: every file operation runs a program in the
//! workspace through the `exec` import, under the same confinement as the agent. A path is
//! first resolved with `realpath -m` (symlinks followed, `..` folded, a missing file allowed)
//! next to the workspace root itself; a path that resolves outside the root is refused with
//! a JSON-RPC error before anything reads or writes it. Then `cat` reads and `dd` writes the
//! resolved path. The checks and the line slicing are pure and unit tested natively; the
//! programs are run by [`Files`].

use rdev_sdk::v0_2::OutputStream;
use rdev_sdk::v0_2::exec::{ChunksRead, ExecError, Process};
use rdev_sdk::v0_2::process::{self, CommandBuilder};
use serde_json::{Value, json};

/// The programs the file methods run; a manifest grants them beside the agent program
/// (checked against the shipped manifests by the tests).
#[cfg(test)]
const PROGRAMS: [&str; 3] = ["realpath", "cat", "dd"];
/// Largest file `fs/read_text_file` returns (and `fs/write_text_file` accepts): a text file
/// an agent reads whole, with room to spare.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// JSON-RPC's "invalid params": a request without a usable path, line or limit.
pub const INVALID_PARAMS: i64 = -32602;
/// The error of a refused or failed file operation (JSON-RPC's server-error range).
pub const FILE_ERROR: i64 = -32000;

/// Why a file method was not done: the JSON-RPC error code and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i64,
    pub message: String,
}

impl Refused {
    fn params(message: impl Into<String>) -> Self {
        Self {
            code: INVALID_PARAMS,
            message: message.into(),
        }
    }

    fn file(message: impl Into<String>) -> Self {
        Self {
            code: FILE_ERROR,
            message: message.into(),
        }
    }
}

/// A file method's failure: refused (answered with an error) or the host cancelled.
#[derive(Debug)]
pub enum Failure {
    Refused(Refused),
    Cancelled,
}

impl From<Refused> for Failure {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

/// `fs/read_text_file`'s params: the path, the 1-based first line and the number of lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub path: String,
    pub line: Option<usize>,
    pub limit: Option<usize>,
}

/// `fs/write_text_file`'s params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub path: String,
    pub content: String,
}

/// Reads `fs/read_text_file`'s params.
pub fn read_params(params: &Value) -> Result<Read, Refused> {
    let count = |key: &str, least: u64| match &params[key] {
        Value::Null => Ok(None),
        value => value
            .as_u64()
            .filter(|n| *n >= least)
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                Refused::params(format!("`{key}` must be an integer of {least} or more"))
            }),
    };
    Ok(Read {
        path: path_param(params)?,
        line: count("line", 1)?,
        limit: count("limit", 0)?,
    })
}

/// Reads `fs/write_text_file`'s params.
pub fn write_params(params: &Value) -> Result<Write, Refused> {
    let content = params["content"]
        .as_str()
        .ok_or_else(|| Refused::params("`content` must be a string"))?;
    if content.len() > MAX_FILE_BYTES {
        return Err(Refused::params(format!(
            "`content` is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(Write {
        path: path_param(params)?,
        content: content.to_owned(),
    })
}

/// A non-empty path without NUL or newline (one path per line of `realpath`'s output).
fn path_param(params: &Value) -> Result<String, Refused> {
    let path = params["path"]
        .as_str()
        .ok_or_else(|| Refused::params("`path` must be a string"))?;
    if path.is_empty() || path.contains(['\0', '\n', '\r']) {
        return Err(Refused::params(
            "`path` must be a non-empty path without NUL or line breaks",
        ));
    }
    Ok(path.to_owned())
}

/// The argument handed to `realpath`, run at the workspace root: an absolute path as it is,
/// a relative one under the session's directory (`working_dir`, relative to the root).
pub fn to_resolve(path: &str, working_dir: Option<&str>) -> String {
    match working_dir.filter(|d| !d.is_empty() && !path.starts_with('/')) {
        Some(dir) => format!("{}/{path}", dir.trim_end_matches('/')),
        None => path.to_owned(),
    }
}

/// The resolved path when it is the root or beneath it; refused otherwise.
pub fn confine(root: &str, resolved: &str, asked: &str) -> Result<String, Refused> {
    let root = root.trim_end_matches('/');
    let inside = resolved
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if root.is_empty() || !resolved.starts_with('/') || !inside {
        return Err(Refused::file(format!(
            "{asked:?} is outside the workspace; rdev's ACP client reads and writes only \
             beneath {root}"
        )));
    }
    Ok(resolved.to_owned())
}

/// The lines of `text` from 1-based `line` on, at most `limit` of them, each with its line
/// break.
pub fn slice_lines(text: &str, line: Option<usize>, limit: Option<usize>) -> String {
    if line.is_none() && limit.is_none() {
        return text.to_owned();
    }
    let skip = line.map_or(0, |l| l.saturating_sub(1));
    text.split_inclusive('\n')
        .skip(skip)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// `fs/read_text_file`'s result.
pub fn read_result(content: String) -> Value {
    json!({"content": content})
}

/// `fs/write_text_file`'s result (ACP's is empty).
pub fn write_result() -> Value {
    json!({})
}

/// Runs the file programs in the workspace for one command.
pub struct Files {
    /// The command's working directory, relative to the workspace root.
    pub working_dir: Option<String>,
}

impl Files {
    /// Serves `fs/read_text_file`.
    pub fn read(&self, params: &Value) -> Result<Value, Failure> {
        let read = read_params(params)?;
        let path = self.resolve(&read.path)?;
        let Ran {
            code,
            stdout,
            stderr,
        } = run(&["cat", "--", &path], None)?;
        if code != Some(0) {
            return Err(failed("reading", &read.path, &stderr).into());
        }
        let text = String::from_utf8(stdout)
            .map_err(|_| Refused::file(format!("{:?} is not UTF-8 text", read.path)))?;
        Ok(read_result(slice_lines(&text, read.line, read.limit)))
    }

    /// Serves `fs/write_text_file`: the file is created or replaced.
    pub fn write(&self, params: &Value) -> Result<Value, Failure> {
        let write = write_params(params)?;
        let path = self.resolve(&write.path)?;
        let target = format!("of={path}");
        let Ran { code, stderr, .. } = run(&["dd", "status=none", &target], Some(&write.content))?;
        if code != Some(0) {
            return Err(failed("writing", &write.path, &stderr).into());
        }
        Ok(write_result())
    }

    /// The path's resolution beside the workspace root's, confined to the root.
    fn resolve(&self, asked: &str) -> Result<String, Failure> {
        let target = to_resolve(asked, self.working_dir.as_deref());
        let Ran {
            code,
            stdout,
            stderr,
        } = run(&["realpath", "-m", "--", ".", &target], None)?;
        let stdout = String::from_utf8_lossy(&stdout);
        let mut lines = stdout.lines();
        match (code, lines.next(), lines.next()) {
            (Some(0), Some(root), Some(resolved)) => Ok(confine(root, resolved, asked)?),
            _ => Err(failed("resolving", asked, &stderr).into()),
        }
    }
}

fn failed(doing: &str, path: &str, stderr: &[u8]) -> Refused {
    let why = String::from_utf8_lossy(stderr);
    let why = why.trim();
    if why.is_empty() {
        Refused::file(format!("{doing} {path:?} failed"))
    } else {
        Refused::file(format!("{doing} {path:?} failed: {why}"))
    }
}

/// What a program printed and how it ended.
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `argv` at the workspace root with `input` on stdin; stdout past [`MAX_FILE_BYTES`]
/// fails the operation.
fn run(argv: &[&str], input: Option<&str>) -> Result<Ran, Failure> {
    let exec = |e: ExecError| match e {
        ExecError::Cancelled => Failure::Cancelled,
        other => Refused::file(format!("{}: {}", argv[0], process::describe(&other))).into(),
    };
    let process = CommandBuilder::new(argv[0])
        .args(argv[1..].iter().copied())
        .spawn()
        .map_err(exec)?;
    if let Some(input) = input {
        process.write_stdin(input.as_bytes()).map_err(exec)?;
    }
    process.close_stdin();
    let (stdout, stderr) = collect(&process).map_err(exec)?;
    let status = process::wait(&process).map_err(exec)?;
    if stdout.len() > MAX_FILE_BYTES {
        return Err(
            Refused::file(format!("the file is larger than {MAX_FILE_BYTES} bytes")).into(),
        );
    }
    Ok(Ran {
        code: status.code,
        stdout,
        stderr,
    })
}

/// Everything the process writes until it closes its output; stops keeping stdout past
/// [`MAX_FILE_BYTES`] (one byte more tells the caller it was too large).
fn collect(process: &Process) -> Result<(Vec<u8>, Vec<u8>), ExecError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        match process::read_chunks(process, None)? {
            ChunksRead::Chunks(chunks) => {
                for chunk in chunks {
                    let (into, cap) = match chunk.stream {
                        OutputStream::Stdout => (&mut stdout, MAX_FILE_BYTES + 1),
                        OutputStream::Stderr => (&mut stderr, 4096),
                    };
                    let room = cap.saturating_sub(into.len());
                    into.extend_from_slice(&chunk.bytes[..chunk.bytes.len().min(room)]);
                }
            }
            ChunksRead::Idle => {}
            ChunksRead::Closed => return Ok((stdout, stderr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_are_kept_and_the_rest_refused() {
        let root = "/data/projects/p";
        assert_eq!(
            confine(root, "/data/projects/p/a.txt", "a.txt").as_deref(),
            Ok("/data/projects/p/a.txt")
        );
        assert!(confine(root, "/data/projects/p", ".").is_ok());
        assert!(confine(&format!("{root}/"), "/data/projects/p/x", "x").is_ok());
        for outside in [
            "/data/projects/p2/a",
            "/data/projects",
            "/etc/passwd",
            "relative",
        ] {
            let refused = confine(root, outside, "../x").expect_err(outside);
            assert_eq!(refused.code, FILE_ERROR);
            assert!(
                refused.message.contains("outside the workspace"),
                "{refused:?}"
            );
        }
        assert!(
            confine("", "/a", "a").is_err(),
            "an unknown root confines nothing in"
        );
    }

    #[test]
    fn relative_paths_resolve_under_the_session_directory() {
        assert_eq!(to_resolve("a.txt", None), "a.txt");
        assert_eq!(to_resolve("a.txt", Some("sub/")), "sub/a.txt");
        assert_eq!(to_resolve("/abs/a.txt", Some("sub")), "/abs/a.txt");
        assert_eq!(to_resolve("../x", Some("")), "../x");
    }

    #[test]
    fn every_shipped_manifest_grants_the_file_programs() {
        for manifest in [
            include_str!("../manifest.toml"),
            include_str!("../agents/acp-opencode.toml"),
            include_str!("../agents/acp-claude.toml"),
            include_str!("../agents/acp-gemini.toml"),
        ] {
            let exec = manifest
                .lines()
                .find(|l| l.starts_with("exec = "))
                .expect("an exec grant");
            for program in PROGRAMS {
                assert!(exec.contains(&format!("\"{program}\"")), "{exec}");
            }
        }
    }

    #[test]
    fn line_and_limit_slice_the_text() {
        let text = "one\ntwo\nthree\nfour";
        assert_eq!(slice_lines(text, None, None), text);
        assert_eq!(slice_lines(text, Some(2), None), "two\nthree\nfour");
        assert_eq!(slice_lines(text, Some(2), Some(2)), "two\nthree\n");
        assert_eq!(slice_lines(text, None, Some(1)), "one\n");
        assert_eq!(slice_lines(text, Some(9), None), "");
        assert_eq!(slice_lines(text, Some(1), Some(0)), "");
    }

    #[test]
    fn params_are_checked_before_anything_runs() {
        let read = read_params(&json!({"sessionId": "s", "path": "/w/a", "line": 3, "limit": 2}))
            .expect("valid");
        assert_eq!(
            read,
            Read {
                path: "/w/a".into(),
                line: Some(3),
                limit: Some(2)
            }
        );
        for bad in [
            json!({"path": ""}),
            json!({"path": 1}),
            json!({"path": "a\nb"}),
            json!({"path": "a", "line": 0}),
            json!({"path": "a", "limit": -1}),
            json!({"path": "a", "line": "2"}),
        ] {
            let refused = read_params(&bad).expect_err(&bad.to_string());
            assert_eq!(refused.code, INVALID_PARAMS, "{bad}");
        }
        let write = write_params(&json!({"path": "a", "content": "x"})).expect("valid");
        assert_eq!(write.content, "x");
        assert!(write_params(&json!({"path": "a"})).is_err());
        let huge = "x".repeat(MAX_FILE_BYTES + 1);
        assert!(write_params(&json!({"path": "a", "content": huge})).is_err());
    }
}
