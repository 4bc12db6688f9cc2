//! Inference on top of the engine's model definition: chat prompt formats, a batched decode
//! runtime whose weights may be f32, bf16, Q8_0 or Q4_0, sequence stepping with sampling,
//! speculative decoding and continuous batching, and GGUF export.

pub mod chat_template;
pub mod conversation;
pub mod kernels;
pub mod linear;
pub mod model;
pub mod ops;
pub mod quant;
pub mod simd;
pub mod stop;
pub mod text;

pub use chat_template::{ChatTemplate, Message};
pub use model::{DecodeModel, KvState, SeqInput};
pub use quant::WeightFormat;
pub mod generate;
pub mod runner;
pub mod speculative;

pub use runner::{token_logprob, Draft, Finish, GenParams, Runner, Sequence, TokenLogprob};
pub mod batch;
pub mod bench;
pub mod gguf;
pub mod loader;
pub mod perplexity;
#[doc(hidden)]
pub mod testutil;
