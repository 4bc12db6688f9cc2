//! The pipeline configuration: what `data prepare --config DATA.toml` reads, and what library
//! callers build in code ([`PipelineConfig::new`] plus field assignments).
//!
//! Every field has a default except the output directory and the sources; unknown keys are
//! errors (a misspelt threshold must not be silently ignored). Relative paths are relative to
//! the working directory. `docs/data.md` is the full reference.

use crate::filters::FiltersConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where `train/`, `validation/`, `manifest.json` and `report.json` go.
    pub output_dir: PathBuf,
    /// Intermediate files and completion markers; default `<output_dir>/work`. Must be on a
    /// filesystem every shard of a multi-machine run can see.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Filters applied to every source whose `apply_filters` is true (unless it has its own).
    #[serde(default)]
    pub filters: FiltersConfig,
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Required for `output.format = "packed"`.
    #[serde(default)]
    pub tokenizer: Option<TokenizerRef>,
    #[serde(default)]
    pub output: OutputConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// From the extension: `.jsonl`/`.json`/`.ndjson` (optionally `.gz`/`.zst`) → jsonl,
    /// `.parquet` → parquet, anything else → text.
    #[default]
    Auto,
    /// One JSON object per line, optionally gzip or zstd compressed (detected by magic bytes).
    Jsonl,
    Parquet,
    /// Each file is one document.
    Text,
    /// Each non-blank line of each file is one document.
    Lines,
    /// Each blank-line-separated block of each file is one document.
    Paragraphs,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeRule {
    /// Field path, dots for nesting (`meta.redpajama_set_name`); top-level columns for parquet.
    pub field: String,
    /// Rows whose field equals one of these strings are dropped (counted as
    /// `source/excluded`).
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Names the output shards (`train/<name>-00000.bin`); letters, digits, `_`, `.` and `-`.
    pub name: String,
    /// Files, directories (searched recursively) or glob patterns.
    pub paths: Vec<String>,
    #[serde(default)]
    pub format: Format,
    /// JSON field path or parquet column holding the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    #[serde(default)]
    pub id_field: Option<String>,
    /// Needed by the URL blocklist filter.
    #[serde(default)]
    pub url_field: Option<String>,
    /// Fields carried into jsonl output.
    #[serde(default)]
    pub meta_fields: Vec<String>,
    /// Mixture weight, recorded in the manifest for the trainer.
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub exclude: Vec<ExcludeRule>,
    /// Run the quality/content filters on this source (code usually should not).
    #[serde(default = "yes")]
    pub apply_filters: bool,
    /// Filters for this source instead of the global `[filters]`.
    #[serde(default)]
    pub filters: Option<FiltersConfig>,
    /// Take part in exact and near-duplicate removal.
    #[serde(default = "yes")]
    pub dedup: bool,
}

fn default_text_field() -> String {
    "text".into()
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl SourceConfig {
    pub fn new(name: &str, paths: &[&str]) -> Self {
        SourceConfig {
            name: name.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            format: Format::Auto,
            text_field: default_text_field(),
            id_field: None,
            url_field: None,
            meta_fields: Vec::new(),
            weight: 1.0,
            exclude: Vec::new(),
            apply_filters: true,
            filters: None,
            dedup: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Utf8Policy {
    /// Replace invalid byte sequences with U+FFFD and keep the document (counted).
    #[default]
    Repair,
    /// Reject the document as `input/invalid_utf8`.
    Reject,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Unicode NFC normalisation of every text.
    pub nfc: bool,
    pub invalid_utf8: Utf8Policy,
    /// Records (lines, rows, files) longer than this are rejected as `input/record_too_large`
    /// without being held in memory.
    pub max_record_mb: u64,
    /// Documents per parallel batch.
    pub batch_docs: usize,
    /// Input files read at once (each feeds batches to all cores); default min(files, 4).
    pub open_files: Option<usize>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            nfc: true,
            invalid_utf8: Utf8Policy::Repair,
            max_record_mb: 64,
            batch_docs: 2048,
            open_files: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Drop documents whose normalised text (lowercase, whitespace collapsed) has the same
    /// 128-bit hash as an earlier one, across all sources.
    pub exact: bool,
    /// MinHash + LSH near-duplicate removal.
    pub near: bool,
    /// `datatrove` (5-gram, 14 bands × 8 rows) or `slimpajama` (13-gram, 9 × 13); sets
    /// `ngram`, `bands`, `rows` unless those are given explicitly.
    pub preset: Option<String>,
    /// Words per shingle.
    pub ngram: Option<usize>,
    pub bands: Option<usize>,
    pub rows: Option<usize>,
    pub seed: u64,
    /// Memory the merge stage may use for hashes before spilling to disk.
    pub memory_budget_mb: f64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            near: true,
            preset: None,
            ngram: None,
            bands: None,
            rows: None,
            seed: 1,
            memory_budget_mb: 4096.0,
        }
    }
}

/// The MinHash parameters after applying the preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinHashParams {
    pub ngram: usize,
    pub bands: usize,
    pub rows: usize,
    pub seed: u64,
}

impl DedupConfig {
    pub fn minhash(&self) -> Result<MinHashParams> {
        let (n, b, r) = match self.preset.as_deref() {
            None | Some("datatrove") => (5, 14, 8),
            Some("slimpajama") => (13, 9, 13),
            Some(other) => bail!(
                "dedup.preset = {other:?}: expected \"datatrove\" (5-gram, 14×8) or \"slimpajama\" (13-gram, 9×13)"
            ),
        };
        let p = MinHashParams {
            ngram: self.ngram.unwrap_or(n),
            bands: self.bands.unwrap_or(b),
            rows: self.rows.unwrap_or(r),
            seed: self.seed,
        };
        if p.ngram == 0 || p.bands == 0 || p.rows == 0 {
            bail!("dedup: ngram, bands and rows must all be at least 1");
        }
        if p.bands * p.rows > 1024 {
            bail!(
                "dedup: bands × rows = {} hash functions; at most 1024 are supported",
                p.bands * p.rows
            );
        }
        Ok(p)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerRef {
    /// A Hugging Face `tokenizer.json` (or a directory holding one).
    pub path: PathBuf,
    /// End-of-document id appended after every document; default: the id of `eos_token`.
    #[serde(default)]
    pub eos_id: Option<u32>,
    #[serde(default = "default_eos_token")]
    pub eos_token: String,
}

fn default_eos_token() -> String {
    "</s>".into()
}

impl TokenizerRef {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TokenizerRef {
            path: path.into(),
            eos_id: None,
            eos_token: default_eos_token(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Token ids + EOS per document in LITPKDS shards, per source, with a validation split.
    #[default]
    Packed,
    /// Kept documents as zstd jsonl (`{"id","text",...}`), one file per input file.
    Jsonl,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub format: OutputFormat,
    /// Tokens per shard file.
    pub chunk_size: usize,
    /// Fraction of documents (chosen by content hash, so stable across runs and thread counts)
    /// written to `validation/` instead of `train/`.
    pub validation_fraction: f64,
    pub validation_seed: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: OutputFormat::Packed,
            chunk_size: crate::packed::DEFAULT_CHUNK_SIZE,
            validation_fraction: 0.001,
            validation_seed: 42,
        }
    }
}

impl PipelineConfig {
    /// A config with defaults everywhere: every stage's defaults apply and no tokenizer is set
    /// (set `tokenizer` for packed output).
    pub fn new(output_dir: impl Into<PathBuf>, sources: Vec<SourceConfig>) -> Self {
        PipelineConfig {
            output_dir: output_dir.into(),
            work_dir: None,
            sources,
            ingest: IngestConfig::default(),
            filters: FiltersConfig::default(),
            dedup: DedupConfig::default(),
            tokenizer: None,
            output: OutputConfig::default(),
        }
    }

    pub fn from_toml_str(s: &str, origin: &str) -> Result<Self> {
        let cfg: PipelineConfig = toml::from_str(s).map_err(|e| {
            anyhow::anyhow!("{origin}: {e}(see docs/data.md for the config reference)")
        })?;
        cfg.validate().with_context(|| format!("in {origin}"))?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read pipeline config {}", path.display()))?;
        Self::from_toml_str(&s, &path.display().to_string())
    }

    pub fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| self.output_dir.join("work"))
    }

    /// The filters for source `i` (None when the source skips filtering).
    pub fn filters_for(&self, i: usize) -> Option<&FiltersConfig> {
        let s = &self.sources[i];
        if !s.apply_filters {
            return None;
        }
        Some(s.filters.as_ref().unwrap_or(&self.filters))
    }

    /// Checks everything that can be checked without reading inputs.
    pub fn validate(&self) -> Result<()> {
        if self.sources.is_empty() {
            bail!("no [[sources]]: declare at least one source with a name and paths");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                bail!(
                    "sources[{i}].name = {:?}: use letters, digits, '_', '-' or '.' (it names the output shards)",
                    s.name
                );
            }
            if !seen.insert(s.name.clone()) {
                bail!(
                    "sources[{i}].name = {:?} is used twice; source names must be unique",
                    s.name
                );
            }
            if s.paths.is_empty() {
                bail!("sources[{i}] ({}): paths is empty", s.name);
            }
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                bail!(
                    "sources[{i}] ({}): weight {} must be a non-negative number",
                    s.name,
                    s.weight
                );
            }
            if s.format == Format::Parquet || s.format == Format::Auto {
                for f in [
                    Some(&s.text_field),
                    s.id_field.as_ref(),
                    s.url_field.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    if f.is_empty() {
                        bail!("sources[{i}] ({}): empty field name", s.name);
                    }
                }
            }
            if let Some(f) = &s.filters {
                f.validate()
                    .with_context(|| format!("in sources[{i}].filters ({})", s.name))?;
            }
        }
        self.filters.validate().context("in [filters]")?;
        if self.dedup.near || self.dedup.exact {
            self.dedup.minhash().context("in [dedup]")?;
        }
        if self.dedup.memory_budget_mb.is_nan() || self.dedup.memory_budget_mb <= 0.0 {
            bail!("dedup.memory_budget_mb must be a positive number of megabytes");
        }
        if self.ingest.max_record_mb == 0 || self.ingest.batch_docs == 0 {
            bail!("ingest.max_record_mb and ingest.batch_docs must be at least 1");
        }
        let o = &self.output;
        if !(0.0..1.0).contains(&o.validation_fraction) {
            bail!(
                "output.validation_fraction = {} must be in [0, 1)",
                o.validation_fraction
            );
        }
        if o.chunk_size == 0 {
            bail!("output.chunk_size must be at least 1 token");
        }
        if o.format == OutputFormat::Packed && self.tokenizer.is_none() {
            bail!(
                "output.format = \"packed\" needs a tokenizer: add [tokenizer] path = \"…/tokenizer.json\" \
                 (or set output.format = \"jsonl\")"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_rejects_unknown_keys() {
        let c = PipelineConfig::from_toml_str(
            r#"
output_dir = "out"
[[sources]]
name = "web"
paths = ["data/*.jsonl"]
[tokenizer]
path = "tok.json"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.sources[0].text_field, "text");
        assert_eq!(c.dedup.minhash().unwrap().bands, 14);
        let e = PipelineConfig::from_toml_str(
            "output_dir = \"o\"\nbogus = 1\n[[sources]]\nname=\"a\"\npaths=[\"x\"]",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e = PipelineConfig::from_toml_str(
            "output_dir = \"o\"\n[[sources]]\nname=\"a b\"\npaths=[\"x\"]\n[output]\nformat=\"jsonl\"",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("sources[0].name"), "{e:#}");
    }

    #[test]
    fn presets() {
        let mut d = DedupConfig {
            preset: Some("slimpajama".into()),
            ..Default::default()
        };
        assert_eq!(
            d.minhash().unwrap(),
            MinHashParams {
                ngram: 13,
                bands: 9,
                rows: 13,
                seed: 1
            }
        );
        d.rows = Some(4);
        assert_eq!(d.minhash().unwrap().rows, 4);
        d.preset = Some("nope".into());
        assert!(d.minhash().is_err());
    }
}
