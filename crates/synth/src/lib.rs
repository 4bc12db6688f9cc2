//! A deterministic synthetic pre-training corpus shaped like TinyLlama's mixture: a
//! natural-language source (encyclopedia paragraphs, stories, arithmetic word problems and
//! quizzes about an invented world) and a code source (small Python-like and Rust-like
//! programs), with planted exact duplicates, near-duplicates, junk, offensive and blocked-URL
//! documents, a ground-truth manifest, and a held-out multiple-choice evaluation set.
//!
//! Everything is a pure function of [`SynthConfig`]: the same config gives byte-identical
//! files. See `docs/synth.md` for the world, the document kinds and the held-out rule.

pub mod arith;
pub mod code;
pub mod names;
pub mod natural;
pub mod planted;
pub mod text;
pub mod world;

use anyhow::{bail, Context, Result};
use arith::{ArithSplit, Op, Triple};
use natural::Ctx;
use planted::{JunkKind, BLOCKLIST, URL_BLOCKLIST};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use tinyllama_model::rng::Rng;
use world::{Fact, World, ALL_RELS};

/// Relative weights of the clean natural document kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NaturalMix {
    pub facts: f64,
    pub stories: f64,
    pub word_problems: f64,
    pub quizzes: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub seed: u64,
    /// Clean natural documents. Planted documents are added on top of this count.
    pub natural_docs: usize,
    /// Clean code documents. Planted duplicates are added on top of this count.
    pub code_docs: usize,
    /// Number of lands, of creatures and of devices (each). Facts: 8 per entity index.
    pub n_entities: usize,
    /// Ordinary people who appear in stories and word problems.
    pub n_people: usize,
    /// Arithmetic operands range over `0..=max_operand`.
    pub max_operand: u32,
    /// Per clean document of each source: expected planted exact copies.
    pub exact_dup_rate: f64,
    /// Per clean document of each source: expected planted near-duplicates.
    pub near_dup_rate: f64,
    /// Near-duplicates are checked to have at least this word-5-gram Jaccard with the original.
    pub near_dup_min_jaccard: f64,
    /// Per clean natural document: planted junk documents.
    pub junk_rate: f64,
    /// Per clean natural document: planted documents containing blocklisted words.
    pub offensive_rate: f64,
    /// Per clean natural document: planted documents whose URL is on a blocked domain.
    pub blocked_url_rate: f64,
    /// Fraction of arithmetic problems (per operator) held out for evaluation.
    pub eval_arith_frac: f64,
    /// Fraction of facts (per relation) held out of the question drills for evaluation.
    pub eval_fact_frac: f64,
    /// Hold out `b plus a` together with `a plus b` (so the eval cannot be answered by
    /// recalling the swapped sum).
    pub hold_out_commuted: bool,
    pub mix: NaturalMix,
    /// Fraction of clean code documents that are Python-like (the rest are Rust-like).
    pub python_frac: f64,
    /// Documents per output part file.
    pub docs_per_part: usize,
    pub zstd_level: i32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1234,
            natural_docs: 9000,
            code_docs: 2000,
            n_entities: 20,
            n_people: 40,
            max_operand: 20,
            exact_dup_rate: 0.03,
            near_dup_rate: 0.03,
            near_dup_min_jaccard: 0.8,
            junk_rate: 0.03,
            offensive_rate: 0.01,
            blocked_url_rate: 0.01,
            eval_arith_frac: 0.1,
            eval_fact_frac: 0.3,
            hold_out_commuted: true,
            mix: NaturalMix {
                facts: 0.25,
                stories: 0.25,
                word_problems: 0.25,
                quizzes: 0.25,
            },
            python_frac: 0.6,
            docs_per_part: 2500,
            zstd_level: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaKind {
    Arithmetic,
    Fact,
}

/// One multiple-choice evaluation item: score each choice as a continuation of `question`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaItem {
    pub kind: QaKind,
    /// `"Question: What is 9 plus 4?\nAnswer:"` — the training drill format up to the answer.
    pub question: String,
    /// Four continuations, each with a leading space (`" 13"`).
    pub choices: Vec<String>,
    pub gold: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantedKind {
    ExactDup,
    NearDup,
    Junk,
    Offensive,
    BlockedUrl,
}

/// Ground truth for one planted document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Planted {
    pub id: String,
    /// `"natural"` or `"code"`.
    pub source: String,
    pub kind: PlantedKind,
    /// For duplicates: the id of the clean original.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub original: Option<String>,
    /// Junk: which quality rule it targets; offensive: the blocked words; near-dup: the
    /// edits and the measured Jaccard; blocked URL: the URL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// Paths relative to the output directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub natural: Vec<String>,
    pub code: Vec<String>,
    pub eval_qa: String,
    pub blocklist: String,
    pub url_blocklist: String,
    pub manifest: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub seed: u64,
    pub config: SynthConfig,
    pub files: Files,
    /// Documents per kind, per source (clean kinds and planted kinds; `total` is the row count).
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// UTF-8 bytes of document text per source.
    pub text_bytes: BTreeMap<String, usize>,
    pub eval_counts: BTreeMap<String, usize>,
    pub held_out_rule: String,
    pub held_out_arithmetic: Vec<Triple>,
    pub held_out_facts: Vec<Fact>,
    pub planted: Vec<Planted>,
    /// Every askable fact (held-out ones included).
    pub facts: Vec<Fact>,
    pub world: World,
}

pub const HELD_OUT_RULE: &str = "Evaluation items are 4-way multiple choice; the prompt is the \
training drill format 'Question: <q>\\nAnswer:' and each choice is a continuation with a leading \
space. ARITHMETIC: each eval item is a problem (a, op, b) with op in {plus, minus, twice} and \
operands in 0..=max_operand. A held-out problem is never written anywhere in the training corpus: \
not as a 'Question:' drill, not as a word problem, not as a worked step ('a plus b is c', \
'Twice a is c'), not as a code example; with hold_out_commuted, 'b plus a' is held out together \
with 'a plus b'. All other problems are training problems. FACTS: each eval item is a \
(subject, relation) pair from the world. Its answer IS stated declaratively in training text \
(encyclopedia paragraphs, stories, quiz reading passages, code lookup tables), but its question \
sentence (e.g. 'What is the capital of Vorlia?') never appears in any training document, in \
drill form or otherwise; questions about the other facts appear in quiz drills. Distractors: \
arithmetic uses numbers within 3 of the answer; facts use other values of the same attribute. \
Planted documents (duplicates, junk, offensive, blocked URL) obey the same rule.";

/// Read `eval_qa.jsonl`.
pub fn load_eval_qa(path: impl AsRef<Path>) -> Result<Vec<QaItem>> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let item: QaItem = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: bad eval item", path.display(), i + 1))?;
        if item.choices.len() < 2 || item.gold >= item.choices.len() {
            bail!("{}:{}: gold index out of range", path.display(), i + 1);
        }
        out.push(item);
    }
    Ok(out)
}

/// Read a manifest written by [`generate`].
pub fn load_manifest(path: impl AsRef<Path>) -> Result<Manifest> {
    let path = path.as_ref();
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))
}

// Independent random streams, so changing one part of the config leaves the others alone.
const S_WORLD: u64 = 1;
const S_SPLIT: u64 = 2;
const S_EVAL: u64 = 3;
const S_FACTS: u64 = 10;
const S_STORIES: u64 = 11;
const S_PROBLEMS: u64 = 12;
const S_QUIZ: u64 = 13;
const S_CODE: u64 = 20;
const S_PLANT_NAT: u64 = 30;
const S_PLANT_CODE: u64 = 31;
const S_SHUFFLE: u64 = 40;
const S_URL: u64 = 41;

struct Doc {
    text: String,
    /// natural: the jsonl `source`; code: the language.
    source: String,
    url: Option<String>,
    kind: &'static str,
    planted: Option<PlantedKind>,
    original: Option<usize>,
    detail: Option<String>,
}

impl Doc {
    fn clean(text: String, source: &str, kind: &'static str) -> Doc {
        Doc {
            text,
            source: source.to_string(),
            url: None,
            kind,
            planted: None,
            original: None,
            detail: None,
        }
    }
}

const SOURCES: [(&str, &str, &str); 4] = [
    ("encyclopedia", "wiki.pebblenook.test", "entry"),
    ("stories", "tales.lumenfold.test", "story"),
    ("math", "mathpond.test", "lesson"),
    ("quiz", "quizhollow.test", "q"),
];

fn split_counts(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| (total as f64 * w / sum).floor() as usize)
        .collect();
    let mut i = 0;
    while counts.iter().sum::<usize>() < total {
        let n = counts.len();
        counts[i % n] += 1;
        i += 1;
    }
    counts
}

fn rate_count(n: usize, rate: f64) -> usize {
    (n as f64 * rate).round() as usize
}

/// Chosen held-out facts: `frac` of each relation's facts (at least one, never all).
fn split_facts(rng: &mut Rng, facts: &[Fact], frac: f64) -> Vec<Fact> {
    let mut held = Vec::new();
    for &rel in ALL_RELS {
        let mut fs: Vec<&Fact> = facts.iter().filter(|f| f.rel == rel).collect();
        rng.shuffle(&mut fs);
        let k = ((fs.len() as f64 * frac).round() as usize).clamp(1, fs.len().saturating_sub(1));
        held.extend(fs[..k].iter().map(|f| (*f).clone()));
    }
    held.sort();
    held
}

fn with_gold(rng: &mut Rng, gold: String, mut wrong: Vec<String>) -> (Vec<String>, usize) {
    rng.shuffle(&mut wrong);
    wrong.truncate(3);
    let g = rng.below(wrong.len() as u64 + 1) as usize;
    wrong.insert(g, gold);
    (wrong.into_iter().map(|c| format!(" {c}")).collect(), g)
}

fn eval_items(
    rng: &mut Rng,
    world: &World,
    split: &ArithSplit,
    held_facts: &[Fact],
) -> Vec<QaItem> {
    let mut items = Vec::new();
    for t in &split.held_out {
        let c = t.result() as i64;
        let wrong: Vec<String> = [-3i64, -2, -1, 1, 2, 3]
            .iter()
            .map(|d| c + d)
            .filter(|&x| x >= 0)
            .map(|x| x.to_string())
            .collect();
        let (choices, gold) = with_gold(rng, c.to_string(), wrong);
        items.push(QaItem {
            kind: QaKind::Arithmetic,
            question: format!("Question: {}\nAnswer:", t.question()),
            choices,
            gold,
        });
    }
    for f in held_facts {
        let wrong: Vec<String> = world
            .answer_pool(f.rel)
            .into_iter()
            .filter(|a| *a != f.answer)
            .collect();
        let (choices, gold) = with_gold(rng, f.answer.clone(), wrong);
        items.push(QaItem {
            kind: QaKind::Fact,
            question: format!("Question: {}\nAnswer:", f.rel.question(&f.subject)),
            choices,
            gold,
        });
    }
    rng.shuffle(&mut items);
    items
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Adds exact and near duplicates of clean documents (indices `0..n_clean`) to `docs`.
fn plant_dups(
    rng: &mut Rng,
    docs: &mut Vec<Doc>,
    n_clean: usize,
    n_exact: usize,
    n_near: usize,
    min_j: f64,
    code: bool,
) -> Result<()> {
    for _ in 0..n_exact {
        let o = rng.below(n_clean as u64) as usize;
        let d = &docs[o];
        let dup = Doc {
            text: d.text.clone(),
            source: d.source.clone(),
            url: None,
            kind: "exact_dup",
            planted: Some(PlantedKind::ExactDup),
            original: Some(o),
            detail: None,
        };
        docs.push(dup);
    }
    let mut made = 0;
    let mut tries = 0;
    while made < n_near {
        tries += 1;
        if tries > 100 * (n_near + 10) {
            bail!("could not make {n_near} near-duplicates with Jaccard >= {min_j}");
        }
        let o = rng.below(n_clean as u64) as usize;
        if word_count(&docs[o].text) < 100 {
            continue;
        }
        let lang = code.then(|| docs[o].source.clone());
        if let Some((text, what, j)) = planted::near_dup(rng, &docs[o].text, lang.as_deref(), min_j)
        {
            let source = docs[o].source.clone();
            docs.push(Doc {
                text,
                source,
                url: None,
                kind: "near_dup",
                planted: Some(PlantedKind::NearDup),
                original: Some(o),
                detail: Some(format!("{what}; jaccard5={j:.3}")),
            });
            made += 1;
        }
    }
    Ok(())
}

fn remove_old_parts(dir: &Path, ext: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("part-") && name.ends_with(ext) {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct NatLine<'a> {
    id: &'a str,
    text: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

fn write_parquet(path: &Path, rows: &[(String, &str, &str)]) -> Result<()> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let schema = Arc::new(parse_message_type(
        "message code {
            REQUIRED BYTE_ARRAY id (UTF8);
            REQUIRED BYTE_ARRAY content (UTF8);
            REQUIRED BYTE_ARRAY lang (UTF8);
        }",
    )?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = SerializedFileWriter::new(file, schema, props)?;
    for chunk in rows.chunks(1000) {
        let mut rg = w.next_row_group()?;
        for col in 0..3 {
            let mut cw = rg.next_column()?.context("missing parquet column")?;
            let vals: Vec<ByteArray> = chunk
                .iter()
                .map(|r| {
                    let s: &str = match col {
                        0 => &r.0,
                        1 => r.1,
                        _ => r.2,
                    };
                    ByteArray::from(s.as_bytes().to_vec())
                })
                .collect();
            cw.typed::<ByteArrayType>().write_batch(&vals, None, None)?;
            cw.close()?;
        }
        rg.close()?;
    }
    w.close()?;
    Ok(())
}

/// Generate the corpus, the eval set, the blocklists and the manifest under `out_dir`.
/// Overwrites earlier output of the same names (stale `part-*` files are removed).
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<Manifest> {
    if cfg.natural_docs < 10 || cfg.code_docs < 10 {
        bail!("need at least 10 natural and 10 code documents");
    }
    if cfg.docs_per_part == 0 {
        bail!("docs_per_part must be positive");
    }
    let seed = cfg.seed;
    let world = World::generate(
        &mut Rng::derive(seed, S_WORLD),
        cfg.n_entities,
        cfg.n_people,
        BLOCKLIST,
    );
    let facts = world.facts();
    let mut split_rng = Rng::derive(seed, S_SPLIT);
    let split = ArithSplit::new(
        &mut split_rng,
        cfg.max_operand,
        cfg.eval_arith_frac,
        cfg.hold_out_commuted,
    );
    let held_facts = split_facts(&mut split_rng, &facts, cfg.eval_fact_frac);
    let drill_facts: Vec<Fact> = facts
        .iter()
        .filter(|f| !held_facts.contains(f))
        .cloned()
        .collect();
    let eval = eval_items(&mut Rng::derive(seed, S_EVAL), &world, &split, &held_facts);
    let ctx = Ctx {
        world: &world,
        drill_facts,
        arith: &split,
    };

    // ---- natural documents ----
    let m = &cfg.mix;
    let per_kind = split_counts(
        cfg.natural_docs,
        &[m.facts, m.stories, m.word_problems, m.quizzes],
    );
    let mut nat: Vec<Doc> = Vec::with_capacity(cfg.natural_docs * 11 / 10);
    {
        let mut r = Rng::derive(seed, S_FACTS);
        for _ in 0..per_kind[0] {
            nat.push(Doc::clean(
                natural::facts_doc(&ctx, &mut r),
                SOURCES[0].0,
                "facts",
            ));
        }
        let mut r = Rng::derive(seed, S_STORIES);
        for _ in 0..per_kind[1] {
            nat.push(Doc::clean(
                natural::story_doc(&ctx, &mut r),
                SOURCES[1].0,
                "story",
            ));
        }
        let mut r = Rng::derive(seed, S_PROBLEMS);
        for _ in 0..per_kind[2] {
            nat.push(Doc::clean(
                natural::problems_doc(&ctx, &mut r),
                SOURCES[2].0,
                "word_problem",
            ));
        }
        let mut r = Rng::derive(seed, S_QUIZ);
        for _ in 0..per_kind[3] {
            nat.push(Doc::clean(
                natural::quiz_doc(&ctx, &mut r),
                SOURCES[3].0,
                "quiz",
            ));
        }
    }
    let n_nat_clean = nat.len();
    {
        let mut r = Rng::derive(seed, S_PLANT_NAT);
        plant_dups(
            &mut r,
            &mut nat,
            n_nat_clean,
            rate_count(n_nat_clean, cfg.exact_dup_rate),
            rate_count(n_nat_clean, cfg.near_dup_rate),
            cfg.near_dup_min_jaccard,
            false,
        )?;
        for i in 0..rate_count(n_nat_clean, cfg.junk_rate) {
            let k = JunkKind::ALL[i % JunkKind::ALL.len()];
            let src = SOURCES[r.below(4) as usize].0;
            let mut d = Doc::clean(planted::junk(&mut r, k), src, "junk");
            d.planted = Some(PlantedKind::Junk);
            d.detail = Some(k.name().to_string());
            nat.push(d);
        }
        for _ in 0..rate_count(n_nat_clean, cfg.offensive_rate) {
            let body = natural::any_clean(&ctx, &mut r);
            let (text, words) = planted::offensive(&mut r, &body);
            let src = SOURCES[r.below(4) as usize].0;
            let mut d = Doc::clean(text, src, "offensive");
            d.planted = Some(PlantedKind::Offensive);
            d.detail = Some(words.join(","));
            nat.push(d);
        }
        for _ in 0..rate_count(n_nat_clean, cfg.blocked_url_rate) {
            let body = natural::any_clean(&ctx, &mut r);
            let src = SOURCES[r.below(4) as usize].0;
            let dom = *natural::pick(&mut r, URL_BLOCKLIST);
            let host = if r.below(2) == 0 {
                dom.to_string()
            } else {
                format!("www.{dom}")
            };
            let url = format!("https://{host}/page/{}", r.below(100_000));
            let mut d = Doc::clean(body, src, "blocked_url");
            d.planted = Some(PlantedKind::BlockedUrl);
            d.url = Some(url.clone());
            d.detail = Some(url);
            nat.push(d);
        }
    }

    // ---- code documents ----
    let mut code: Vec<Doc> = Vec::with_capacity(cfg.code_docs * 11 / 10);
    {
        let cg = code::CodeGen {
            world: &world,
            arith: &split,
        };
        let mut r = Rng::derive(seed, S_CODE);
        let n_py = (cfg.code_docs as f64 * cfg.python_frac).round() as usize;
        for i in 0..cfg.code_docs {
            if i < n_py {
                code.push(Doc::clean(cg.python(&mut r), "python", "python"));
            } else {
                code.push(Doc::clean(cg.rust(&mut r), "rust", "rust"));
            }
        }
        let n = code.len();
        let mut r = Rng::derive(seed, S_PLANT_CODE);
        plant_dups(
            &mut r,
            &mut code,
            n,
            rate_count(n, cfg.exact_dup_rate),
            rate_count(n, cfg.near_dup_rate),
            cfg.near_dup_min_jaccard,
            true,
        )?;
    }

    // ---- order, ids, urls ----
    let order = |docs: &[Doc], stream: u64| -> Vec<usize> {
        let mut p: Vec<usize> = (0..docs.len()).collect();
        Rng::derive(seed, stream).shuffle(&mut p);
        p
    };
    let nat_order = order(&nat, S_SHUFFLE);
    let code_order = order(&code, S_SHUFFLE + 100);
    let mut nat_id = vec![String::new(); nat.len()];
    for (pos, &i) in nat_order.iter().enumerate() {
        nat_id[i] = format!("nat-{pos:06}");
    }
    let mut code_id = vec![String::new(); code.len()];
    for (pos, &i) in code_order.iter().enumerate() {
        code_id[i] = format!("code-{pos:06}");
    }
    {
        let mut r = Rng::derive(seed, S_URL);
        for &i in &nat_order {
            if nat[i].url.is_some() {
                continue;
            }
            let n = r.below(1_000_000);
            let url = match nat[i].planted {
                Some(PlantedKind::ExactDup) | Some(PlantedKind::NearDup) => {
                    format!("https://mirror.tinyarchive.test/copy/{n:06}")
                }
                Some(PlantedKind::Junk) => format!("https://pages.scrapheap.test/p/{n:06}"),
                Some(PlantedKind::Offensive) => {
                    format!("https://forum.chatterbox.test/thread/{n:06}")
                }
                _ => {
                    let (_, host, section) = SOURCES
                        .iter()
                        .find(|s| s.0 == nat[i].source)
                        .copied()
                        .unwrap_or(SOURCES[0]);
                    format!("https://{host}/{section}/{n:06}")
                }
            };
            nat[i].url = Some(url);
        }
    }

    // ---- write ----
    std::fs::create_dir_all(out_dir.join("natural"))
        .with_context(|| format!("creating {}", out_dir.display()))?;
    std::fs::create_dir_all(out_dir.join("code"))?;
    remove_old_parts(&out_dir.join("natural"), ".jsonl.zst")?;
    remove_old_parts(&out_dir.join("code"), ".parquet")?;

    let mut files = Files {
        natural: Vec::new(),
        code: Vec::new(),
        eval_qa: "eval_qa.jsonl".into(),
        blocklist: "blocklist.txt".into(),
        url_blocklist: "url_blocklist.txt".into(),
        manifest: "manifest.json".into(),
    };
    for (p, chunk) in nat_order.chunks(cfg.docs_per_part).enumerate() {
        let rel = format!("natural/part-{p:04}.jsonl.zst");
        let mut buf = Vec::new();
        for &i in chunk {
            let d = &nat[i];
            let line = NatLine {
                id: &nat_id[i],
                text: &d.text,
                source: &d.source,
                url: d.url.as_deref(),
            };
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        let z = zstd::stream::encode_all(&buf[..], cfg.zstd_level)?;
        std::fs::write(out_dir.join(&rel), z)?;
        files.natural.push(rel);
    }
    for (p, chunk) in code_order.chunks(cfg.docs_per_part).enumerate() {
        let rel = format!("code/part-{p:04}.parquet");
        let rows: Vec<(String, &str, &str)> = chunk
            .iter()
            .map(|&i| {
                (
                    code_id[i].clone(),
                    code[i].text.as_str(),
                    code[i].source.as_str(),
                )
            })
            .collect();
        write_parquet(&out_dir.join(&rel), &rows)?;
        files.code.push(rel);
    }
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(out_dir.join(&files.eval_qa))?);
        for it in &eval {
            serde_json::to_writer(&mut f, it)?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    std::fs::write(out_dir.join(&files.blocklist), BLOCKLIST.join("\n") + "\n")?;
    std::fs::write(
        out_dir.join(&files.url_blocklist),
        URL_BLOCKLIST.join("\n") + "\n",
    )?;

    // ---- manifest ----
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut planted_list = Vec::new();
    for (src, docs, ids, ord) in [
        ("natural", &nat, &nat_id, &nat_order),
        ("code", &code, &code_id, &code_order),
    ] {
        let c = counts.entry(src.to_string()).or_default();
        for d in docs.iter() {
            *c.entry(d.kind.to_string()).or_default() += 1;
        }
        c.insert("total".into(), docs.len());
        c.insert(
            "clean".into(),
            docs.iter().filter(|d| d.planted.is_none()).count(),
        );
        for &i in ord.iter() {
            let d = &docs[i];
            if let Some(kind) = d.planted {
                planted_list.push(Planted {
                    id: ids[i].clone(),
                    source: src.to_string(),
                    kind,
                    original: d.original.map(|o| ids[o].clone()),
                    detail: d.detail.clone(),
                });
            }
        }
    }
    let mut text_bytes = BTreeMap::new();
    text_bytes.insert(
        "natural".to_string(),
        nat.iter().map(|d| d.text.len()).sum(),
    );
    text_bytes.insert("code".to_string(), code.iter().map(|d| d.text.len()).sum());
    let mut eval_counts = BTreeMap::new();
    eval_counts.insert(
        "arithmetic".to_string(),
        eval.iter().filter(|e| e.kind == QaKind::Arithmetic).count(),
    );
    eval_counts.insert(
        "fact".to_string(),
        eval.iter().filter(|e| e.kind == QaKind::Fact).count(),
    );
    eval_counts.insert("total".to_string(), eval.len());
    let manifest = Manifest {
        generator: format!("tinyllama-synth {}", env!("CARGO_PKG_VERSION")),
        seed,
        config: cfg.clone(),
        files,
        counts,
        text_bytes,
        eval_counts,
        held_out_rule: HELD_OUT_RULE.to_string(),
        held_out_arithmetic: split.held_out.iter().copied().collect(),
        held_out_facts: held_facts,
        planted: planted_list,
        facts,
        world,
    };
    let json = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(out_dir.join(&manifest.files.manifest), json + "\n")?;
    Ok(manifest)
}

/// True if `tokens` (from [`text::tokens`]) write the problem `t` in one of the surface forms
/// the generator uses: `a plus b`, `a minus b`, `twice a`, `a + b`, `a - b`, `a * 2`. (Example
/// calls in code, `f(a, b)`, are not detectable this way; they only use training problems by
/// construction.)
pub fn mentions_problem(tokens: &[String], t: &Triple) -> bool {
    let (a, b) = (t.a.to_string(), t.b.to_string());
    let seq: Vec<Vec<&str>> = match t.op {
        Op::Plus => vec![vec![&a, "plus", &b], vec![&a, "+", &b]],
        Op::Minus => vec![vec![&a, "minus", &b], vec![&a, "-", &b]],
        Op::Twice => vec![vec!["twice", &a], vec![&a, "*", "2"]],
    };
    seq.iter().any(|s| {
        tokens
            .windows(s.len())
            .any(|w| w.iter().zip(s.iter()).all(|(x, y)| x == y))
    })
}
