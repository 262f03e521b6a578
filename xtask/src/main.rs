//! `cargo xtask …`: the project's automation entry point.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::image;
use xtask::plugins::{self, Layout};

#[derive(Parser)]
#[command(about = "rdev project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every plugin into target/plugins (and test-only guests into target/test-plugins).
    Plugins,
    /// Build the plugins and rdev, then run rdev with the built plugins (`serve` when no
    /// arguments are given).
    Run {
        /// Arguments passed to `rdev`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build rdev's container image (the `Containerfile`) with buildah: a static release
    /// binary and the bundled plugins on `scratch`, written as an OCI layout under
    /// target/image/oci and optionally pushed to a registry.
    Image {
        /// The image name [default: ghcr.io/orchard9/rdev:<workspace version>].
        #[arg(long)]
        tag: Option<String>,
        /// Put this prebuilt rdev in the image instead of building the static release one
        /// (a dynamically linked binary brings the libraries `ldd` lists).
        #[arg(long, value_name = "PATH")]
        rdev: Option<std::path::PathBuf>,
        /// Also push the image here, a buildah destination such as
        /// `docker://ghcr.io/orchard9/rdev:0.1.0` (log in first with `buildah login`).
        #[arg(long, value_name = "DESTINATION")]
        push: Option<String>,
        /// Push over plain HTTP or to a registry with an unverified certificate.
        #[arg(long)]
        insecure: bool,
    },
    /// Run every test: the guests' native unit tests, then the host workspace with nextest
    /// (plain `cargo test` when nextest is not installed).
    Test {
        /// Extra arguments for the test runner (a filter, `--no-fail-fast`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What `cargo xtask run` starts when given no arguments.
const DEFAULT_RUN_ARGS: &[&str] = &["serve"];

fn main() -> Result<ExitCode> {
    let layout = Layout::new(xtask::workspace_root());
    match Cli::parse().command {
        Task::Plugins => {
            for path in plugins::build(&layout)? {
                println!("installed {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { args } => {
            plugins::build(&layout)?;
            let args = if args.is_empty() {
                DEFAULT_RUN_ARGS.iter().map(|a| a.to_string()).collect()
            } else {
                args
            };
            let mut cmd = cargo();
            cmd.current_dir(&layout.root)
                .args(["run", "--quiet", "--package", "rdev", "--"])
                .args(&args)
                .env("RDEV_PLUGINS_DIR", layout.plugins_dir());
            run(cmd, "rdev")
        }
        Task::Image {
            tag,
            rdev,
            push,
            insecure,
        } => {
            let mut options = image::ImageOptions::new(&layout);
            if let Some(tag) = tag {
                options.tag = tag;
            }
            options.rdev = rdev;
            options.push = push;
            options.tls_verify = !insecure;
            let built = image::build(&layout, &options)?;
            println!(
                "built {} (OCI layout: {})",
                built.tag,
                built.oci_layout.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Task::Test { args } => {
            plugins::build(&layout)?;
            let mut guests = cargo();
            guests
                .current_dir(layout.root.join("plugins"))
                .env("CARGO_TARGET_DIR", layout.root.join("target/guests-native"))
                .args(["test", "--workspace", "--quiet"]);
            let code = run(guests, "guest unit tests")?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            let rdev = xtask::binary::build_rdev(&layout.root)?;
            let mut host = cargo();
            host.current_dir(&layout.root)
                .env(xtask::binary::RDEV_BIN_ENV, rdev);
            if has_nextest() {
                host.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            } else {
                host.args(["test", "--workspace", "--no-fail-fast"]);
            }
            host.args(&args);
            run(host, "host tests")
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `cmd` to completion and turns its exit status into ours.
fn run(mut cmd: Command, what: &str) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
