//! Chat data for fine-tuning: JSONL in the common formats (OpenAI messages, ShareGPT, Alpaca,
//! preference pairs), converted on read; rendered through the model's chat template with a
//! per-token assistant mask; fitted to `seq_len` and laid out in rows for the trainer.
//!
//! * [`formats`]: one line into messages, or why not;
//! * [`report`]: counts by reason with the first `path:line`, a table and a JSON form;
//! * [`render`]: template + tokenizer -> tokens and assistant mask;
//! * [`rows`]: truncation, packing, the trainer's rows, preference pairs;
//! * [`split`]: the deterministic validation split;
//! * [`load`]: files in, rows (or pairs) and a report out.

pub mod formats;
pub mod load;
pub mod render;
pub mod report;
pub mod rows;
pub mod split;

pub use formats::{parse_line, Problem, Record};
pub use load::{
    load_preferences, load_preferences_with_validation, load_sft, load_sft_with_validation,
    read_conversations, read_preference_records, Validation,
};
pub use render::{render, render_marking_from, reply_spans, Rendered, TrainOn};
pub use report::{DataReport, Malformed, MalformedCount};
pub use rows::{
    build_preferences, build_sft, pair_rows, row_from_segments, rows_from_rendered,
    sft_rows_from_conversations, ChatOptions, Conversation, Overflow, PreferenceData,
    PreferencePair, PreferenceRecord, Row, SftData, PAD_INPUT_ID,
};
pub use split::{messages_key, split_validation};
pub use tinyllama_infer::chat_template::{ChatTemplate, Message};
pub use tinyllama_model::tokenizer::Tokenizer;
