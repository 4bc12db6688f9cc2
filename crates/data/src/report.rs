//! What a run did: `report.json` and the tables printed at the end. Every document read is
//! accounted for — kept, rejected by a named rule, or removed as a duplicate — and the pack
//! stage checks that the numbers add up across stages.

use crate::config::{MinHashParams, OutputFormat};
use crate::dedup::ClusterStats;
use crate::progress::human_bytes;
use crate::stats::{RuleStats, Stats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LargestCluster {
    pub size: u64,
    /// `file:line` of the kept document.
    pub representative: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DedupReport {
    pub exact: bool,
    pub near: bool,
    pub params: Option<MinHashParams>,
    /// Documents that took part (from sources with `dedup = true`).
    pub participants: u64,
    pub exact_duplicates: RuleStats,
    pub near_duplicates: RuleStats,
    pub by_source_exact: Vec<RuleStats>,
    pub by_source_near: Vec<RuleStats>,
    pub clusters: ClusterStats,
    pub largest_clusters: Vec<LargestCluster>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StageRow {
    pub stage: String,
    pub docs_in: u64,
    pub bytes_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceReport {
    pub name: String,
    pub weight: f64,
    pub files: u64,
    /// Ingest and filter accounting for this source.
    pub scan: Stats,
    pub exact_duplicates: RuleStats,
    pub near_duplicates: RuleStats,
    /// Documents written (train + validation).
    pub docs_out: u64,
    pub bytes_out: u64,
    pub train_docs: u64,
    pub val_docs: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Output rejections (tokenizer errors).
    pub emit_rejected: BTreeMap<String, RuleStats>,
    /// Weight / sum of weights.
    pub target_proportion: f64,
    /// This source's share of all training tokens.
    pub realised_proportion: f64,
    pub train_files: Vec<PathBuf>,
    pub val_files: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub output_dir: PathBuf,
    pub format: OutputFormat,
    pub stages: Vec<StageRow>,
    /// Ingest and filter accounting over all sources.
    pub scan: Stats,
    pub dedup: DedupReport,
    pub sources: Vec<SourceReport>,
    pub train_tokens: u64,
    pub val_tokens: u64,
    /// Wall-clock seconds of the stages run in the reporting process.
    pub timings: BTreeMap<String, f64>,
    /// Hidden files and directories under the input paths that were not read (names starting
    /// with `.`; see docs/data.md).
    #[serde(default)]
    pub hidden_skipped: u64,
}

fn cell(s: &str, w: usize) -> String {
    format!("{s:<w$}")
}

impl Report {
    /// The tables printed after a run.
    pub fn tables(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<10} {:>12} {:>12} {:>12} {:>12} {:>10}",
            "stage", "docs in", "bytes in", "docs out", "bytes out", "removed"
        );
        for s in &self.stages {
            let _ = writeln!(
                o,
                "{:<10} {:>12} {:>12} {:>12} {:>12} {:>10}",
                s.stage,
                s.docs_in,
                human_bytes(s.bytes_in),
                s.docs_out,
                human_bytes(s.bytes_out),
                s.docs_in - s.docs_out.min(s.docs_in)
            );
        }
        if self.hidden_skipped > 0 {
            let _ = writeln!(
                o,
                "skipped {} hidden files/directories under the input paths (name them with their leading dot to read them)",
                self.hidden_skipped
            );
        }
        let mut rules: Vec<(&String, &RuleStats)> = self.scan.rejected.iter().collect();
        let dedup_rows = [
            (
                "dedup/exact".to_string(),
                self.dedup.exact_duplicates.clone(),
            ),
            ("dedup/near".to_string(), self.dedup.near_duplicates.clone()),
        ];
        for (k, v) in &dedup_rows {
            if v.docs > 0 {
                rules.push((k, v));
            }
        }
        let mut emit_rej: BTreeMap<String, RuleStats> = BTreeMap::new();
        for s in &self.sources {
            for (k, v) in &s.emit_rejected {
                let e = emit_rej.entry(k.clone()).or_default();
                e.docs += v.docs;
                e.bytes += v.bytes;
                if e.examples.is_empty() {
                    e.examples = v.examples.clone();
                }
            }
        }
        rules.extend(emit_rej.iter());
        if !rules.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<44} {:>10} {:>10}  first at",
                "removed by rule", "docs", "bytes"
            );
            for (k, v) in rules {
                let _ = writeln!(
                    o,
                    "{} {:>10} {:>10}  {}",
                    cell(k, 44),
                    v.docs,
                    human_bytes(v.bytes),
                    v.examples.first().map_or("", |s| s.as_str())
                );
            }
        }
        if !self.scan.file_errors.is_empty() {
            let _ = writeln!(
                o,
                "\n{:<44} {:>10}  where",
                "input problems (not documents)", "count"
            );
            for (k, v) in &self.scan.file_errors {
                let _ = writeln!(
                    o,
                    "{} {:>10}  {}",
                    cell(k, 44),
                    v.docs,
                    v.examples.first().map_or("", |s| s.as_str())
                );
            }
        }
        let s = &self.scan;
        if s.utf8_repaired + s.nfc_changed + s.blank_lines > 0 || !s.lines_removed.is_empty() {
            let _ = writeln!(
                o,
                "\nrepaired: {} documents with invalid UTF-8 (U+FFFD), {} changed by NFC; {} blank lines skipped",
                s.utf8_repaired, s.nfc_changed, s.blank_lines
            );
            for (k, v) in &s.lines_removed {
                let _ = writeln!(o, "lines removed by {k}: {v}");
            }
        }
        if self.dedup.near {
            let c = &self.dedup.clusters;
            let hist: Vec<String> = c
                .size_histogram
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ =
                writeln!(
                o,
                "\nnear-duplicate clusters: {} holding {} documents (sizes {}); {} candidate pairs",
                c.clusters,
                c.docs_in_clusters,
                if hist.is_empty() { "-".into() } else { hist.join(", ") },
                c.candidate_pairs
            );
            for l in &self.dedup.largest_clusters {
                let _ = writeln!(o, "  cluster of {} kept {}", l.size, l.representative);
            }
        }
        let _ = writeln!(
            o,
            "\n{:<20} {:>8} {:>8} {:>10} {:>14} {:>12} {:>9}",
            "source", "weight", "target", "docs out", "train tokens", "val tokens", "realised"
        );
        for s in &self.sources {
            let _ = writeln!(
                o,
                "{} {:>8.4} {:>8.4} {:>10} {:>14} {:>12} {:>9.4}",
                cell(&s.name, 20),
                s.weight,
                s.target_proportion,
                s.docs_out,
                s.train_tokens,
                s.val_tokens,
                s.realised_proportion
            );
        }
        let _ = writeln!(
            o,
            "{:<20} {:>8} {:>8} {:>10} {:>14} {:>12}",
            "total",
            "",
            "",
            self.sources.iter().map(|s| s.docs_out).sum::<u64>(),
            self.train_tokens,
            self.val_tokens
        );
        o
    }
}
