//! Reading inputs. Readers run on a few I/O threads and only split the byte stream into raw
//! records (lines, rows, files); parsing, UTF-8 handling and NFC happen in [`parse`] on the
//! worker pool. Every raw record becomes exactly one document or one counted rejection, and
//! problems that are not records (an unreadable file, a truncated stream) are reported as
//! [`FileProblem`]s with their `file:line`.

pub mod discover;
pub mod lines;
pub mod parquet;
pub mod parse;

pub use discover::{discover, discover_counting, InputFile};
pub use parse::{parse, Parsed, SourceCtx};

use crate::config::{Format, SourceConfig};
use crate::progress::Progress;
use anyhow::Result;

/// One record as read from disk, before parsing.
#[derive(Debug)]
pub struct RawRecord {
    /// 1-based line (or row) of the record's start.
    pub line: u64,
    pub payload: Payload,
}

#[derive(Debug)]
pub enum Payload {
    /// A jsonl line.
    Json(Vec<u8>),
    /// Raw text (text, lines and paragraphs formats).
    Text(Vec<u8>),
    /// A parquet row.
    Row(Box<Row>),
    /// A whitespace-only jsonl line: not a document, counted.
    Blank,
    /// A record that could not be read; it is counted as a rejection under `reason`.
    Bad {
        reason: &'static str,
        bytes: u64,
        detail: String,
    },
    /// `count` records known to exist (from parquet metadata) that could not be read at all.
    Lost { reason: &'static str, count: u64 },
}

#[derive(Debug, Default)]
pub struct Row {
    /// None when the text column is null.
    pub text: Option<Vec<u8>>,
    pub id: Option<String>,
    pub url: Option<String>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The row matched an `exclude` rule.
    pub excluded: bool,
    /// The text column does not exist in this file.
    pub no_text_column: bool,
}

/// A problem with a file that is not a document.
#[derive(Debug, Clone)]
pub struct FileProblem {
    pub reason: &'static str,
    /// 1-based line/row where it happened; 0 for the whole file.
    pub line: u64,
    pub detail: String,
}

/// Limits shared by all readers.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub max_record_bytes: usize,
    pub batch_docs: usize,
    pub batch_bytes: usize,
}

/// Reads `file`, calling `sink` with batches of raw records in file order. Returns the
/// input problems found; an `Err` means the sink failed (e.g. an output could not be written).
pub fn read_file(
    file: &InputFile,
    src: &SourceConfig,
    limits: ReadLimits,
    progress: &Progress,
    sink: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
) -> Result<Vec<FileProblem>> {
    match file.format {
        Format::Parquet => parquet::read_parquet(file, src, limits, progress, sink),
        f => lines::read_lines_format(file, f, limits, progress, sink),
    }
}
