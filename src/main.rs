//! `tinyllama`: one binary from raw corpora to a trained, evaluated, servable model.
//! This file only parses arguments and dispatches; every command lives in `cmd/` as a thin
//! shell over the library crates.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "tinyllama", version, about = "Pre-train, evaluate and serve Llama-2-architecture language models", long_about = None)]
struct Cli {
    /// Worker threads for CPU compute (default: all cores).
    #[arg(long, global = true, env = "TINYLLAMA_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's configuration, parameter count, dtype and memory estimate.
    Info(cmd::info::InfoArgs),
    /// Data pipeline: prepare (end to end), filter, dedup, tokenize, inspect, bench.
    Data(cmd::data::DataArgs),
    /// Tokenizer training.
    Tokenizer(cmd::tokenizer::TokenizerArgs),
}

fn main() {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        eprintln!("warning: could not size the thread pool: {e}");
    }
    let result = match cli.command {
        Command::Info(a) => cmd::info::run(a),
        Command::Data(a) => cmd::data::run(a),
        Command::Tokenizer(a) => cmd::tokenizer::run(a),
    };
    if let Err(e) = result {
        // One readable message with its chain of causes; never a backtrace for a user mistake.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
