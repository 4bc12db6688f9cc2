//! End-to-end checks of the generated corpus: determinism, readable outputs, manifest
//! ground truth, the held-out property, near-duplicate similarity, and that clean documents
//! survive (and junk fails) standard Gopher quality and repetition rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use tinyllama_synth::arith::{Op, Triple};
use tinyllama_synth::planted::{BLOCKLIST, URL_BLOCKLIST};
use tinyllama_synth::text::{jaccard, jaccard5_norm, norm_words, shingles, tokens};
use tinyllama_synth::{
    generate, load_eval_qa, load_manifest, mentions_problem, Manifest, PlantedKind, QaKind,
    SynthConfig,
};

struct Corpus {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manifest: Manifest,
    /// id -> (text, source, url)
    natural: Vec<(String, String, String, Option<String>)>,
    /// (id, content, lang)
    code: Vec<(String, String, String)>,
}

fn read_natural(root: &Path, m: &Manifest) -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for rel in &m.files.natural {
        let z = std::fs::read(root.join(rel)).unwrap();
        let raw = zstd::stream::decode_all(&z[..]).unwrap();
        for line in raw.lines() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).expect("jsonl line parses");
            out.push((
                v["id"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
                v["source"].as_str().unwrap().to_string(),
                v["url"].as_str().map(|s| s.to_string()),
            ));
        }
    }
    out
}

fn read_code(root: &Path, m: &Manifest) -> Vec<(String, String, String)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let mut out = Vec::new();
    for rel in &m.files.code {
        let f = std::fs::File::open(root.join(rel)).unwrap();
        let r = SerializedFileReader::new(f).expect("parquet opens");
        let schema = r.metadata().file_metadata().schema_descr();
        let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "content", "lang"]);
        for row in r.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            out.push((
                row.get_string(0).unwrap().clone(),
                row.get_string(1).unwrap().clone(),
                row.get_string(2).unwrap().clone(),
            ));
        }
    }
    out
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let t = Instant::now();
        let manifest = generate(&SynthConfig::default(), &root).unwrap();
        eprintln!(
            "default corpus generated in {:.2} s: {:?} text bytes",
            t.elapsed().as_secs_f64(),
            manifest.text_bytes
        );
        let natural = read_natural(&root, &manifest);
        let code = read_code(&root, &manifest);
        Corpus {
            _dir: dir,
            root,
            manifest,
            natural,
            code,
        }
    })
}

fn planted_by_id(m: &Manifest) -> HashMap<&str, &tinyllama_synth::Planted> {
    m.planted.iter().map(|p| (p.id.as_str(), p)).collect()
}

fn all_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

#[test]
fn deterministic_per_seed() {
    let c = corpus();
    let a = all_files(&c.root);
    let d2 = tempfile::tempdir().unwrap();
    generate(&SynthConfig::default(), d2.path()).unwrap();
    let b = all_files(d2.path());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{k} differs between two runs with the same seed"
        );
    }
    let d3 = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        seed: 99,
        ..SynthConfig::default()
    };
    generate(&cfg, d3.path()).unwrap();
    let c3 = all_files(d3.path());
    for k in [
        "natural/part-0000.jsonl.zst",
        "code/part-0000.parquet",
        "eval_qa.jsonl",
    ] {
        assert!(a[k] != c3[k], "{k} identical for different seeds");
    }
}

#[test]
fn files_read_back_and_counts_match_manifest() {
    let c = corpus();
    let m = &c.manifest;
    let reloaded = load_manifest(c.root.join(&m.files.manifest)).unwrap();
    assert_eq!(reloaded.planted, m.planted);
    assert_eq!(c.natural.len(), m.counts["natural"]["total"]);
    assert_eq!(c.code.len(), m.counts["code"]["total"]);
    assert!(m.files.natural.len() >= 2, "several natural parts");
    // Unique ids.
    let ids: HashSet<&str> = c
        .natural
        .iter()
        .map(|d| d.0.as_str())
        .chain(c.code.iter().map(|d| d.0.as_str()))
        .collect();
    assert_eq!(ids.len(), c.natural.len() + c.code.len());
    // Planted counts per kind agree with the manifest counts and with the rates.
    let cfg = &m.config;
    for src in ["natural", "code"] {
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for p in m.planted.iter().filter(|p| p.source == src) {
            let k = match p.kind {
                PlantedKind::ExactDup => "exact_dup",
                PlantedKind::NearDup => "near_dup",
                PlantedKind::Junk => "junk",
                PlantedKind::Offensive => "offensive",
                PlantedKind::BlockedUrl => "blocked_url",
            };
            *by_kind.entry(k).or_default() += 1;
            assert!(
                ids.contains(p.id.as_str()),
                "planted id {} not in data",
                p.id
            );
            if let Some(o) = &p.original {
                assert!(ids.contains(o.as_str()));
            }
        }
        for (k, n) in &by_kind {
            assert_eq!(m.counts[src][*k], *n, "{src} {k}");
        }
        let clean = m.counts[src]["clean"];
        let expect = |r: f64| (clean as f64 * r).round() as usize;
        assert_eq!(
            by_kind.get("exact_dup").copied().unwrap_or(0),
            expect(cfg.exact_dup_rate)
        );
        assert_eq!(
            by_kind.get("near_dup").copied().unwrap_or(0),
            expect(cfg.near_dup_rate)
        );
        if src == "natural" {
            assert_eq!(by_kind["junk"], expect(cfg.junk_rate));
            assert_eq!(by_kind["offensive"], expect(cfg.offensive_rate));
            assert_eq!(by_kind["blocked_url"], expect(cfg.blocked_url_rate));
        }
        assert_eq!(
            m.counts[src]["total"],
            clean + by_kind.values().sum::<usize>()
        );
    }
    assert_eq!(
        c.natural.len() - m.counts["natural"]["clean"],
        m.planted.iter().filter(|p| p.source == "natural").count()
    );
    // Lang column.
    for (_, content, lang) in &c.code {
        assert!(lang == "python" || lang == "rust");
        assert!(!content.is_empty());
    }
    // Blocklists are one entry per line.
    let bl = std::fs::read_to_string(c.root.join(&m.files.blocklist)).unwrap();
    assert_eq!(bl.lines().collect::<Vec<_>>(), BLOCKLIST);
    let ub = std::fs::read_to_string(c.root.join(&m.files.url_blocklist)).unwrap();
    assert_eq!(ub.lines().collect::<Vec<_>>(), URL_BLOCKLIST);
}

#[test]
fn duplicates_match_their_originals() {
    let c = corpus();
    let text: HashMap<&str, &str> = c
        .natural
        .iter()
        .map(|d| (d.0.as_str(), d.1.as_str()))
        .chain(c.code.iter().map(|d| (d.0.as_str(), d.1.as_str())))
        .collect();
    let planted = planted_by_id(&c.manifest);
    let mut min_j = 1.0f64;
    for p in &c.manifest.planted {
        let Some(o) = &p.original else { continue };
        assert!(
            !planted.contains_key(o.as_str()),
            "originals are clean docs"
        );
        let (a, b) = (text[p.id.as_str()], text[o.as_str()]);
        match p.kind {
            PlantedKind::ExactDup => assert_eq!(a, b),
            PlantedKind::NearDup => {
                assert_ne!(a, b);
                let j = jaccard5_norm(a, b);
                min_j = min_j.min(j);
                assert!(j >= 0.8, "near-dup {} has Jaccard {j:.3}", p.id);
            }
            _ => panic!("only duplicates have originals"),
        }
    }
    eprintln!("lowest near-dup word-5-gram Jaccard: {min_j:.3}");
}

/// Clean documents must not be near-duplicates of each other by accident (the dedup stage is
/// scored against the manifest). MinHash LSH for candidates, exact Jaccard to confirm.
#[test]
fn clean_docs_are_not_near_duplicates_of_each_other() {
    let c = corpus();
    let planted = planted_by_id(&c.manifest);
    let docs: Vec<&str> = c
        .natural
        .iter()
        .filter(|d| !planted.contains_key(d.0.as_str()))
        .map(|d| d.1.as_str())
        .chain(
            c.code
                .iter()
                .filter(|d| !planted.contains_key(d.0.as_str()))
                .map(|d| d.1.as_str()),
        )
        .collect();
    const K: usize = 64;
    const ROWS: usize = 4;
    let sh: Vec<HashSet<u64>> = docs.iter().map(|t| shingles(&norm_words(t), 5)).collect();
    let mix = |x: u64, i: u64| {
        let mut z = x ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 29)
    };
    let sigs: Vec<[u64; K]> = sh
        .iter()
        .map(|s| {
            let mut sig = [u64::MAX; K];
            for &h in s {
                for (i, v) in sig.iter_mut().enumerate() {
                    *v = (*v).min(mix(h, i as u64 + 1));
                }
            }
            sig
        })
        .collect();
    let mut cands: BTreeSet<(usize, usize)> = BTreeSet::new();
    for band in 0..K / ROWS {
        let mut buckets: HashMap<&[u64], Vec<usize>> = HashMap::new();
        for (i, s) in sigs.iter().enumerate() {
            buckets
                .entry(&s[band * ROWS..(band + 1) * ROWS])
                .or_default()
                .push(i);
        }
        for v in buckets.values() {
            for x in 0..v.len() {
                for y in x + 1..v.len() {
                    cands.insert((v[x], v[y]));
                }
            }
        }
    }
    let mut worst = (0.0f64, 0, 0);
    let mut over_half = 0;
    for &(a, b) in &cands {
        let j = jaccard(&sh[a], &sh[b]);
        if j > worst.0 {
            worst = (j, a, b);
        }
        if j >= 0.5 {
            over_half += 1;
        }
    }
    eprintln!(
        "{} candidate pairs; {over_half} with Jaccard >= 0.5; max {:.3}",
        cands.len(),
        worst.0
    );
    assert!(
        worst.0 < 0.7,
        "clean docs too similar ({:.3}):\n---\n{}\n---\n{}",
        worst.0,
        docs[worst.1],
        docs[worst.2]
    );
}

#[test]
fn eval_items_are_well_formed() {
    let c = corpus();
    let items = load_eval_qa(c.root.join(&c.manifest.files.eval_qa)).unwrap();
    let n_ar = items
        .iter()
        .filter(|i| i.kind == QaKind::Arithmetic)
        .count();
    let n_f = items.iter().filter(|i| i.kind == QaKind::Fact).count();
    eprintln!("eval: {n_ar} arithmetic, {n_f} fact items");
    assert_eq!(n_ar, c.manifest.eval_counts["arithmetic"]);
    assert_eq!(n_f, c.manifest.eval_counts["fact"]);
    assert!(n_ar >= 40 && n_f >= 40);
    let mut gold_pos = [0usize; 4];
    for it in &items {
        assert!(it.question.starts_with("Question: ") && it.question.ends_with("?\nAnswer:"));
        assert_eq!(it.choices.len(), 4, "{it:?}");
        let set: HashSet<&String> = it.choices.iter().collect();
        assert_eq!(set.len(), 4, "distinct choices: {it:?}");
        assert!(it.choices.iter().all(|c| c.starts_with(' ') && c.len() > 1));
        gold_pos[it.gold] += 1;
    }
    assert!(
        gold_pos.iter().all(|&n| n > 10),
        "gold positions shuffled: {gold_pos:?}"
    );
    // The first line of the eval file is exactly the documented shape.
    let first = std::fs::read_to_string(c.root.join("eval_qa.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["kind", "question", "choices", "gold"])
    );
}

/// The held-out property, checked on the written files (natural and code, planted included).
#[test]
fn eval_items_never_appear_in_training_text() {
    let c = corpus();
    let m = &c.manifest;
    let items = load_eval_qa(c.root.join(&m.files.eval_qa)).unwrap();
    let texts: Vec<&str> = c
        .natural
        .iter()
        .map(|d| d.1.as_str())
        .chain(c.code.iter().map(|d| d.1.as_str()))
        .collect();
    let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    // Facts: the question sentence never appears anywhere, in any casing.
    let mut fact_q = Vec::new();
    for it in items.iter().filter(|i| i.kind == QaKind::Fact) {
        let q = it
            .question
            .strip_prefix("Question: ")
            .unwrap()
            .strip_suffix("\nAnswer:")
            .unwrap()
            .to_lowercase();
        fact_q.push(q);
    }
    for (i, t) in lower.iter().enumerate() {
        for q in &fact_q {
            assert!(
                !t.contains(q.as_str()),
                "held-out question {q:?} in doc {i}"
            );
        }
        for it in &items {
            assert!(!texts[i].contains(&it.question));
        }
    }
    // Arithmetic: no held-out problem in any surface form.
    let held: BTreeSet<Triple> = m.held_out_arithmetic.iter().copied().collect();
    assert_eq!(held.len(), m.eval_counts["arithmetic"]);
    if m.config.hold_out_commuted {
        for t in &held {
            if t.op == Op::Plus {
                assert!(held.contains(&Triple {
                    a: t.b,
                    op: Op::Plus,
                    b: t.a
                }));
            }
        }
    }
    let mut seen_train: BTreeMap<Triple, usize> = BTreeMap::new();
    for t in texts.iter() {
        let toks = tokens(t);
        for h in &held {
            assert!(
                !mentions_problem(&toks, h),
                "held-out {h:?} written in:\n{t}"
            );
        }
        // Exposure statistics for the training problems (worked steps and drills).
        for w in toks.windows(3) {
            if let (Ok(a), Ok(b)) = (w[0].parse::<u32>(), w[2].parse::<u32>()) {
                let op = match w[1].as_str() {
                    "plus" => Op::Plus,
                    "minus" => Op::Minus,
                    _ => continue,
                };
                *seen_train.entry(Triple { a, op, b }).or_default() += 1;
            }
        }
    }
    let mut counts: Vec<usize> = seen_train.values().copied().collect();
    counts.sort();
    eprintln!(
        "training plus/minus problems written: {} distinct, exposures min {} median {} max {}",
        counts.len(),
        counts[0],
        counts[counts.len() / 2],
        counts[counts.len() - 1]
    );
    // Every held-out fact is still stated declaratively many times.
    let mut stated = Vec::new();
    for f in &m.held_out_facts {
        let phr: Vec<String> = f.rel.statements(&f.subject, &f.answer);
        let n = texts
            .iter()
            .filter(|t| phr.iter().any(|p| t.contains(p.as_str())))
            .count();
        stated.push(n);
    }
    stated.sort();
    eprintln!(
        "held-out facts: docs stating each one: min {} median {}",
        stated[0],
        stated[stated.len() / 2]
    );
    assert!(
        stated[0] >= 20,
        "every held-out fact is stated in >= 20 docs"
    );
    // Drilled facts do appear in the drill form (so the format is learnable).
    let drill_q: usize = m
        .facts
        .iter()
        .filter(|f| !m.held_out_facts.contains(f))
        .filter(|f| {
            let q = format!(
                "Question: {}\nAnswer: {}",
                f.rel.question(&f.subject),
                f.answer
            );
            texts.iter().any(|t| t.contains(&q))
        })
        .count();
    assert_eq!(drill_q, m.facts.len() - m.held_out_facts.len());
}

#[test]
fn blocklists_only_hit_planted_docs() {
    let c = corpus();
    let planted = planted_by_id(&c.manifest);
    let mut off = 0;
    let mut blocked = 0;
    for (id, text, _, url) in &c.natural {
        let words: HashSet<String> = norm_words(text).into_iter().collect();
        let hit = BLOCKLIST.iter().any(|w| words.contains(*w));
        let host = url
            .as_deref()
            .and_then(|u| u.strip_prefix("https://"))
            .and_then(|u| u.split('/').next())
            .unwrap_or("");
        let url_hit = URL_BLOCKLIST
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")));
        match planted.get(id.as_str()).map(|p| p.kind) {
            Some(PlantedKind::Offensive) => {
                assert!(hit, "offensive doc {id} has no blocked word");
                off += 1;
            }
            Some(PlantedKind::BlockedUrl) => {
                assert!(url_hit && !hit);
                blocked += 1;
            }
            _ => {
                let lower = text.to_lowercase();
                assert!(
                    !BLOCKLIST.iter().any(|w| lower.contains(w)),
                    "clean doc {id} contains a blocked word"
                );
                assert!(!url_hit, "clean doc {id} on a blocked domain");
            }
        }
    }
    for (id, text, _) in &c.code {
        let lower = text.to_lowercase();
        assert!(!BLOCKLIST.iter().any(|w| lower.contains(w)), "{id}");
    }
    assert_eq!(off, c.manifest.counts["natural"]["offensive"]);
    assert_eq!(blocked, c.manifest.counts["natural"]["blocked_url"]);
}

// ---------------------------------------------------------------------------------------------
// A reference implementation of the Gopher rules (Rae et al. 2021) with the published
// thresholds, to check that clean natural documents pass and junk fails.
// ---------------------------------------------------------------------------------------------

const STOP: &[&str] = &["the", "be", "to", "of", "and", "that", "have", "with"];

fn gopher_failures(text: &str) -> Vec<&'static str> {
    let mut fails = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if !(50..=100_000).contains(&n) {
        fails.push("word_count");
    }
    if n == 0 {
        return fails;
    }
    let non_sym: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| w.chars().any(|c| c.is_alphanumeric()))
        .collect();
    let mean = non_sym.iter().map(|w| w.chars().count()).sum::<usize>() as f64
        / non_sym.len().max(1) as f64;
    if !(3.0..=10.0).contains(&mean) {
        fails.push("mean_word_length");
    }
    let sym = text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
    if sym as f64 / n as f64 > 0.1 {
        fails.push("symbol_ratio");
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bullets = lines
        .iter()
        .filter(|l| {
            let t = l.trim_start();
            ["•", "-", "*", "·", "‣", "●"]
                .iter()
                .any(|b| t.starts_with(b))
        })
        .count();
    if bullets as f64 > 0.9 * lines.len() as f64 {
        fails.push("bullet_lines");
    }
    let ell = lines
        .iter()
        .filter(|l| l.trim_end().ends_with("...") || l.trim_end().ends_with('…'))
        .count();
    if ell as f64 > 0.3 * lines.len() as f64 {
        fails.push("ellipsis_lines");
    }
    let alpha = words
        .iter()
        .filter(|w| w.chars().any(|c| c.is_alphabetic()))
        .count();
    if (alpha as f64) < 0.8 * n as f64 {
        fails.push("alpha_ratio");
    }
    let lw: Vec<String> = words
        .iter()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    if lw.iter().filter(|w| STOP.contains(&w.as_str())).count() < 2 {
        fails.push("stop_words");
    }
    // Repetition.
    let total_chars = text.chars().count() as f64;
    let dup_frac = |units: &[&str]| {
        let mut seen = HashSet::new();
        let (mut dn, mut dc) = (0usize, 0usize);
        for u in units {
            if !seen.insert(*u) {
                dn += 1;
                dc += u.chars().count();
            }
        }
        (
            dn as f64 / units.len().max(1) as f64,
            dc as f64 / total_chars,
        )
    };
    let (ln, lc) = dup_frac(&lines);
    if ln > 0.3 || lc > 0.2 {
        fails.push("dup_lines");
    }
    let paras: Vec<&str> = text
        .split("\n\n")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    let (pn, pc) = dup_frac(&paras);
    if pn > 0.3 || pc > 0.2 {
        fails.push("dup_paragraphs");
    }
    let word_chars: f64 = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64;
    for (k, th) in [(2usize, 0.20), (3, 0.18), (4, 0.16)] {
        if n < k {
            continue;
        }
        let mut cnt: HashMap<&[&str], usize> = HashMap::new();
        for g in words.windows(k) {
            *cnt.entry(g).or_default() += 1;
        }
        if let Some((g, c)) = cnt.iter().max_by_key(|(g, c)| (**c, g.join(" "))) {
            if *c > 1 {
                let chars: usize = g.iter().map(|w| w.chars().count()).sum();
                if (chars * c) as f64 / word_chars > th {
                    fails.push("top_ngram");
                }
            }
        }
    }
    for (k, th) in [
        (5usize, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    ] {
        if n < k {
            continue;
        }
        let mut cnt: HashMap<&[&str], usize> = HashMap::new();
        for g in words.windows(k) {
            *cnt.entry(g).or_default() += 1;
        }
        let mut covered = vec![false; n];
        for (i, g) in words.windows(k).enumerate() {
            if cnt[g] > 1 {
                for c in covered.iter_mut().skip(i).take(k) {
                    *c = true;
                }
            }
        }
        let chars: usize = (0..n)
            .filter(|&i| covered[i])
            .map(|i| words[i].chars().count())
            .sum();
        if chars as f64 / word_chars > th {
            fails.push("dup_ngrams");
            break;
        }
    }
    fails
}

#[test]
fn gopher_rules_keep_clean_docs_and_reject_junk() {
    let c = corpus();
    let planted = planted_by_id(&c.manifest);
    let mut stats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut example_fail: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for (id, text, source, _) in &c.natural {
        let f = gopher_failures(text);
        let key = match planted.get(id.as_str()) {
            Some(p) if p.kind == PlantedKind::Junk => {
                format!("junk/{}", p.detail.as_deref().unwrap_or(""))
            }
            Some(p) => format!("{:?}", p.kind),
            None => format!("clean/{source}"),
        };
        let e = stats.entry(key.clone()).or_default();
        e.0 += 1;
        if f.is_empty() {
            e.1 += 1;
        } else if !key.starts_with("junk") {
            for r in &f {
                *reasons.entry(r).or_default() += 1;
            }
            example_fail
                .entry(key.clone())
                .or_insert_with(|| (text.clone(), f.clone()));
        }
    }
    for (k, (n, pass)) in &stats {
        eprintln!("{k:28} {n:6} docs, {pass:6} pass Gopher");
    }
    eprintln!("failure reasons (all but junk): {reasons:?}");
    for (k, (t, f)) in &example_fail {
        eprintln!("example failure of a {k} doc {f:?}:\n{t}\n");
    }
    for (k, (n, pass)) in &stats {
        if k.starts_with("junk/") {
            assert_eq!(*pass, 0, "{k}: junk passing Gopher");
        } else {
            // Clean docs, duplicates, offensive and blocked-URL docs are fine text.
            assert!(
                *pass as f64 >= 0.98 * *n as f64,
                "{k}: only {pass}/{n} pass"
            );
        }
    }
}

#[test]
fn generation_time_is_small() {
    let d = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let m = generate(&SynthConfig::default(), d.path()).unwrap();
    eprintln!(
        "default config: {:.2} s, {} natural + {} code docs, {:?} text bytes",
        t.elapsed().as_secs_f64(),
        m.counts["natural"]["total"],
        m.counts["code"]["total"],
        m.text_bytes
    );
}
