//! `tinyllama`: one binary from raw corpora to a trained, evaluated, servable model.
//! This file only parses arguments and dispatches; every command lives in `cmd/` as a thin
//! shell over the library crates.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "tinyllama", version, about = "Pre-train, evaluate and serve Llama-2-architecture language models", long_about = None)]
struct Cli {
    /// Worker threads for CPU compute (default: all cores; at most 4 per core, between 64 and
    /// 1024).
    #[arg(long, global = true, env = "TINYLLAMA_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train a model (no arguments: the embedded demo, end to end).
    Pretrain(Box<cmd::pretrain::PretrainArgs>),
    /// Fine-tune a Hugging Face model on chat data: SFT (full or LoRA) or DPO; no config runs
    /// the embedded demo.
    Finetune(Box<cmd::finetune::FinetuneArgs>),
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

/// Lets `--x -1` reach the option's parser, which then says why -1 is not accepted, instead
/// of clap reading `-1` as an unknown flag ("unexpected argument '-1'").
fn allow_negative_numbers(c: clap::Command) -> clap::Command {
    c.allow_negative_numbers(true)
        .mut_subcommands(allow_negative_numbers)
}

/// Most worker threads `--threads` accepts: beyond a few per core they only add overhead,
/// and a typo like 100000 would try to spawn that many.
fn max_threads(cores: usize) -> usize {
    (4 * cores).clamp(64, 1024)
}

fn main() {
    let matches = allow_negative_numbers(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if let Some(t) = cli.threads {
        if t == 0 || t > max_threads(cores) {
            eprintln!(
                "error: --threads (or TINYLLAMA_THREADS) must be in 1..={} ({cores} cores here), got {t}",
                max_threads(cores)
            );
            std::process::exit(2);
        }
    }
    let threads = cli.threads.unwrap_or(cores);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        eprintln!("warning: could not size the thread pool: {e}");
    }
    let result = match cli.command {
        Command::Info(a) => cmd::info::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(*a),
        Command::Finetune(a) => cmd::finetune::run(*a),
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
