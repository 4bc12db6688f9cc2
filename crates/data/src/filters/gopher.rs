//! The Gopher quality and repetition rules (Rae et al. 2021, appendix A), with datatrove's
//! defaults and rule names. Ratios use character counts as datatrove does; n-grams are
//! compared by hashes of their word sequences rather than as joined strings.

use super::words::split_lines;
use super::{check_skip, on, Filter, FilterDoc};
use crate::hashing::{hash_seq, IdBuildHasher, U64Set};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const QUALITY_RULES: &[&str] = &[
    "short_doc",
    "long_doc",
    "below_avg_word_length",
    "above_avg_word_length",
    "too_many_hashes",
    "too_many_ellipsis",
    "too_many_bullets",
    "too_many_end_ellipsis",
    "below_alpha_words_ratio",
    "too_few_stop_words",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQualityConfig {
    pub enabled: bool,
    pub min_doc_words: usize,
    pub max_doc_words: usize,
    pub min_avg_word_length: f64,
    pub max_avg_word_length: f64,
    /// Maximum `#` (and, separately, ellipsis) count per word.
    pub max_symbol_word_ratio: f64,
    pub max_bullet_lines_ratio: f64,
    pub max_ellipsis_lines_ratio: f64,
    /// Minimum fraction of words containing a letter (datatrove's `max_non_alpha_words_ratio`).
    pub min_alpha_words_ratio: f64,
    pub min_stop_words: usize,
    /// Matched case-sensitively, as in datatrove.
    pub stop_words: Vec<String>,
    pub skip: Vec<String>,
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        GopherQualityConfig {
            enabled: false,
            min_doc_words: 50,
            max_doc_words: 100_000,
            min_avg_word_length: 3.0,
            max_avg_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines_ratio: 0.9,
            max_ellipsis_lines_ratio: 0.3,
            min_alpha_words_ratio: 0.8,
            min_stop_words: 2,
            // The eight English stop words of the Gopher paper.
            stop_words: ["the", "be", "to", "of", "and", "that", "have", "with"]
                .map(String::from)
                .to_vec(),
            skip: Vec::new(),
        }
    }
}

impl GopherQualityConfig {
    pub fn validate(&self) -> Result<()> {
        check_skip("gopher_quality", &self.skip, QUALITY_RULES)
    }
}

pub struct GopherQuality {
    c: GopherQualityConfig,
    rule: [bool; 10],
}

impl GopherQuality {
    pub fn new(c: &GopherQualityConfig) -> Self {
        let mut rule = [true; 10];
        for (i, r) in QUALITY_RULES.iter().enumerate() {
            rule[i] = on(&c.skip, r);
        }
        GopherQuality { c: c.clone(), rule }
    }
}

fn count_str(text: &str, pat: &str) -> usize {
    memchr::memmem::find_iter(text.as_bytes(), pat.as_bytes()).count()
}

impl Filter for GopherQuality {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let c = &self.c;
        let r = &self.rule;
        let (text, w) = doc.words();
        let n_words = w.len();
        let n_non_symbol = w.non_symbol.iter().filter(|&&b| b).count();
        if r[0] && n_non_symbol < c.min_doc_words {
            return Some("gopher_quality/short_doc");
        }
        if r[1] && n_non_symbol > c.max_doc_words {
            return Some("gopher_quality/long_doc");
        }
        if n_non_symbol > 0 {
            let total: u64 = w
                .chars
                .iter()
                .zip(&w.non_symbol)
                .filter(|(_, &ns)| ns)
                .map(|(&ch, _)| ch as u64)
                .sum();
            let avg = total as f64 / n_non_symbol as f64;
            if r[2] && avg < c.min_avg_word_length {
                return Some("gopher_quality/below_avg_word_length");
            }
            if r[3] && avg > c.max_avg_word_length {
                return Some("gopher_quality/above_avg_word_length");
            }
        }
        let nw = n_words.max(1) as f64;
        if r[4] && text.bytes().filter(|&b| b == b'#').count() as f64 / nw > c.max_symbol_word_ratio
        {
            return Some("gopher_quality/too_many_hashes");
        }
        if r[5]
            && (count_str(text, "...") + count_str(text, "\u{2026}")) as f64 / nw
                > c.max_symbol_word_ratio
        {
            return Some("gopher_quality/too_many_ellipsis");
        }
        if r[6] || r[7] {
            let mut lines = 0usize;
            let mut bullets = 0usize;
            let mut ellipsis = 0usize;
            for l in split_lines(text) {
                lines += 1;
                let s = l.trim_start();
                if s.starts_with('\u{2022}') || s.starts_with('-') {
                    bullets += 1;
                }
                let e = l.trim_end();
                if e.ends_with("...") || e.ends_with('\u{2026}') {
                    ellipsis += 1;
                }
            }
            if lines > 0 {
                if r[6] && bullets as f64 / lines as f64 > c.max_bullet_lines_ratio {
                    return Some("gopher_quality/too_many_bullets");
                }
                if r[7] && ellipsis as f64 / lines as f64 > c.max_ellipsis_lines_ratio {
                    return Some("gopher_quality/too_many_end_ellipsis");
                }
            }
        }
        if r[8] && (w.alpha.iter().filter(|&&a| a).count() as f64 / nw) < c.min_alpha_words_ratio {
            return Some("gopher_quality/below_alpha_words_ratio");
        }
        if r[9] && c.min_stop_words > 0 {
            let mut n = 0;
            for i in 0..w.len() {
                let word = w.word(text, i);
                if c.stop_words.iter().any(|s| s == word) {
                    n += 1;
                    if n >= c.min_stop_words {
                        break;
                    }
                }
            }
            if n < c.min_stop_words {
                return Some("gopher_quality/too_few_stop_words");
            }
        }
        None
    }
}

pub const REPETITION_RULES: &[&str] = &[
    "dup_para_frac",
    "dup_para_char_frac",
    "dup_line_frac",
    "dup_line_char_frac",
    "top_n_grams",
    "dup_n_grams",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetitionConfig {
    pub enabled: bool,
    pub dup_line_frac: f64,
    pub dup_para_frac: f64,
    pub dup_line_char_frac: f64,
    pub dup_para_char_frac: f64,
    /// `[n, max fraction of characters in the most frequent n-gram]`.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, max fraction of characters in duplicated n-grams]`.
    pub dup_n_grams: Vec<(usize, f64)>,
    pub skip: Vec<String>,
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        GopherRepetitionConfig {
            enabled: false,
            dup_line_frac: 0.3,
            dup_para_frac: 0.3,
            dup_line_char_frac: 0.2,
            dup_para_char_frac: 0.2,
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
            skip: Vec::new(),
        }
    }
}

impl GopherRepetitionConfig {
    pub fn validate(&self) -> Result<()> {
        check_skip("gopher_repetition", &self.skip, REPETITION_RULES)?;
        for &(n, _) in self.top_n_grams.iter().chain(&self.dup_n_grams) {
            if n == 0 || n > 64 {
                bail!("filters.gopher_repetition: n-gram size {n} must be in 1..=64");
            }
        }
        Ok(())
    }
}

pub struct GopherRepetition {
    c: GopherRepetitionConfig,
    rule: [bool; 6],
    top_names: Vec<&'static str>,
    dup_names: Vec<&'static str>,
}

/// Rule names carry the n-gram size, as datatrove's do (`top_2_gram`, `duplicated_5_n_grams`).
/// They are made once per filter construction, so leaking them is bounded.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl GopherRepetition {
    pub fn new(c: &GopherRepetitionConfig) -> Self {
        let mut rule = [true; 6];
        for (i, r) in REPETITION_RULES.iter().enumerate() {
            rule[i] = on(&c.skip, r);
        }
        GopherRepetition {
            top_names: c
                .top_n_grams
                .iter()
                .map(|(n, _)| leak(format!("gopher_repetition/top_{n}_gram")))
                .collect(),
            dup_names: c
                .dup_n_grams
                .iter()
                .map(|(n, _)| leak(format!("gopher_repetition/duplicated_{n}_n_grams")))
                .collect(),
            c: c.clone(),
            rule,
        }
    }
}

/// datatrove's `find_duplicates`: how many elements repeat an earlier one, and their total
/// length in characters.
fn find_duplicates<'t>(items: impl Iterator<Item = &'t str>) -> (usize, usize, usize) {
    let mut seen: crate::hashing::FxSet<&str> = Default::default();
    let (mut n, mut dup, mut dup_chars) = (0, 0, 0);
    for it in items {
        n += 1;
        if !seen.insert(it) {
            dup += 1;
            dup_chars += it.chars().count();
        }
    }
    (n, dup, dup_chars)
}

/// `re.split(r"\n{2,}", s)`.
fn split_paragraphs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        let b = r.as_bytes();
        let mut i = 0;
        while let Some(j) = memchr::memchr(b'\n', &b[i..]) {
            let at = i + j;
            let mut end = at;
            while end < b.len() && b[end] == b'\n' {
                end += 1;
            }
            if end - at >= 2 {
                rest = Some(&r[end..]);
                return Some(&r[..at]);
            }
            i = end;
        }
        rest = None;
        Some(r)
    })
}

/// `re.split("\n+", s)`.
fn split_newline_runs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r.as_bytes()) {
            Some(at) => {
                let b = r.as_bytes();
                let mut end = at;
                while end < b.len() && b[end] == b'\n' {
                    end += 1;
                }
                rest = Some(&r[end..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

impl Filter for GopherRepetition {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let c = &self.c;
        let r = &self.rule;
        let len = doc.char_len().max(1) as f64;
        let (text, w) = doc.words();
        if r[0] || r[1] {
            let (n, dup, dup_chars) = find_duplicates(split_paragraphs(text.trim()));
            if r[0] && dup as f64 / n.max(1) as f64 > c.dup_para_frac {
                return Some("gopher_repetition/dup_para_frac");
            }
            if r[1] && dup_chars as f64 / len > c.dup_para_char_frac {
                return Some("gopher_repetition/dup_para_char_frac");
            }
        }
        if r[2] || r[3] {
            let (n, dup, dup_chars) = find_duplicates(split_newline_runs(text));
            if r[2] && dup as f64 / n.max(1) as f64 > c.dup_line_frac {
                return Some("gopher_repetition/dup_line_frac");
            }
            if r[3] && dup_chars as f64 / len > c.dup_line_char_frac {
                return Some("gopher_repetition/dup_line_char_frac");
            }
        }
        if !(r[4] || r[5]) {
            return None;
        }
        w.ensure_hashes(text);
        let chars = &w.chars;
        let hashes = w.hashes();
        let nw = hashes.len();
        if r[4] {
            for (k, &(n, frac)) in c.top_n_grams.iter().enumerate() {
                if nw < n {
                    continue;
                }
                // Count every n-gram; the most frequent wins, ties going to the earliest
                // (Python's Counter.most_common).
                let mut counts: HashMap<u64, (u32, u32), IdBuildHasher> =
                    HashMap::with_capacity_and_hasher(nw, Default::default());
                for i in 0..=nw - n {
                    let h = hash_seq(&hashes[i..i + n]);
                    counts.entry(h).or_insert((0, i as u32)).0 += 1;
                }
                let (&_, &(count, first)) = counts
                    .iter()
                    .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
                    .unwrap();
                let first = first as usize;
                let gram_chars: u64 = chars[first..first + n]
                    .iter()
                    .map(|&x| x as u64)
                    .sum::<u64>()
                    + n as u64
                    - 1;
                if (gram_chars * count as u64) as f64 / len > frac {
                    return Some(self.top_names[k]);
                }
            }
        }
        if r[5] {
            for (k, &(n, frac)) in c.dup_n_grams.iter().enumerate() {
                if nw < n {
                    continue;
                }
                // datatrove's find_all_duplicate: a repeated n-gram's characters count once
                // and the scan jumps past it.
                let mut seen = U64Set::with_capacity_and_hasher(nw, Default::default());
                let mut repeated = 0u64;
                let mut i = 0;
                while i + n <= nw {
                    let h = hash_seq(&hashes[i..i + n]);
                    if seen.contains(&h) {
                        repeated += chars[i..i + n].iter().map(|&x| x as u64).sum::<u64>();
                        i += n;
                    } else {
                        seen.insert(h);
                        i += 1;
                    }
                }
                if repeated as f64 / len > frac {
                    return Some(self.dup_names[k]);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prose(n: usize) -> String {
        let base = [
            "the", "river", "carried", "small", "boats", "toward", "a", "harbor", "where",
            "workers", "waited", "with", "ropes", "and", "lanterns", "that", "glowed",
        ];
        // Deterministic but non-repeating word order.
        let mut out = Vec::new();
        let mut x = 7u64;
        for i in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.push(format!(
                "{}{}",
                base[(x >> 33) as usize % base.len()],
                if i % 9 == 8 { "." } else { "" }
            ));
        }
        out.join(" ")
    }

    fn run(f: &dyn Filter, t: &str) -> Option<&'static str> {
        f.apply(&mut FilterDoc::new(t.to_string(), None))
    }

    #[test]
    fn quality_rules() {
        let q = GopherQuality::new(&GopherQualityConfig::default());
        assert_eq!(run(&q, &prose(200)), None);
        assert_eq!(
            run(&q, "the cat and the dog"),
            Some("gopher_quality/short_doc")
        );
        let hashes = format!("{} {}", prose(100), "#tag ".repeat(30));
        assert_eq!(run(&q, &hashes), Some("gopher_quality/too_many_hashes"));
        let bullets = (0..60)
            .map(|i| format!("- item {i} of the list and more"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(run(&q, &bullets), Some("gopher_quality/too_many_bullets"));
        let nums = format!("{} {}", prose(60), "12345 67890 ".repeat(40));
        assert_eq!(
            run(&q, &nums),
            Some("gopher_quality/below_alpha_words_ratio")
        );
        let no_stop = "river boats harbor workers ropes lanterns glowed ".repeat(10);
        assert_eq!(run(&q, &no_stop), Some("gopher_quality/too_few_stop_words"));
        let long_words = format!("the and {}", "extraordinarilylongword ".repeat(60));
        assert_eq!(
            run(&q, &long_words),
            Some("gopher_quality/above_avg_word_length")
        );
        let skip = GopherQualityConfig {
            skip: vec!["short_doc".into(), "too_few_stop_words".into()],
            ..Default::default()
        };
        let q2 = GopherQuality::new(&skip);
        assert_eq!(run(&q2, "the cat and the dog"), None);
    }

    #[test]
    fn repetition_rules() {
        let g = GopherRepetition::new(&GopherRepetitionConfig::default());
        assert_eq!(run(&g, &prose(300)), None);
        let dup_lines = format!(
            "{}\nsame line here\nsame line here\nsame line here\nsame line here",
            prose(5)
        );
        assert_eq!(run(&g, &dup_lines), Some("gopher_repetition/dup_line_frac"));
        let dup_paras = format!("{}\n\nrepeated paragraph\n\nrepeated paragraph", prose(5));
        assert_eq!(run(&g, &dup_paras), Some("gopher_repetition/dup_para_frac"));
        let top = format!("{} {}", prose(50), "buy now ".repeat(40));
        assert_eq!(run(&g, &top), Some("gopher_repetition/top_2_gram"));
        let dup5 = format!(
            "{} {}",
            prose(100),
            "one two three four five six seven eight nine ten eleven twelve ".repeat(4)
        );
        let got = run(&g, &dup5).unwrap();
        assert!(got.starts_with("gopher_repetition/"), "{got}");
    }

    #[test]
    fn splitters_match_python() {
        let v: Vec<&str> = split_paragraphs("a\nb\n\n\nc\n\nd").collect();
        assert_eq!(v, vec!["a\nb", "c", "d"]);
        let v: Vec<&str> = split_newline_runs("\na\n\nb\n").collect();
        assert_eq!(v, vec!["", "a", "b", ""]);
    }
}
