//! One module per subcommand. Each parses nothing itself beyond its clap arguments and calls
//! into the library crates.

pub mod data;
pub mod info;
pub mod tokenizer;
