//! Shared test fixtures: a small generated corpus in two sources and a tokenizer trained on it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tinyllama_data::benchcorpus::{generate, write_parquet, CorpusSpec, Lexicon};
use tinyllama_data::config::{PipelineConfig, SourceConfig, TokenizerRef};
use tinyllama_data::filters::FiltersConfig;
use tinyllama_data::tokenizer_train::{save, train, TrainOptions};
use tinyllama_model::rng::Rng;

pub struct Corpus {
    pub web: PathBuf,
    pub code: PathBuf,
    pub tokenizer: PathBuf,
    /// Web texts copied into the code source (cross-source exact duplicates).
    pub copied: usize,
    pub code_rows: usize,
    pub web_docs: u64,
}

/// Writes the corpus and a tokenizer under `dir`.
pub fn corpus(dir: &Path) -> Corpus {
    let web = dir.join("web");
    let sum = generate(
        &web,
        &CorpusSpec {
            bytes: 400_000,
            files: 3,
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    // Code rows, plus a few web documents copied verbatim (they must go as duplicates of
    // the web source, which comes first).
    let lex = Lexicon::new(3000, 9);
    let mut r = Rng::new(3);
    let mut rows: Vec<Option<String>> = (0..150).map(|_| Some(lex.code(&mut r))).collect();
    let first_web = first_docs(&sum.files[0], 5);
    let copied = first_web.len();
    for (i, t) in first_web.into_iter().enumerate() {
        rows.insert(10 + i * 7, Some(t));
    }
    let code = dir.join("code");
    std::fs::create_dir_all(&code).unwrap();
    let n = rows.len();
    write_parquet(&code.join("code-00000.parquet"), &[("content", rows)], 40).unwrap();

    // A tokenizer trained on a sample of the same kind of text.
    let lex2 = Lexicon::new(20000, 7);
    let mut r2 = Rng::new(11);
    let mut texts: Vec<String> = (0..300).map(|_| lex2.document(&mut r2)).collect();
    texts.extend((0..50).map(|_| lex.code(&mut r2)));
    let tok = train(
        texts,
        &TrainOptions {
            vocab_size: 1024,
            ..Default::default()
        },
    )
    .unwrap();
    let tdir = dir.join("tok");
    std::fs::create_dir_all(&tdir).unwrap();
    save(&tok, &tdir).unwrap();
    Corpus {
        web,
        code,
        tokenizer: tdir.join("tokenizer.json"),
        copied,
        code_rows: n,
        web_docs: sum.docs,
    }
}

fn first_docs(path: &Path, n: usize) -> Vec<String> {
    let bytes = zstd::decode_all(std::fs::File::open(path).unwrap()).unwrap();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let t = v["text"].as_str().unwrap().to_string();
            // Only documents that pass the quality filters in the web source.
            (t.len() > 400 && t.lines().count() >= 3).then_some(t)
        })
        .take(n)
        .collect()
}

/// The standard two-source config: quality filters on the web source, none on code.
pub fn config(c: &Corpus, out: &Path) -> PipelineConfig {
    let mut web = SourceConfig::new("web", &[&c.web.display().to_string()]);
    web.id_field = Some("id".into());
    web.url_field = Some("url".into());
    web.weight = 0.7;
    let mut code = SourceConfig::new("code", &[&c.code.join("*.parquet").display().to_string()]);
    code.text_field = "content".into();
    code.apply_filters = false;
    code.weight = 0.3;
    let mut cfg = PipelineConfig::new(out, vec![web, code]);
    cfg.filters = FiltersConfig::all_quality();
    cfg.tokenizer = Some(TokenizerRef::new(&c.tokenizer));
    cfg.output.chunk_size = 5000;
    cfg.output.validation_fraction = 0.05;
    cfg
}

/// All files under `dir` with their bytes, by relative path.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut es: Vec<_> = std::fs::read_dir(d).unwrap().flatten().collect();
        es.sort_by_key(|e| e.file_name());
        for e in es {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push((
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}
