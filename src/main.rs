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
    /// Pre-train a model (no arguments: the embedded demo, end to end).
    Pretrain(Box<cmd::pretrain::PretrainArgs>),
    /// Generate a continuation of a prompt with KV-cache decoding.
    Generate(Box<cmd::generate::GenerateArgs>),
    /// Chat with a model in the terminal (its chat template, or the Zephyr format).
    Chat(Box<cmd::chat::ChatArgs>),
    /// Serve a model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Evaluate a model.
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// Export a checkpoint.
    #[command(subcommand)]
    Export(cmd::export::ExportCommand),
    /// Measure training and inference speed.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Show a model's configuration, parameter count, dtype and memory estimate.
    Info(cmd::info::InfoArgs),
    /// Plan a run before renting GPUs: Chinchilla-optimal size, training FLOPs, time, cost and
    /// memory per GPU.
    Plan(Box<cmd::plan::PlanArgs>),
    /// Data pipeline: prepare (end to end), filter, dedup, tokenize, inspect, bench.
    Data(cmd::data::DataArgs),
    /// Tokenizer training.
    Tokenizer(cmd::tokenizer::TokenizerArgs),
    /// Check the CUDA backend against the CPU backend, kernel by kernel, then a training step
    /// (`--compile-only`: just compile every kernel with NVRTC; no GPU needed).
    Selftest(cmd::selftest::SelftestArgs),
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
        Command::Pretrain(a) => cmd::pretrain::run(*a),
        Command::Generate(a) => cmd::generate::run(*a),
        Command::Chat(a) => cmd::chat::run(*a),
        Command::Serve(a) => cmd::serve::run(*a),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Export(c) => cmd::export::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Plan(a) => cmd::plan::run(*a),
        Command::Data(a) => cmd::data::run(a),
        Command::Tokenizer(a) => cmd::tokenizer::run(a),
        Command::Selftest(a) => cmd::selftest::run(a),
    };
    if let Err(e) = result {
        // One readable message with its chain of causes; never a backtrace for a user mistake.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
