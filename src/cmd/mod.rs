//! One module per subcommand. Each parses nothing itself beyond its clap arguments and calls
//! into the library crates.

pub mod bench;
pub mod chat;
pub mod common;
pub mod demo;
pub mod eval;
pub mod eval_bench;
pub mod export;
pub mod finetune;
pub mod generate;
pub mod infer_opts;
pub mod info;
pub mod plan;
pub mod pretrain;
pub mod selftest;
pub mod serve;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar on stderr when it is a terminal, hidden otherwise (logs stay clean).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    if !std::io::stderr().is_terminal() {
        b.set_draw_target(ProgressDrawTarget::hidden());
    }
    b.set_style(
        ProgressStyle::with_template(
            "{prefix} {bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    b.set_prefix(what.to_string());
    b
}
pub mod data;
pub mod tokenizer;
