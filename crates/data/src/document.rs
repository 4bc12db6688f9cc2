//! The unit every stage works on.

use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Document {
    /// From the source's `id_field`, when it has one.
    pub id: Option<String>,
    pub text: String,
    /// The source's name.
    pub source: Arc<str>,
    pub file: Arc<Path>,
    /// 1-based line (jsonl, lines, paragraphs: the first line), row (parquet) or 1 (text).
    pub line: u64,
    pub url: Option<String>,
    /// The source's `meta_fields`, by field path.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl Document {
    /// `file:line`, the location used in reports and errors.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}
