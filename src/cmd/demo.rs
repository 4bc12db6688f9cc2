//! `tinyllama pretrain` with no arguments: the embedded demo (see `tinyllama_demo`).

use anyhow::Result;
use std::path::Path;
use tinyllama_demo::{describe, run as run_demo, DemoOptions};

pub fn run(dir: &Path, steps: u64, seed: u64) -> Result<()> {
    let opts = DemoOptions {
        seed,
        steps,
        ..DemoOptions::new(dir)
    };
    let s = run_demo(&opts)?;
    println!("{}", describe(&s, dir));
    Ok(())
}
