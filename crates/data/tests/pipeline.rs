//! End-to-end runs of the pipeline on a generated two-source corpus.

mod common;

use common::{config, corpus, tree};
use tinyllama_data::packed::{PackedReader, PackedShard};
use tinyllama_data::pipeline::{run_stage, run_with, Manifest, RunOptions, Stage};
use tinyllama_data::Report;

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

#[test]
fn end_to_end_two_sources() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let out = dir.path().join("out");
    let cfg = config(&c, &out);
    let report = run_with(&cfg, &quiet()).unwrap();

    // Every record is accounted for.
    assert_eq!(report.scan.docs_in, c.web_docs + c.code_rows as u64);
    let rejected: u64 = report.scan.rejected.values().map(|r| r.docs).sum();
    let dups = report.dedup.exact_duplicates.docs + report.dedup.near_duplicates.docs;
    let written: u64 = report.sources.iter().map(|s| s.docs_out).sum();
    assert_eq!(report.scan.docs_in, rejected + dups + written);
    // The quality filters caught the planted junk, by named rule.
    assert!(report
        .scan
        .rejected
        .keys()
        .any(|k| k.starts_with("gopher_")));
    assert!(report
        .scan
        .rejected
        .values()
        .all(|r| !r.examples.is_empty()));
    // Web documents copied into the code source were removed from the code source.
    let code = &report.sources[1];
    assert!(
        code.exact_duplicates.docs >= c.copied as u64,
        "{:?}",
        code.exact_duplicates
    );
    assert!(report.dedup.near_duplicates.docs > 0);
    assert!(report.dedup.clusters.clusters > 0);
    assert!(!report.dedup.largest_clusters[0].representative.is_empty());

    // Shards: readable, one EOS per document, token totals as reported.
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert!(!m.bos_in_shards);
    for (s, rs) in m.sources.iter().zip(&report.sources) {
        let train = PackedReader::open_prefix(&out.join("train"), &s.name).unwrap();
        assert_eq!(train.len(), rs.train_tokens);
        let all = train.read(0, train.len() as usize).unwrap();
        assert_eq!(
            all.iter().filter(|&&t| t == m.eos_id).count() as u64,
            rs.train_docs
        );
        assert_eq!(*all.last().unwrap(), m.eos_id);
        assert!(!all.contains(&1), "no BOS in shards");
        assert!(rs.val_tokens > 0, "validation split of {}", s.name);
        // Every chunk but the last is full; the last is shorter, not padded.
        for (i, f) in s.train.files.iter().enumerate() {
            let sh = PackedShard::open(&out.join("train").join(f)).unwrap();
            if i + 1 < s.train.files.len() {
                assert_eq!(sh.len(), 5000);
            } else {
                assert!(sh.len() <= 5000);
            }
        }
    }
    let p: f64 = report.sources.iter().map(|s| s.realised_proportion).sum();
    assert!((p - 1.0).abs() < 1e-9);
    assert!((report.sources[0].target_proportion - 0.7).abs() < 1e-9);

    // report.json is what was returned, and the tables render.
    let saved: Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved.sources, report.sources);
    let t = report.tables();
    assert!(t.contains("dedup/exact") && t.contains("realised"), "{t}");
    eprintln!("{t}");

    // The first training document decodes back to prose from the corpus.
    let tok = tokenizers::Tokenizer::from_file(&c.tokenizer).unwrap();
    let train = PackedReader::open_prefix(&out.join("train"), "web").unwrap();
    let head = train.read(0, 20000.min(train.len() as usize)).unwrap();
    let end = head.iter().position(|&t| t == m.eos_id).unwrap();
    let text = tok.decode(&head[..end], true).unwrap();
    assert!(text.len() > 100 && text.contains(' '), "{text}");

    // Running again does nothing new and gives the same result.
    let before = tree(&out.join("train"));
    let again = run_with(&cfg, &quiet()).unwrap();
    assert_eq!(again.sources, report.sources);
    assert_eq!(tree(&out.join("train")), before);
}

#[test]
fn same_output_whatever_threads_batches_or_shards() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());

    let out1 = dir.path().join("one");
    let mut cfg1 = config(&c, &out1);
    cfg1.ingest.batch_docs = 7;
    cfg1.ingest.open_files = Some(1);
    let r1 = run_with(
        &cfg1,
        &RunOptions {
            threads: Some(1),
            ..quiet()
        },
    )
    .unwrap();

    let out2 = dir.path().join("many");
    let mut cfg2 = config(&c, &out2);
    cfg2.ingest.batch_docs = 5000;
    cfg2.ingest.open_files = Some(4);
    let r2 = run_with(
        &cfg2,
        &RunOptions {
            threads: Some(4),
            ..quiet()
        },
    )
    .unwrap();

    // A Slurm-style run: scan per shard, one merge, emit per shard, one pack.
    let out3 = dir.path().join("sharded");
    let cfg3 = config(&c, &out3);
    let shard = |i| RunOptions {
        shard_index: i,
        num_shards: 3,
        ..quiet()
    };
    // Stages refuse to run before their inputs exist.
    let e = run_stage(&cfg3, Stage::Merge, &quiet()).unwrap_err();
    assert!(
        format!("{e:#}").contains("scan stage is not complete"),
        "{e:#}"
    );
    for i in 0..3 {
        run_stage(&cfg3, Stage::Scan, &shard(i)).unwrap();
    }
    assert!(
        run_stage(&cfg3, Stage::Merge, &shard(0)).is_err(),
        "merge is a single task"
    );
    run_stage(&cfg3, Stage::Merge, &quiet()).unwrap();
    for i in (0..3).rev() {
        run_stage(&cfg3, Stage::Emit, &shard(i)).unwrap();
    }
    let r3 = run_stage(&cfg3, Stage::Pack, &quiet()).unwrap().unwrap();

    for (a, b) in [(&r1, &r2), (&r1, &r3)] {
        assert_eq!(a.sources, b.sources);
        assert_eq!(a.dedup, b.dedup);
        assert_eq!(a.scan, b.scan);
    }
    for sub in ["train", "validation"] {
        let t1 = tree(&out1.join(sub));
        assert!(!t1.is_empty());
        assert_eq!(t1, tree(&out2.join(sub)), "{sub}: threads/batches");
        assert_eq!(t1, tree(&out3.join(sub)), "{sub}: sharding");
    }
}

#[test]
fn resumes_after_interruption_without_loss_or_duplication() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let out = dir.path().join("out");
    let cfg = config(&c, &out);
    let full = run_with(&cfg, &quiet()).unwrap();
    let shards = tree(&out.join("train"));

    // Simulate crashes at different points: a scan that never wrote its marker, an emit
    // that left only a temporary file, the merge marker lost, and output shards removed.
    let work = out.join("work");
    std::fs::remove_file(work.join("scan/00001.json")).unwrap();
    std::fs::remove_file(work.join("emit/00000.json")).unwrap();
    std::fs::remove_file(work.join("emit/00000.train")).unwrap();
    std::fs::write(work.join("emit/.00000.train.tmp.999"), b"partial").unwrap();
    std::fs::remove_file(work.join("merge/merge.json")).unwrap();
    std::fs::remove_file(out.join("train/web-00000.bin")).unwrap();

    let resumed = run_with(&cfg, &quiet()).unwrap();
    assert_eq!(resumed.sources, full.sources);
    assert_eq!(resumed.dedup, full.dedup);
    assert_eq!(tree(&out.join("train")), shards);

    // A changed configuration redoes exactly the affected work: a different validation
    // fraction keeps the scan and merge but re-emits.
    let mut cfg2 = cfg.clone();
    cfg2.output.validation_fraction = 0.2;
    let r = run_with(&cfg2, &quiet()).unwrap();
    assert_eq!(r.scan, full.scan);
    let v: u64 = r.sources.iter().map(|s| s.val_docs).sum();
    let v0: u64 = full.sources.iter().map(|s| s.val_docs).sum();
    assert!(v > v0);
}

#[test]
fn near_dedup_spilled_to_disk_matches_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let a = run_with(&config(&c, &dir.path().join("a")), &quiet()).unwrap();
    let mut cfg = config(&c, &dir.path().join("b"));
    cfg.dedup.memory_budget_mb = 0.002; // ~2 kB: every band partitioned on disk
    let b = run_with(&cfg, &quiet()).unwrap();
    assert!(b.dedup.clusters.partitions_per_band > 1);
    assert_eq!(a.dedup.near_duplicates, b.dedup.near_duplicates);
    assert_eq!(a.dedup.exact_duplicates, b.dedup.exact_duplicates);
    assert_eq!(a.sources, b.sources);
    assert_eq!(
        tree(&dir.path().join("a/train")),
        tree(&dir.path().join("b/train"))
    );
}

#[test]
fn slimpajama_preset_and_jsonl_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let out = dir.path().join("out");
    let mut cfg = config(&c, &out);
    cfg.dedup.preset = Some("slimpajama".into());
    cfg.output.format = tinyllama_data::config::OutputFormat::Jsonl;
    cfg.tokenizer = None;
    let r = run_with(&cfg, &quiet()).unwrap();
    assert_eq!(r.dedup.params.unwrap().bands, 9);
    // Kept documents as zstd jsonl, one file per input file.
    let mut n = 0u64;
    for (name, bytes) in tree(&out) {
        if name.ends_with(".jsonl.zst") {
            let text = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap();
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v["text"].is_string() && v["id"].is_string());
                n += 1;
            }
        }
    }
    assert_eq!(n, r.sources.iter().map(|s| s.docs_out).sum::<u64>());
}

#[test]
fn document_tokenizer_matches_hf_on_a_trained_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus(dir.path());
    let raw = tokenizers::Tokenizer::from_file(&c.tokenizer).unwrap();
    let doc = tinyllama_data::fasttok::DocTokenizer::new(raw.clone());
    assert!(doc.accelerated());
    let mut reference = raw.clone();
    reference.set_encode_special_tokens(true);
    let lex = tinyllama_data::benchcorpus::Lexicon::new(20000, 5);
    let mut r = tinyllama_model::rng::Rng::new(8);
    for i in 0..300 {
        let mut t = if i % 3 == 0 {
            lex.code(&mut r)
        } else {
            lex.document(&mut r)
        };
        if i % 7 == 0 {
            t = format!("  {t}  ünïcödé 🦀 </s>");
        }
        let want = reference.encode(t.as_str(), false).unwrap();
        assert_eq!(doc.encode(&t).unwrap(), want.get_ids());
    }
}
