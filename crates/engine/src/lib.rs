//! The Llama engine: explicit forward and backward passes of every layer (in the manner of
//! llm.c, no autograd graph), written once against the [`backend::Backend`] trait, with a CPU
//! backend. Activations live in buffers allocated once per (batch, sequence) shape.

pub mod backend;
pub mod cpu;
pub mod generate;
pub mod infer;
pub mod llama;
pub mod lora;
pub mod profile;
pub mod real;
pub mod sampling;
pub mod score;

pub use backend::{AttnShape, Backend, BufKind};
pub use cpu::CpuBackend;
pub use llama::{Activations, Llama};
pub use lora::{Lora, LoraConfig, LoraTarget};
pub use score::{RowTarget, TokenScore};
