//! Everything about a Llama-2-architecture model that is independent of where it runs:
//! its configuration ([`ModelConfig`]), named presets, the list of parameter tensors and their
//! Hugging Face names ([`params`]), TinyLlama's initialisation, Hugging Face directory I/O
//! ([`hf`]) and the tokenizer wrapper ([`tokenizer`]).

pub mod atomic;
pub mod config;
pub mod hf;
pub mod params;
pub mod peft;
pub mod presets;
pub mod rng;
pub mod tokenizer;

pub use config::ModelConfig;
pub use params::{HostWeights, ParamKind, ParamSpec};
