//! Accounting: every record read ends up either kept or counted under exactly one named
//! rejection rule, so `docs_in == docs_out + Σ rejected`. Stats are produced per input file and
//! merged in file order, which keeps the example locations deterministic.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many `file:line` examples each rule keeps.
pub const MAX_EXAMPLES: usize = 5;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStats {
    pub docs: u64,
    pub bytes: u64,
    /// The first few offending `file:line` locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl RuleStats {
    fn add(&mut self, docs: u64, bytes: u64, example: Option<String>) {
        self.docs += docs;
        self.bytes += bytes;
        if let Some(e) = example {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(e);
            }
        }
    }

    fn merge(&mut self, o: &RuleStats) {
        self.docs += o.docs;
        self.bytes += o.bytes;
        for e in &o.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(e.clone());
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Input files processed.
    pub files: u64,
    /// Bytes read from disk (compressed size for compressed inputs).
    pub raw_bytes: u64,
    /// Records seen (documents and unparseable records); bytes are text bytes, or raw record
    /// bytes for records that never became a document.
    pub docs_in: u64,
    pub bytes_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
    /// Rejections by rule (`stage/rule`). Each rejected record is counted once, under the first
    /// rule it failed.
    pub rejected: BTreeMap<String, RuleStats>,
    /// Problems that are not documents (unreadable file, truncated stream); `docs` counts
    /// occurrences.
    pub file_errors: BTreeMap<String, RuleStats>,
    /// Documents kept after replacing invalid UTF-8 with U+FFFD.
    pub utf8_repaired: u64,
    /// Documents whose text NFC normalisation changed.
    pub nfc_changed: u64,
    /// Blank lines in jsonl inputs (not documents).
    pub blank_lines: u64,
    /// Lines removed inside kept documents by line-level rules (C4), by rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lines_removed: BTreeMap<String, u64>,
}

impl Stats {
    pub fn reject(&mut self, rule: &str, bytes: u64, location: Option<String>) {
        match self.rejected.get_mut(rule) {
            Some(r) => r.add(1, bytes, location),
            None => {
                let mut r = RuleStats::default();
                r.add(1, bytes, location);
                self.rejected.insert(rule.to_string(), r);
            }
        }
    }

    pub fn file_error(&mut self, reason: &str, location: String) {
        self.file_errors
            .entry(reason.to_string())
            .or_default()
            .add(1, 0, Some(location));
    }

    pub fn keep(&mut self, bytes: u64) {
        self.docs_out += 1;
        self.bytes_out += bytes;
    }

    pub fn merge(&mut self, o: &Stats) {
        self.files += o.files;
        self.raw_bytes += o.raw_bytes;
        self.docs_in += o.docs_in;
        self.bytes_in += o.bytes_in;
        self.docs_out += o.docs_out;
        self.bytes_out += o.bytes_out;
        for (k, v) in &o.rejected {
            self.rejected.entry(k.clone()).or_default().merge(v);
        }
        for (k, v) in &o.file_errors {
            self.file_errors.entry(k.clone()).or_default().merge(v);
        }
        self.utf8_repaired += o.utf8_repaired;
        self.nfc_changed += o.nfc_changed;
        self.blank_lines += o.blank_lines;
        for (k, v) in &o.lines_removed {
            *self.lines_removed.entry(k.clone()).or_default() += v;
        }
    }

    pub fn rejected_docs(&self) -> u64 {
        self.rejected.values().map(|r| r.docs).sum()
    }

    /// The accounting invariant; a violation is a bug, reported rather than hidden.
    pub fn check_balance(&self, what: &str) -> anyhow::Result<()> {
        let r = self.rejected_docs();
        if self.docs_in != self.docs_out + r {
            anyhow::bail!(
                "internal accounting error in {what}: {} documents in, {} out, {r} rejected",
                self.docs_in,
                self.docs_out
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn merge_keeps_first_examples_in_order() {
        let mut a = Stats::default();
        for i in 0..4 {
            a.docs_in += 1;
            a.reject("x/y", 3, Some(format!("a:{i}")));
        }
        let mut b = Stats::default();
        for i in 0..4 {
            b.docs_in += 1;
            b.reject("x/y", 3, Some(format!("b:{i}")));
        }
        b.docs_in += 1;
        b.keep(10);
        a.merge(&b);
        let r = &a.rejected["x/y"];
        assert_eq!(r.docs, 8);
        assert_eq!(r.bytes, 24);
        assert_eq!(r.examples, vec!["a:0", "a:1", "a:2", "a:3", "b:0"]);
        a.check_balance("t").unwrap();
        a.docs_in += 1;
        assert!(a.check_balance("t").is_err());
    }
}
