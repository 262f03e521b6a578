//! What a prompt may ask of git. The provider exists so that a prompt can drive git without a
//! shell; git itself can run arbitrary programs (aliases with `!`, `core.sshCommand`,
//! `core.pager`, `core.fsmonitor`, hooks, `--upload-pack`, `rebase --exec`, …), so every
//! argument list is checked against allow-lists before git starts: subcommands and global
//! options are allowed by name, config keys set from the prompt by name, and the few
//! subcommand options that name a program or a directory of programs are refused. Arguments
//! are also refused when they name a path outside the workspace (absolute or with a `..`
//! component). The check is lexical: what git reads from configuration written by another
//! provider is outside what this module sees (see docs/providers.md, "Threat model").

use std::fmt;

/// Why an argument list is refused; shown to the caller as the command's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No subcommand after the global options.
    NoSubcommand,
    /// The subcommand is not on the allow-list.
    Subcommand(String),
    /// A global option (before the subcommand) that is not on the allow-list.
    GlobalOption(String),
    /// A `-c key=value` or `git config` write of a key that is not on the allow-list.
    ConfigKey(String),
    /// An option of the subcommand that names a program or would load one.
    Option { subcommand: String, option: String },
    /// A sub-action that runs a command (`bisect run`, `submodule foreach`).
    Action { subcommand: String, action: String },
    /// An argument that names a path outside the workspace.
    PathOutside(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSubcommand => f.write_str("the prompt names no git subcommand"),
            Self::Subcommand(name) => write!(
                f,
                "`{name}` is not a git command this provider runs (allowed: {})",
                SUBCOMMANDS.join(", ")
            ),
            Self::GlobalOption(option) => write!(
                f,
                "the global option `{option}` is refused (allowed: {}, and -c with a key from: {})",
                GLOBAL_FLAGS.join(", "),
                SAFE_CONFIG_KEYS.join(", ")
            ),
            Self::ConfigKey(key) => write!(
                f,
                "setting the config key `{key}` is refused (allowed: {})",
                SAFE_CONFIG_KEYS.join(", ")
            ),
            Self::Option { subcommand, option } => write!(
                f,
                "`git {subcommand} {option}` is refused: the option can make git run a program"
            ),
            Self::Action { subcommand, action } => write!(
                f,
                "`git {subcommand} {action}` is refused: it runs a command of the prompt's choosing"
            ),
            Self::PathOutside(arg) => write!(
                f,
                "`{arg}` names a path outside the workspace (absolute or with `..`); only paths inside it are allowed"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Subcommands a prompt may run. Left out: those that start other programs by design
/// (`difftool`, `mergetool`, `filter-branch`, `send-email`, `instaweb`, `web--browse`,
/// `help`, `daemon`, `shell`), `archive` (`--exec`, output anywhere) and plumbing nobody
/// needs from a prompt.
pub const SUBCOMMANDS: &[&str] = &[
    "add",
    "am",
    "apply",
    "bisect",
    "blame",
    "branch",
    "cat-file",
    "check-ignore",
    "checkout",
    "cherry",
    "cherry-pick",
    "clean",
    "clone",
    "commit",
    "config",
    "count-objects",
    "describe",
    "diff",
    "fetch",
    "for-each-ref",
    "format-patch",
    "fsck",
    "gc",
    "grep",
    "init",
    "log",
    "ls-files",
    "ls-remote",
    "ls-tree",
    "merge",
    "merge-base",
    "mv",
    "notes",
    "pull",
    "push",
    "range-diff",
    "rebase",
    "reflog",
    "remote",
    "reset",
    "restore",
    "rev-list",
    "rev-parse",
    "revert",
    "rm",
    "shortlog",
    "show",
    "show-ref",
    "stash",
    "status",
    "submodule",
    "switch",
    "symbolic-ref",
    "tag",
    "version",
    "worktree",
];

/// Global options (before the subcommand) that change nothing about what git executes.
pub const GLOBAL_FLAGS: &[&str] = &[
    "--no-pager",
    "-P",
    "--no-replace-objects",
    "--literal-pathspecs",
    "--glob-pathspecs",
    "--noglob-pathspecs",
    "--icase-pathspecs",
    "--no-optional-locks",
    "--no-advice",
    "--version",
];

/// Config keys a prompt may set (`-c key=value`, `git config key value`): identities and
/// behaviour switches, none of which names a program, a path or a URL rewrite.
pub const SAFE_CONFIG_KEYS: &[&str] = &[
    "user.name",
    "user.email",
    "author.name",
    "author.email",
    "committer.name",
    "committer.email",
    "init.defaultbranch",
    "color.ui",
    "core.quotepath",
    "core.autocrlf",
    "advice.detachedhead",
    "pull.rebase",
    "pull.ff",
    "merge.ff",
    "push.default",
    "push.autosetupremote",
    "fetch.prune",
    "rebase.autosquash",
    "commit.gpgsign",
    "tag.gpgsign",
];

/// Long options refused in every subcommand: each names a program, a directory whose hooks
/// git would install, or reads outside the repository. Matched by prefix too, since git
/// accepts any unambiguous abbreviation of a long option.
const REFUSED_LONG: &[&str] = &[
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--exec-path",
    "--template",
    "--config",
    "--config-env",
    "--open-files-in-pager",
    "--ext-diff",
    "--extcmd",
    "--tool",
    "--no-index",
    "--unsafe-paths",
    "--separate-git-dir",
    "--reference",
    "--reference-if-able",
    "--help",
];

/// Short options refused per subcommand (also inside a cluster such as `-qx`).
const REFUSED_SHORT: &[(&str, &[char])] =
    &[("clone", &['u', 'c']), ("rebase", &['x']), ("grep", &['O'])];

/// Sub-actions (the first word after the subcommand) that run a command.
const REFUSED_ACTIONS: &[(&str, &str)] = &[("bisect", "run"), ("submodule", "foreach")];

/// Checks `args` (git's arguments, without `git`) against the allow-lists.
pub fn check(args: &[String]) -> Result<(), Refusal> {
    let mut rest = args;
    while let Some((word, tail)) = rest.split_first() {
        if !word.starts_with('-') {
            break;
        }
        rest = tail;
        if word == "-c" {
            let (setting, tail) = rest
                .split_first()
                .ok_or_else(|| Refusal::GlobalOption(word.clone()))?;
            let key = setting.split_once('=').map_or(setting.as_str(), |(k, _)| k);
            config_key_allowed(key)?;
            rest = tail;
        } else if !GLOBAL_FLAGS.contains(&word.as_str()) {
            return Err(Refusal::GlobalOption(word.clone()));
        }
    }
    let Some((subcommand, sub_args)) = rest.split_first() else {
        // `git --version` alone is fine; anything else names no subcommand.
        return if args.iter().any(|a| a == "--version") {
            Ok(())
        } else {
            Err(Refusal::NoSubcommand)
        };
    };
    if !SUBCOMMANDS.contains(&subcommand.as_str()) {
        return Err(Refusal::Subcommand(subcommand.clone()));
    }
    check_subcommand(subcommand, sub_args)
}

fn check_subcommand(subcommand: &str, args: &[String]) -> Result<(), Refusal> {
    let refused_short = REFUSED_SHORT
        .iter()
        .find(|(name, _)| *name == subcommand)
        .map_or(&[][..], |(_, letters)| *letters);
    let mut options_end = false;
    for word in args {
        if options_end || !word.starts_with('-') || word == "-" {
            path_inside(word)?;
            continue;
        }
        if word == "--" {
            options_end = true;
        } else if let Some(long) = word.strip_prefix("--") {
            let (name, value) = long.split_once('=').unwrap_or((long, ""));
            let given = format!("--{name}");
            if REFUSED_LONG.iter().any(|r| r.starts_with(&given)) {
                return Err(Refusal::Option {
                    subcommand: subcommand.to_owned(),
                    option: given,
                });
            }
            path_inside(value)?;
        } else if word.chars().skip(1).any(|c| refused_short.contains(&c)) {
            return Err(Refusal::Option {
                subcommand: subcommand.to_owned(),
                option: word.clone(),
            });
        }
    }
    let first = args.iter().find(|a| !a.starts_with('-'));
    if let Some(action) = first
        && REFUSED_ACTIONS.contains(&(subcommand, action.as_str()))
    {
        return Err(Refusal::Action {
            subcommand: subcommand.to_owned(),
            action: action.clone(),
        });
    }
    if subcommand == "config" {
        check_config(args)?;
    }
    Ok(())
}

/// `git config`: reading any key is fine; writing only a key from [`SAFE_CONFIG_KEYS`], and
/// only through the plain forms (no `--file`, `--blob`, `--edit`, includes or other scopes).
fn check_config(args: &[String]) -> Result<(), Refusal> {
    const READ_OPTIONS: &[&str] = &[
        "--get",
        "--get-all",
        "--get-regexp",
        "--list",
        "-l",
        "--show-origin",
        "--show-scope",
        "--name-only",
        "--null",
        "-z",
        "--bool",
        "--int",
        "--local",
        "--global",
    ];
    const WRITE_OPTIONS: &[&str] = &["--add", "--unset", "--unset-all", "--replace-all"];
    let mut positional = Vec::new();
    let mut writes = false;
    for word in args {
        if !word.starts_with('-') {
            positional.push(word.as_str());
        } else if WRITE_OPTIONS.contains(&word.as_str()) {
            writes = true;
        } else if !READ_OPTIONS.contains(&word.as_str()) {
            return Err(Refusal::Option {
                subcommand: "config".into(),
                option: word.clone(),
            });
        }
    }
    // Newer git spells actions as words: `git config set|unset|get|list …`.
    let (action, keys) = match positional.split_first() {
        Some((&verb @ ("set" | "unset" | "get" | "list"), rest)) => (Some(verb), rest),
        _ => (None, &positional[..]),
    };
    let writes = match action {
        Some(verb) => matches!(verb, "set" | "unset"),
        None => writes || keys.len() > 1,
    };
    if let (true, Some(key)) = (writes, keys.first()) {
        config_key_allowed(key)?;
    }
    Ok(())
}

fn config_key_allowed(key: &str) -> Result<(), Refusal> {
    if SAFE_CONFIG_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
        Ok(())
    } else {
        Err(Refusal::ConfigKey(key.to_owned()))
    }
}

/// Refuses a word that names a path outside the workspace: absolute, or with a `..`
/// component. URLs (`scheme://…`) are left to git's protocol allow-list.
fn path_inside(word: &str) -> Result<(), Refusal> {
    if word.contains("://") {
        return Ok(());
    }
    if word.starts_with('/') || word.starts_with('~') || word.split('/').any(|c| c == "..") {
        return Err(Refusal::PathOutside(word.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        crate::split::split(line).expect("splits")
    }

    fn refused(line: &str) -> Refusal {
        check(&words(line)).expect_err(line)
    }

    #[test]
    fn everyday_commands_pass() {
        for line in [
            "status --short",
            "-c user.name='A B' -c user.email=a@b commit -q --allow-empty -m 'x; y'",
            "log --oneline -n 3 HEAD~2..HEAD",
            "diff HEAD^ -- src/lib.rs",
            "--no-pager log --format=%s|%an",
            "config user.name 'A B'",
            "config --get core.pager",
            "config --list",
            "config set user.email a@b",
            "clone https://example.com/r.git sub/r",
            "rebase -i --autosquash main",
            "grep -n needle",
            "--version",
            "push --no-exec origin main",
        ] {
            assert_eq!(check(&words(line)), Ok(()), "{line}");
        }
    }

    #[test]
    fn options_that_run_programs_are_refused() {
        assert_eq!(
            refused("-c alias.pwn='!id' pwn"),
            Refusal::ConfigKey("alias.pwn".into())
        );
        for key in [
            "core.sshCommand",
            "core.pager",
            "core.fsmonitor",
            "core.hooksPath",
            "include.path",
        ] {
            assert_eq!(
                refused(&format!("-c {key}=x status")),
                Refusal::ConfigKey(key.into())
            );
            assert_eq!(
                refused(&format!("config {key} x")),
                Refusal::ConfigKey(key.into())
            );
        }
        for line in [
            "clone --upload-pack=touch${IFS}x https://h/r",
            "clone -u 'touch x' https://h/r",
            "clone -qc core.fsmonitor=x https://h/r",
            "clone --template=t https://h/r",
            "fetch --upload-p=x origin",
            "push --receive-pack=x origin",
            "push --exec=x origin",
            "rebase --exec id main",
            "rebase -ix id main",
            "grep -O needle",
            "grep --open-files-in-pager=id needle",
            "diff --ext-diff",
            "diff --no-index a b",
            "log --help",
            "config --file x core.pager y",
        ] {
            assert!(
                matches!(refused(line), Refusal::Option { .. }),
                "{line} allowed"
            );
        }
    }

    #[test]
    fn global_options_subcommands_and_paths_outside_are_refused() {
        for line in [
            "-C /tmp status",
            "--git-dir=.git status",
            "--work-tree /etc status",
            "--exec-path=/x status",
            "--config-env=core.pager=X status",
            "-p log",
        ] {
            assert!(
                matches!(refused(line), Refusal::GlobalOption(_)),
                "{line} allowed"
            );
        }
        for name in ["difftool", "mergetool", "filter-branch", "help", "pwn"] {
            assert_eq!(refused(name), Refusal::Subcommand(name.into()));
        }
        assert!(matches!(refused("bisect run id"), Refusal::Action { .. }));
        assert!(matches!(
            refused("submodule --quiet foreach id"),
            Refusal::Action { .. }
        ));
        for line in [
            "clone https://h/r /tmp/x",
            "worktree add ../outside",
            "commit -F /etc/passwd",
            "blame --contents=/etc/passwd f",
        ] {
            assert!(
                matches!(refused(line), Refusal::PathOutside(_)),
                "{line} allowed"
            );
        }
        assert_eq!(refused("-q"), Refusal::GlobalOption("-q".into()));
        assert_eq!(refused("--no-pager"), Refusal::NoSubcommand);
    }
}
