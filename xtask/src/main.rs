//! `cargo xtask`: every developer task of ragtune, from set-up on a fresh machine to benchmarks.
//!
//! xtask never links tch: it is what installs libtorch before anything can link it.

mod bench;
mod setup;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up, demo, tests and benchmarks for ragtune"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Create .venv with torch 2.11.0 and the reference libraries, and fetch the assets (idempotent).
    Setup,
    /// Run the main job on the bundled default: the pipeline of configs/demo.toml (the FAQ,
    /// all-MiniLM-L6-v2 and SmolLM2): tune the retriever, tune the generator on its passages,
    /// evaluate the 2×2 and write runs/demo/report.html.
    Demo {
        /// Extra arguments passed to `ragtune pipeline` (`--set`, `--from`, `--only`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run an experiment's pipeline: `cargo xtask pipeline configs/<name>.toml [--from STAGE]
    /// [--only STAGE] [--set section.key=value]...`.
    Pipeline {
        config: PathBuf,
        /// Extra arguments passed to `ragtune pipeline`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: formatting, then the whole workspace's tests (parity tests call the venv's Python).
    Test {
        /// Also run clippy with warnings denied.
        #[arg(long)]
        lint: bool,
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run fmt --check and clippy -D warnings over the workspace.
    Lint,
    /// Benchmarks that run ragtune and its Python peer side by side and print ratios.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Setup => setup::run(&root).map(|_| ()),
        Task::Demo { args } => pipeline(&root, Path::new("configs/demo.toml"), &args),
        Task::Pipeline { config, args } => pipeline(&root, &config, &args),
        Task::Test { lint, args } => {
            setup::run(&root)?;
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            if lint {
                clippy(&root)?;
            }
            let mut test_args = vec!["test", "--workspace", "--exclude", "xtask"];
            test_args.extend(args.iter().map(String::as_str));
            cargo(&root, &test_args)?;
            cargo(&root, &["test", "-p", "xtask"])
        }
        Task::Lint => {
            setup::run(&root)?;
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            clippy(&root)
        }
        Task::Bench { which } => {
            let python = setup::run(&root)?;
            cargo(&root, &["build", "--release", "-p", "ragtune-cli"])?;
            bench::run(&root, &python, which)
        }
    }
}

/// Set-up, a release build, then `ragtune pipeline` (xtask never links tch: it drives the binary).
fn pipeline(root: &Path, config: &Path, args: &[String]) -> Result<()> {
    setup::run(root)?;
    cargo(root, &["build", "--release", "-p", "ragtune-cli"])?;
    let bin = root.join("target/release/ragtune");
    let mut cmd = Command::new(&bin);
    cmd.arg("pipeline")
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(root);
    run(
        &mut cmd,
        &format!("ragtune pipeline --config {}", config.display()),
    )
}

fn clippy(root: &Path) -> Result<()> {
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest_dir
        .parent()
        .context("xtask lives one level below the workspace root")?
        .to_path_buf())
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root);
    run(&mut cmd, &format!("cargo {}", args.join(" ")))
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}
