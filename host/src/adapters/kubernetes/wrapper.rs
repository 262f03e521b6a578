//! The small shell wrapper every command runs under inside the pod.
//!
//! Closing an exec stream does not kill the remote process, and the exec API has no signal
//! call, so the wrapper starts the program as the leader of a new process group (`setsid`),
//! records that group's id in a file, and later a second exec kills the group through it.
//!
//! A process can leave that group (`setsid`, daemonizing), so the program also starts with a
//! tag in its environment, `RDEV_PROCESS_TAG=k8s:<pod-uid>:<executor>:<spawn>`, which every
//! descendant inherits; `sweep` kills every process of the pod whose `/proc/<pid>/environ`
//! carries a tag (a process that scrubs its environment, or runs as another user, escapes).
//! When the program ends the wrapper kills its group and its tag; a kill by signal exec does
//! the same; and before starting a program the wrapper kills what other executors (an rdev
//! that died) left in the pod, when the executor says that is safe.
//!
//! The environment travels on stdin ahead of the program's own input, never on the command
//! line: the exec command line is part of the request URL, which API servers write to audit
//! logs, and it would show in the pod's process list. `read` in `sh` consumes stdin one byte
//! at a time, so everything after the header reaches the program untouched.
//!
//! Before starting the program the wrapper answers with one byte on stdout: `R` once the
//! group id is recorded (the program's own output follows), `D` when the working directory
//! does not exist, `E` when the program is not found. The executor consumes that byte, so
//! spawn fails like a local spawn does and a signal sent right after spawn finds the group.

/// `sweep KILL SPARE` SIGKILLs every process whose environment holds `RDEV_PROCESS_TAG=KILL…`
/// but not `RDEV_PROCESS_TAG=SPARE…` (empty: spare none), until none is left. The wrapper
/// never exports a tag itself, so neither it nor its `grep` match.
macro_rules! sweep_function {
    () => {
        r#"sweep() {
  r=0
  while [ "$r" -lt 100 ]; do
    found=
    for f in $(grep -l -F -e "RDEV_PROCESS_TAG=$1" /proc/[0-9]*/environ 2>/dev/null); do
      [ -n "$2" ] && grep -q -F -e "RDEV_PROCESS_TAG=$2" "$f" 2>/dev/null && continue
      p=${f#/proc/}; p=${p%/environ}
      kill -KILL "$p" 2>/dev/null && found=1
    done
    [ -n "$found" ] || return 0
    r=$((r+1))
  done
}
"#
    };
}

/// `$0` is a label; `$1` the pid file, `$2` the working directory, `$3` the spawn's tag, `$4`
/// the pod's tag prefix whose other executors' processes are leftovers to kill first (empty:
/// none), then program and args. Needs `sh`, `grep` and util-linux `setsid` (with `-w`).
pub(super) const SCRIPT: &str = concat!(
    sweep_function!(),
    r#"pidfile=$1; dir=$2; tag=$3; scope=$4; shift 4
IFS= read -r n || exit 125
i=0
while [ "$i" -lt "$n" ]; do
  IFS= read -r k || exit 125
  IFS= read -r c || exit 125
  v=; j=0
  while [ "$j" -lt "$c" ]; do
    IFS= read -r l || exit 125
    if [ "$j" -eq 0 ]; then v=$l; else v="$v
$l"; fi
    j=$((j+1))
  done
  export "$k=$v"
  i=$((i+1))
done
[ -n "$HOME" ] && mkdir -p -- "$HOME" 2>/dev/null
cd -- "$dir" 2>/dev/null || { printf D; exit 126; }
command -v "$1" >/dev/null 2>&1 || { printf E; exit 127; }
[ -n "$scope" ] && sweep "$scope" "${tag%:*}:"
RDEV_PROCESS_TAG=$tag setsid -w sh -c 'echo "$$" > "$0" && printf R && exec "$@"' "$pidfile" "$@"
st=$?
pg=$(cat -- "$pidfile" 2>/dev/null) && [ -n "$pg" ] && kill -KILL -"$pg" 2>/dev/null
sweep "$tag" ""
rm -f -- "$pidfile"
exit "$st"
"#
);

/// `$1` the pid file, `$2` the signal name, `$3` the spawn's tag: the group gets the signal;
/// a kill also reaches every process carrying the tag. A group that is gone is no error.
pub(super) const SIGNAL_SCRIPT: &str = concat!(
    sweep_function!(),
    r#"[ "$2" = KILL ] && sweep "$3" ""
pg=$(cat -- "$1" 2>/dev/null) || exit 0
[ -n "$pg" ] || exit 0
kill -"$2" -"$pg" 2>/dev/null
exit 0
"#
);

/// The answer byte that precedes the program's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handshake {
    Started,
    NoDirectory,
    NotFound,
}

impl Handshake {
    pub(super) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'R' => Some(Self::Started),
            b'D' => Some(Self::NoDirectory),
            b'E' => Some(Self::NotFound),
            _ => None,
        }
    }
}

/// Whether `key` can be exported by `sh`.
pub(super) fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The stdin header: the variable count, then per variable its name, its line count and
/// its lines (values may hold newlines; `sh` cannot carry NUL in the environment anyway).
pub(super) fn env_header(env: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{}\n", env.len());
    for (key, value) in env {
        let lines: Vec<&str> = value.split('\n').collect();
        out.push_str(key);
        out.push('\n');
        out.push_str(&lines.len().to_string());
        out.push('\n');
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// Joins the workspace root and a relative working directory, refusing anything that could
/// leave the workspace lexically (`..`, absolute paths). Symlinks inside the pod cannot be
/// checked from here; the pod is the sandbox.
pub(super) fn working_dir(root: &str, relative: Option<&str>) -> Result<String, String> {
    let Some(relative) = relative.filter(|r| !r.is_empty() && *r != ".") else {
        return Ok(root.to_owned());
    };
    if relative.starts_with('/') {
        return Err(format!("working directory {relative:?} is absolute"));
    }
    let mut parts = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "working directory {relative:?} leaves the workspace"
                ));
            }
            part => parts.push(part),
        }
    }
    Ok(format!(
        "{}/{}",
        root.trim_end_matches('/'),
        parts.join("/")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs the real wrapper under the system `sh` with `input` on stdin.
    fn run_wrapper(dir: &str, program: &[&str], input: &[u8]) -> (i32, Vec<u8>) {
        let pidfile = tempfile::NamedTempFile::new().expect("pidfile");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("rdev-exec")
            .arg(pidfile.path())
            .arg(dir)
            .args(["k8s:test-pod:0000:1", ""])
            .args(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
        let output = child.wait_with_output().expect("wait");
        (output.status.code().expect("exit code"), output.stdout)
    }

    #[test]
    fn env_with_newlines_and_the_rest_of_stdin_reach_the_program() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = vec![
            ("A".to_owned(), "two\nlines\n".to_owned()),
            ("B".to_owned(), String::new()),
            ("C".to_owned(), "x=y $z 'q'".to_owned()),
        ];
        let mut input = env_header(&env);
        input.extend_from_slice(b"rest of stdin\n");
        let script = r#"printf '%s|%s|%s|' "$A" "$B" "$C"; cat"#;
        let (code, out) = run_wrapper(
            tmp.path().to_str().expect("utf-8"),
            &["sh", "-c", script],
            &input,
        );
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "Rtwo\nlines\n||x=y $z 'q'|rest of stdin\n"
        );
    }

    #[test]
    fn missing_directory_and_program_answer_before_starting() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_str().expect("utf-8");
        let (code, out) = run_wrapper(&format!("{root}/nope"), &["true"], b"0\n");
        assert_eq!((code, out), (126, b"D".to_vec()));
        let (code, out) = run_wrapper(root, &["rdev-no-such-program"], b"0\n");
        assert_eq!((code, out), (127, b"E".to_vec()));
        let (code, out) = run_wrapper(root, &["sh", "-c", "exit 4"], b"0\n");
        assert_eq!((code, out), (4, b"R".to_vec()));
    }

    #[test]
    fn keys_and_working_dirs_are_checked() {
        assert!(valid_key("PATH") && valid_key("_x1"));
        assert!(!valid_key("1A") && !valid_key("A-B") && !valid_key("") && !valid_key("A B"));
        assert_eq!(working_dir("/ws", None).as_deref(), Ok("/ws"));
        assert_eq!(
            working_dir("/ws/", Some("a/./b/")).as_deref(),
            Ok("/ws/a/b")
        );
        assert!(working_dir("/ws", Some("../x")).is_err());
        assert!(working_dir("/ws", Some("a/../../x")).is_err());
        assert!(working_dir("/ws", Some("/etc")).is_err());
    }
}
