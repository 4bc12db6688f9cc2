//! Raw record → [`Document`] or a named rejection: UTF-8 policy, JSON field extraction,
//! source `exclude` rules, NFC normalisation and the empty-document rule.

use super::{Payload, RawRecord};
use crate::config::{IngestConfig, SourceConfig, Utf8Policy};
use crate::document::Document;
use crate::normalize::nfc;
use serde_json::Value;
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

/// Per-file context for parsing.
pub struct SourceCtx<'a> {
    pub src: &'a SourceConfig,
    pub ingest: &'a IngestConfig,
    pub name: Arc<str>,
    pub file: Arc<Path>,
}

pub enum Parsed {
    Doc {
        doc: Document,
        utf8_repaired: bool,
        nfc_changed: bool,
    },
    Rejected {
        reason: &'static str,
        bytes: u64,
        /// How many records this stands for (more than 1 only for unreadable parquet rows).
        count: u64,
        detail: Option<String>,
    },
    Blank,
}

fn reject(reason: &'static str, bytes: usize) -> Parsed {
    Parsed::Rejected {
        reason,
        bytes: bytes as u64,
        count: 1,
        detail: None,
    }
}

/// Looks up a field: an exact top-level key first (keys may contain dots), then a dotted path.
pub fn get_path_mut<'v>(v: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if v.as_object()?.contains_key(path) {
        return v.as_object_mut()?.get_mut(path);
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.as_object_mut()?.get_mut(part)?;
    }
    Some(cur)
}

fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn decode_utf8(bytes: Vec<u8>, policy: Utf8Policy) -> Result<(String, bool), usize> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok((s, false)),
        Err(e) => match policy {
            Utf8Policy::Repair => Ok((String::from_utf8_lossy(e.as_bytes()).into_owned(), true)),
            Utf8Policy::Reject => Err(e.as_bytes().len()),
        },
    }
}

pub fn parse(raw: RawRecord, ctx: &SourceCtx) -> Parsed {
    let line = raw.line;
    let (text, id, url, meta, repaired) = match raw.payload {
        Payload::Blank => return Parsed::Blank,
        Payload::Bad {
            reason,
            bytes,
            detail,
        } => {
            return Parsed::Rejected {
                reason,
                bytes,
                count: 1,
                detail: Some(detail),
            }
        }
        Payload::Lost { reason, count } => {
            return Parsed::Rejected {
                reason,
                bytes: 0,
                count,
                detail: None,
            }
        }
        Payload::Text(bytes) => {
            let n = bytes.len();
            match decode_utf8(bytes, ctx.ingest.invalid_utf8) {
                Ok((s, rep)) => (s, None, None, serde_json::Map::new(), rep),
                Err(_) => return reject("input/invalid_utf8", n),
            }
        }
        Payload::Row(row) => {
            if row.excluded {
                return reject("source/excluded", row.text.as_ref().map_or(0, |t| t.len()));
            }
            let Some(bytes) = row.text else {
                return reject("input/missing_text_field", 0);
            };
            let n = bytes.len();
            match decode_utf8(bytes, ctx.ingest.invalid_utf8) {
                Ok((s, rep)) => (s, row.id, row.url, row.meta, rep),
                Err(_) => return reject("input/invalid_utf8", n),
            }
        }
        Payload::Json(bytes) => {
            let n = bytes.len();
            let (s, repaired): (Cow<str>, bool) = match std::str::from_utf8(&bytes) {
                Ok(s) => (Cow::Borrowed(s), false),
                Err(_) => match ctx.ingest.invalid_utf8 {
                    Utf8Policy::Repair => (String::from_utf8_lossy(&bytes), true),
                    Utf8Policy::Reject => return reject("input/invalid_utf8", n),
                },
            };
            let mut v: Value = match serde_json::from_str(&s) {
                Ok(v) => v,
                Err(e) => {
                    return Parsed::Rejected {
                        reason: "input/malformed_json",
                        bytes: n as u64,
                        count: 1,
                        detail: Some(e.to_string()),
                    }
                }
            };
            if !v.is_object() {
                return reject("input/malformed_json", n);
            }
            for ex in &ctx.src.exclude {
                if let Some(Value::String(s)) = get_path_mut(&mut v, &ex.field) {
                    if ex.values.iter().any(|x| x == s) {
                        return reject("source/excluded", n);
                    }
                }
            }
            let text = match get_path_mut(&mut v, &ctx.src.text_field) {
                Some(Value::String(s)) => std::mem::take(s),
                Some(Value::Null) | None => return reject("input/missing_text_field", n),
                Some(_) => return reject("input/text_not_a_string", n),
            };
            let id = ctx
                .src
                .id_field
                .as_deref()
                .and_then(|f| get_path_mut(&mut v, f).and_then(|x| value_to_string(x)));
            let url = ctx
                .src
                .url_field
                .as_deref()
                .and_then(|f| get_path_mut(&mut v, f).and_then(|x| value_to_string(x)));
            let mut meta = serde_json::Map::new();
            for f in &ctx.src.meta_fields {
                if let Some(x) = get_path_mut(&mut v, f) {
                    meta.insert(f.clone(), x.take());
                }
            }
            (text, id, url, meta, repaired)
        }
    };
    let (text, nfc_changed) = if ctx.ingest.nfc {
        nfc(text)
    } else {
        (text, false)
    };
    if text.trim().is_empty() {
        return reject("input/empty_document", text.len());
    }
    Parsed::Doc {
        doc: Document {
            id,
            text,
            source: ctx.name.clone(),
            file: ctx.file.clone(),
            line,
            url,
            meta,
        },
        utf8_repaired: repaired,
        nfc_changed,
    }
}
