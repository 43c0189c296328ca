//! Placeholder until the retriever benchmark lands; it refuses to run rather than print numbers.

use anyhow::{bail, Result};
use clap::Args;
use std::path::Path;

#[derive(Args)]
pub struct RetrieverArgs {}

pub fn run(_root: &Path, _python: &Path, _args: RetrieverArgs) -> Result<()> {
    bail!("`cargo xtask bench retriever` is not implemented yet")
}
