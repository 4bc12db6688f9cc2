//! A procedural corpus for tests and benchmarks: invented words drawn with a Zipf-like
//! distribution around a few English function words (so the Gopher stop-word rule has something
//! to find), assembled into sentences, paragraphs and documents, with planted exact duplicates,
//! near duplicates (a few words changed) and low-quality documents of the kinds the filters
//! reject. Nothing here is copied text; the same seed gives the same corpus everywhere.

use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use tinyllama_model::atomic::write_atomic_with;
use tinyllama_model::rng::Rng;

const FUNCTION_WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "with", "for", "on", "as", "was", "by",
    "it", "from", "at", "be", "have", "this",
];
const ONSETS: &[&str] = &[
    "b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "k", "l", "m", "n", "p", "pl", "r",
    "s", "sh", "st", "t", "tr", "v", "w", "z",
];
const NUCLEI: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"];
const CODAS: &[&str] = &["", "", "n", "r", "s", "t", "l", "nd", "st", "m"];

/// A generated vocabulary with Zipf-like sampling.
pub struct Lexicon {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Lexicon {
    pub fn new(size: usize, seed: u64) -> Self {
        let mut r = Rng::derive(seed, 1);
        let mut words: Vec<String> = FUNCTION_WORDS.iter().map(|s| s.to_string()).collect();
        let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
        while words.len() < size {
            let syllables = 1 + r.below(3) as usize;
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSETS[r.below(ONSETS.len() as u64) as usize]);
                w.push_str(NUCLEI[r.below(NUCLEI.len() as u64) as usize]);
            }
            w.push_str(CODAS[r.below(CODAS.len() as u64) as usize]);
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut acc = 0.0;
        let cumulative = (0..words.len())
            .map(|i| {
                acc += 1.0 / (i as f64 + 2.0);
                acc
            })
            .collect();
        Lexicon { words, cumulative }
    }

    pub fn word(&self, r: &mut Rng) -> &str {
        let x = r.next_f64() * self.cumulative.last().unwrap();
        let i = self.cumulative.partition_point(|&c| c < x);
        &self.words[i.min(self.words.len() - 1)]
    }

    pub fn sentence(&self, r: &mut Rng, out: &mut String) {
        let n = 6 + r.below(14) as usize;
        for i in 0..n {
            let w = self.word(r);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase());
                    out.push_str(c.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(w);
                if i + 1 < n && r.below(12) == 0 {
                    out.push(',');
                }
            }
        }
        out.push(match r.below(10) {
            0 => '?',
            1 => '!',
            _ => '.',
        });
    }

    /// A document of prose paragraphs (one per line), which passes the quality filters.
    pub fn document(&self, r: &mut Rng) -> String {
        let mut s = String::new();
        let paragraphs = 2 + r.below(8);
        for p in 0..paragraphs {
            if p > 0 {
                s.push('\n');
            }
            let sentences = 2 + r.below(6);
            for k in 0..sentences {
                if k > 0 {
                    s.push(' ');
                }
                self.sentence(r, &mut s);
            }
        }
        s
    }

    /// Code-like text for a second, StarCoder-like source.
    pub fn code(&self, r: &mut Rng) -> String {
        let mut s = String::new();
        for _ in 0..1 + r.below(4) {
            let name = format!("{}_{}", self.word(r), self.word(r));
            s.push_str(&format!(
                "fn {name}(x: i64, {}: &str) -> i64 {{\n",
                self.word(r)
            ));
            for _ in 0..2 + r.below(8) {
                s.push_str(&format!(
                    "    let {} = x * {} + {};\n",
                    self.word(r),
                    r.below(100),
                    r.below(1000)
                ));
            }
            s.push_str("    x\n}\n\n");
        }
        s
    }
}

/// Kinds of planted low-quality documents.
fn junk(lex: &Lexicon, r: &mut Rng) -> String {
    match r.below(5) {
        0 => {
            let mut line = String::new();
            lex.sentence(r, &mut line);
            std::iter::repeat_n(line, 12).collect::<Vec<_>>().join("\n")
        }
        1 => (0..20)
            .map(|_| format!("- {}", lex.word(r)))
            .collect::<Vec<_>>()
            .join("\n"),
        2 => format!("{} {}", lex.word(r), lex.word(r)),
        3 => (0..60)
            .map(|_| format!("#{}", lex.word(r)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => (0..50)
            .map(|i| format!("{} {}", i * 37 % 1000, r.below(99999)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[derive(Clone, Debug)]
pub struct CorpusSpec {
    /// Approximate uncompressed text bytes in total.
    pub bytes: u64,
    pub files: usize,
    pub seed: u64,
    /// Fraction of documents that are exact copies of earlier ones.
    pub exact_dup_fraction: f64,
    /// Fraction that are earlier documents with a few words changed.
    pub near_dup_fraction: f64,
    /// Fraction of low-quality documents.
    pub junk_fraction: f64,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            bytes: 100 << 20,
            files: 8,
            seed: 1,
            exact_dup_fraction: 0.05,
            near_dup_fraction: 0.05,
            junk_fraction: 0.1,
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CorpusSummary {
    pub files: Vec<PathBuf>,
    pub docs: u64,
    pub text_bytes: u64,
    pub exact_dups: u64,
    pub near_dups: u64,
    pub junk: u64,
}

/// Writes `web-NNNNN.jsonl.zst` files (`id`, `text`, `url`, `meta`) into `dir`.
pub fn generate(dir: &Path, spec: &CorpusSpec) -> Result<CorpusSummary> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lex = Lexicon::new(20000, spec.seed);
    let mut r = Rng::derive(spec.seed, 2);
    let mut recent: Vec<String> = Vec::new();
    let mut sum = CorpusSummary::default();
    let per_file = spec.bytes / spec.files.max(1) as u64;
    for f in 0..spec.files.max(1) {
        let path = dir.join(format!("web-{f:05}.jsonl.zst"));
        write_atomic_with(&path, |w| {
            let mut enc = zstd::Encoder::new(&mut *w, 3)?;
            let mut written = 0u64;
            while written < per_file {
                let x = r.next_f64();
                let text = if x < spec.exact_dup_fraction && !recent.is_empty() {
                    sum.exact_dups += 1;
                    recent[r.below(recent.len() as u64) as usize].clone()
                } else if x < spec.exact_dup_fraction + spec.near_dup_fraction && !recent.is_empty()
                {
                    sum.near_dups += 1;
                    let base = &recent[r.below(recent.len() as u64) as usize];
                    let mut words: Vec<String> = base.split(' ').map(String::from).collect();
                    // Change about one word in fifty.
                    for _ in 0..(words.len() / 50).max(1) {
                        let i = r.below(words.len() as u64) as usize;
                        words[i] = lex.word(&mut r).to_string();
                    }
                    words.join(" ")
                } else if x < spec.exact_dup_fraction + spec.near_dup_fraction + spec.junk_fraction
                {
                    sum.junk += 1;
                    junk(&lex, &mut r)
                } else {
                    let d = lex.document(&mut r);
                    if recent.len() < 2000 {
                        recent.push(d.clone());
                    } else {
                        let i = r.below(recent.len() as u64) as usize;
                        recent[i] = d.clone();
                    }
                    d
                };
                let line = json!({
                    "id": format!("doc-{}", sum.docs),
                    "text": text,
                    "url": format!("https://site{}.example/page/{}", r.below(500), sum.docs),
                    "meta": {"set": "web"},
                });
                let mut b = serde_json::to_vec(&line)?;
                b.push(b'\n');
                enc.write_all(&b)?;
                written += text.len() as u64;
                sum.text_bytes += text.len() as u64;
                sum.docs += 1;
            }
            enc.finish()?;
            Ok(())
        })?;
        sum.files.push(path);
    }
    Ok(sum)
}

/// Writes a parquet file with the given string columns (None: null), snappy-compressed, in
/// row groups of `row_group` rows.
pub fn write_parquet(
    path: &Path,
    columns: &[(&str, Vec<Option<String>>)],
    row_group: usize,
) -> Result<()> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let fields: Vec<String> = columns
        .iter()
        .map(|(n, _)| format!("OPTIONAL BYTE_ARRAY {n} (UTF8);"))
        .collect();
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&format!(
        "message schema {{ {} }}",
        fields.join(" ")
    ))?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let rows = columns.first().map_or(0, |c| c.1.len());
    write_atomic_with(path, |w| {
        let mut fw = SerializedFileWriter::new(w, schema, props)?;
        let mut start = 0;
        while start < rows {
            let end = (start + row_group.max(1)).min(rows);
            let mut rg = fw.next_row_group()?;
            let mut ci = 0;
            while let Some(mut col) = rg.next_column()? {
                let cells = &columns[ci].1[start..end];
                let defs: Vec<i16> = cells.iter().map(|c| c.is_some() as i16).collect();
                let vals: Vec<ByteArray> = cells
                    .iter()
                    .flatten()
                    .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, Some(&defs), None)?;
                col.close()?;
                ci += 1;
            }
            rg.close()?;
            start = end;
        }
        fw.close()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn deterministic_and_sized() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let spec = CorpusSpec {
            bytes: 200_000,
            files: 2,
            ..Default::default()
        };
        let sa = generate(a.path(), &spec).unwrap();
        generate(b.path(), &spec).unwrap();
        for f in &sa.files {
            let name = f.file_name().unwrap();
            assert_eq!(
                std::fs::read(f).unwrap(),
                std::fs::read(b.path().join(name)).unwrap()
            );
        }
        assert!(sa.text_bytes >= 200_000 && sa.exact_dups > 0 && sa.junk > 0);
    }
}
