//! FineWeb's additional quality rules (Penedo et al. 2024), with datatrove's defaults.

use super::{check_skip, on, Filter, FilterDoc};
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub const RULES: &[&str] = &[
    "empty",
    "line_punct_ratio",
    "short_line_ratio",
    "char_dup_ratio",
    "list_ratio",
];

/// Characters that end a sentence in common scripts (drawn from Unicode's
/// Terminal_Punctuation property).
pub const DEFAULT_STOP_CHARS: &str =
    ".!?;:,\u{2026}\u{203c}\u{2047}\u{2048}\u{2049}\u{3002}\u{ff01}\u{ff1f}\u{ff0e}\u{ff1b}\u{ff1a}\u{ff0c}\u{3001}\u{0964}\u{0965}\u{061f}\u{061b}\u{060c}\u{06d4}\u{1362}\u{104a}\u{104b}\u{ff61}";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebConfig {
    pub enabled: bool,
    /// Minimum fraction of lines ending in a stop character.
    pub line_punct_thr: f64,
    /// Do not apply `line_punct_thr` when no line ends in punctuation.
    pub line_punct_exclude_zero: bool,
    /// Each character is a stop character.
    pub stop_chars: String,
    /// Maximum fraction of lines of at most `short_line_length` characters.
    pub short_line_thr: f64,
    pub short_line_length: usize,
    /// Maximum fraction of characters in duplicated lines.
    pub char_duplicates_ratio: f64,
    /// Maximum newlines per word.
    pub new_line_ratio: f64,
    pub skip: Vec<String>,
}

impl Default for FineWebConfig {
    fn default() -> Self {
        FineWebConfig {
            enabled: false,
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: DEFAULT_STOP_CHARS.into(),
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
            skip: Vec::new(),
        }
    }
}

impl FineWebConfig {
    pub fn validate(&self) -> Result<()> {
        check_skip("fineweb", &self.skip, RULES)
    }
}

pub struct FineWeb {
    c: FineWebConfig,
    stop: Vec<char>,
    rule: [bool; 5],
}

impl FineWeb {
    pub fn new(c: &FineWebConfig) -> Self {
        let mut rule = [true; 5];
        for (i, r) in RULES.iter().enumerate() {
            rule[i] = on(&c.skip, r);
        }
        FineWeb {
            stop: c.stop_chars.chars().collect(),
            c: c.clone(),
            rule,
        }
    }
}

impl Filter for FineWeb {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let c = &self.c;
        let r = &self.rule;
        let char_len = doc.char_len();
        let text = doc.text();
        let lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return r[0].then_some("fineweb/empty");
        }
        let n = lines.len() as f64;
        if r[1] {
            let ratio = lines
                .iter()
                .filter(|l| l.ends_with(self.stop.as_slice()))
                .count() as f64
                / n;
            if ratio < c.line_punct_thr && !(ratio == 0.0 && c.line_punct_exclude_zero) {
                return Some("fineweb/line_punct_ratio");
            }
        }
        if r[2] {
            let short = lines
                .iter()
                .filter(|l| {
                    l.len() <= c.short_line_length || l.chars().count() <= c.short_line_length
                })
                .count() as f64;
            if short / n > c.short_line_thr {
                return Some("fineweb/short_line_ratio");
            }
        }
        let newlines = text.bytes().filter(|&b| b == b'\n').count();
        if r[3] {
            let mut seen: crate::hashing::FxSet<&str> =
                crate::hashing::FxSet::with_capacity_and_hasher(lines.len(), Default::default());
            let mut dup_chars = 0usize;
            for l in &lines {
                if !seen.insert(*l) {
                    dup_chars += l.chars().count();
                }
            }
            let denom = (char_len - newlines).max(1);
            if dup_chars as f64 / denom as f64 > c.char_duplicates_ratio {
                return Some("fineweb/char_dup_ratio");
            }
        }
        if r[4] {
            let (_, w) = doc.words();
            if newlines as f64 / w.len().max(1) as f64 > c.new_line_ratio {
                return Some("fineweb/list_ratio");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str) -> Option<&'static str> {
        FineWeb::new(&FineWebConfig::default()).apply(&mut FilterDoc::new(t.to_string(), None))
    }

    #[test]
    fn rules() {
        let good = "This is a long enough line that ends with a full stop.\n\
                    Another line that is also long enough and ends well.";
        assert_eq!(run(good), None);
        assert_eq!(run("  \n \n"), Some("fineweb/empty"));
        let nopunct =
            "a line without any ending punctuation at all here\nand another such line without it";
        assert_eq!(run(nopunct), Some("fineweb/line_punct_ratio"));
        let short = "Short one.\nTiny.\nSmall.\nThis line is long enough to not be short at all.";
        assert_eq!(run(short), Some("fineweb/short_line_ratio"));
        let dup = format!("{good}\nThis is a long enough line that ends with a full stop.");
        assert_eq!(run(&dup), Some("fineweb/char_dup_ratio"));
    }
}
