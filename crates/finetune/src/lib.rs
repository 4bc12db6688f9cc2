//! Fine-tuning for dialogue: chat data rendered through the model's chat template with a
//! per-token assistant mask ([`chat`]), supervised fine-tuning (full or LoRA) and DPO on the
//! training loop of `tinyllama-train`.

pub mod chat;
pub mod demo;
pub mod run;
