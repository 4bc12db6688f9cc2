//! The embedded demo (`tinyllama pretrain` with no arguments); assembled from the synthetic
//! corpus generator, the data pipeline, the trainer and the evaluator.

use anyhow::{bail, Result};
use std::path::Path;

pub fn run(_dir: &Path, _seconds: u64, _seed: u64) -> Result<()> {
    bail!("the embedded demo is not assembled in this build yet; pass --config RUN.toml")
}
