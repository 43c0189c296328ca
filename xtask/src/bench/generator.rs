//! Placeholder until the generator benchmark lands; it refuses to run rather than print numbers.

use anyhow::{bail, Result};
use clap::Args;
use std::path::Path;

#[derive(Args)]
pub struct GeneratorArgs {}

pub fn run(_root: &Path, _python: &Path, _args: GeneratorArgs) -> Result<()> {
    bail!("`cargo xtask bench generator` is not implemented yet")
}
