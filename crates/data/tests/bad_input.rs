//! Every kind of bad input is planted; the run must complete, account for every record under a
//! named reason with its `file:line`, and keep everything that is usable.

use std::io::Write;
use std::path::Path;
use tinyllama_data::benchcorpus::write_parquet;
use tinyllama_data::config::{OutputFormat, PipelineConfig, SourceConfig, Utf8Policy};
use tinyllama_data::pipeline::{run_with, RunOptions};
use tinyllama_data::Report;

const GOOD: &str = "A perfectly ordinary document about the river and the boats.";

fn line(text: &str) -> String {
    serde_json::json!({ "text": text, "meta": {"set": "web"} }).to_string()
}

fn gz(lines: &[String]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in lines {
        writeln!(e, "{l}").unwrap();
    }
    e.finish().unwrap()
}

fn zst(lines: &[String]) -> Vec<u8> {
    let mut e = zstd::Encoder::new(Vec::new(), 3).unwrap();
    for l in lines {
        writeln!(e, "{l}").unwrap();
    }
    e.finish().unwrap()
}

/// Plants the bad inputs; returns the number of records in them that should become documents.
fn plant(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    // a.jsonl: one of each per-record problem, between good lines.
    let big = "word ".repeat(2_000_000); // 10 MB document: kept
    let huge = "x".repeat(17 << 20); // beyond max_record_mb = 16: rejected unread
    let mut a: Vec<u8> = Vec::new();
    let mut push = |s: &str| {
        a.extend_from_slice(s.as_bytes());
        a.push(b'\n');
    };
    push(&line(GOOD)); // 1
    push(r#"{"text": "unterminated"#); // 2 malformed
    push(r#"{"id": 7}"#); // 3 missing text
    push(r#"{"text": 5}"#); // 4 not a string
    push(&line("   \n\t ")); // 5 empty
    push(""); // 6 blank line
    push(&line(&big)); // 7 10 MB
    push(&format!(r#"{{"text": "{huge}"}}"#)); // 8 too large
    push(r#"[1, 2, 3]"#); // 9 not an object
    push(&line("cafe\u{301} au lait is composed differently")); // 10 NFC changes it
    push(&serde_json::json!({"text": "excluded row", "meta": {"set": "github"}}).to_string()); // 11
    a.extend_from_slice(b"{\"text\": \"bad \xff\xfe bytes in a document\"}\n"); // 12 invalid UTF-8
    std::fs::write(dir.join("a.jsonl"), &a).unwrap();

    // b.jsonl.zst and c.jsonl.gz: the same 4000 good lines (several compressed blocks, so
    // some survive), cut off in the middle.
    let lines: Vec<String> = (0..4000)
        .map(|i| line(&format!("{GOOD} Number {i}.")))
        .collect();
    let z = zst(&lines);
    std::fs::write(dir.join("b.jsonl.zst"), &z[..z.len() * 2 / 3]).unwrap();
    let g = gz(&lines);
    std::fs::write(dir.join("c.jsonl.gz"), &g[..g.len() * 2 / 3]).unwrap();

    // d.parquet: not parquet at all. e.parquet: one null text among good rows.
    std::fs::write(dir.join("d.parquet"), b"PAR1 this is not a parquet file").unwrap();
    write_parquet(
        &dir.join("e.parquet"),
        &[(
            "text",
            vec![Some(GOOD.to_string()), None, Some(format!("{GOOD} Again."))],
        )],
        2,
    )
    .unwrap();
    // f.jsonl: a dangling symlink, unreadable.
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.join("missing-target"), dir.join("f.jsonl")).unwrap();
    // g.jsonl: an empty file.
    std::fs::write(dir.join("g.jsonl"), b"").unwrap();
}

fn run(dir: &Path, policy: Utf8Policy) -> Report {
    let mut src = SourceConfig::new("bad", &[&format!("{}/*", dir.join("in").display())]);
    src.exclude = vec![tinyllama_data::config::ExcludeRule {
        field: "meta.set".into(),
        values: vec!["github".into()],
    }];
    let out = dir.join(format!("out-{policy:?}"));
    let mut cfg = PipelineConfig::new(&out, vec![src]);
    cfg.ingest.max_record_mb = 16;
    cfg.ingest.invalid_utf8 = policy;
    cfg.output.format = OutputFormat::Jsonl;
    // The planted documents differ only in numbers, which near-dedup treats as equal.
    cfg.dedup.near = false;
    run_with(
        &cfg,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn example(r: &Report, rule: &str) -> String {
    let s = r
        .scan
        .rejected
        .get(rule)
        .unwrap_or_else(|| panic!("no rejections under {rule}: {:?}", r.scan.rejected.keys()));
    s.examples[0].clone()
}

#[test]
fn every_bad_record_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    plant(&dir.path().join("in"));
    let r = run(dir.path(), Utf8Policy::Repair);

    // Per-record problems, each with its file:line.
    for (rule, at) in [
        ("input/malformed_json", "a.jsonl:2"),
        ("input/missing_text_field", "a.jsonl:3"),
        ("input/text_not_a_string", "a.jsonl:4"),
        ("input/empty_document", "a.jsonl:5"),
        ("input/record_too_large", "a.jsonl:8"),
        ("source/excluded", "a.jsonl:11"),
        ("input/missing_text_field", "a.jsonl:3"),
    ] {
        let e = example(&r, rule);
        assert!(e.contains(at), "{rule}: {e}");
    }
    let malformed = &r.scan.rejected["input/malformed_json"];
    assert!(malformed.examples[1].contains("a.jsonl:9"), "not an object");
    assert_eq!(malformed.docs, 2);
    assert!(
        malformed.examples[0].contains('('),
        "carries the parser's message"
    );
    // The null parquet text is counted as missing, at its row.
    let missing = &r.scan.rejected["input/missing_text_field"];
    assert!(
        missing.examples.iter().any(|e| e.contains("e.parquet:2")),
        "{missing:?}"
    );
    // Truncated streams: the lines before the cut are kept, the cut record is counted, and the
    // stream error is reported where it happened.
    let trunc = &r.scan.file_errors["input/truncated_or_corrupt_stream"];
    assert_eq!(trunc.docs, 2);
    assert!(trunc.examples.iter().any(|e| e.contains("b.jsonl.zst:")));
    assert!(trunc.examples.iter().any(|e| e.contains("c.jsonl.gz:")));
    // Unreadable files are reported with the reason.
    let unreadable = &r.scan.file_errors["input/unreadable_file"];
    // (The dangling symlink exists only on Unix.)
    assert_eq!(
        unreadable.docs,
        if cfg!(unix) { 2 } else { 1 },
        "{unreadable:?}"
    );
    assert!(unreadable.examples.iter().any(|e| e.contains("d.parquet")));
    assert!(!cfg!(unix) || unreadable.examples.iter().any(|e| e.contains("f.jsonl")));
    // Repairs are counted, not hidden.
    assert_eq!(r.scan.utf8_repaired, 1);
    assert_eq!(r.scan.nfc_changed, 1);
    assert_eq!(r.scan.blank_lines, 1);

    // Balance: in = out + rejected, and the output holds exactly the kept documents.
    let rejected: u64 = r.scan.rejected.values().map(|x| x.docs).sum();
    assert_eq!(r.scan.docs_in, r.scan.docs_out + rejected);
    let out = dir.path().join("out-Repair");
    let mut kept = Vec::new();
    for e in std::fs::read_dir(out.join("bad")).unwrap() {
        let bytes = zstd::decode_all(std::fs::File::open(e.unwrap().path()).unwrap()).unwrap();
        for l in String::from_utf8(bytes).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            kept.push(v["text"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(kept.len() as u64, r.sources[0].docs_out);
    assert!(
        kept.iter().any(|t| t.len() == 10_000_000),
        "the 10 MB document is kept"
    );
    assert!(kept
        .iter()
        .any(|t| t.contains("bad \u{fffd}\u{fffd} bytes")));
    assert!(kept.iter().any(|t| t.starts_with("caf\u{e9} au lait")));
    // b and c hold the same lines: what survives their truncation once, the copies go as
    // exact duplicates.
    let from_truncated = kept.iter().filter(|t| t.contains("Number")).count();
    assert!(
        from_truncated > 1000 && from_truncated < 4000,
        "{from_truncated}"
    );
    assert!(r.dedup.exact_duplicates.docs >= 1000, "{}", r.tables());
    // The report says where everything went.
    let t = r.tables();
    assert!(
        t.contains("input/truncated_or_corrupt_stream") && t.contains("a.jsonl:2"),
        "{t}"
    );
}

#[test]
fn invalid_utf8_can_be_rejected_instead() {
    let dir = tempfile::tempdir().unwrap();
    plant(&dir.path().join("in"));
    let r = run(dir.path(), Utf8Policy::Reject);
    assert_eq!(r.scan.utf8_repaired, 0);
    assert!(example(&r, "input/invalid_utf8").contains("a.jsonl:12"));
}

#[test]
fn config_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PipelineConfig::new(
        dir.path().join("o"),
        vec![SourceConfig::new(
            "x",
            &[&format!("{}/nothing-*.jsonl", dir.path().display())],
        )],
    );
    cfg.output.format = OutputFormat::Jsonl;
    let e = run_with(&cfg, &RunOptions::default()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("matched no files") && msg.contains("source x"),
        "{msg}"
    );
    // Packed output without a tokenizer.
    std::fs::write(dir.path().join("a.jsonl"), line(GOOD)).unwrap();
    let mut cfg = PipelineConfig::new(
        dir.path().join("o"),
        vec![SourceConfig::new(
            "x",
            &[&dir.path().join("a.jsonl").display().to_string()],
        )],
    );
    let e = format!("{:#}", run_with(&cfg, &RunOptions::default()).unwrap_err());
    assert!(e.contains("needs a tokenizer"), "{e}");
    // A tokenizer file that does not exist.
    cfg.tokenizer = Some(tinyllama_data::config::TokenizerRef::new(
        dir.path().join("no.json"),
    ));
    let e = format!(
        "{:#}",
        run_with(
            &cfg,
            &RunOptions {
                quiet: true,
                ..Default::default()
            }
        )
        .unwrap_err()
    );
    assert!(e.contains("no.json"), "{e}");
    // Unknown filter rule names.
    let toml = format!(
        "output_dir = \"o\"\n[[sources]]\nname = \"x\"\npaths = [\"{}\"]\n[output]\nformat = \"jsonl\"\n[filters.gopher_quality]\nenabled = true\nskip = [\"short_docs\"]\n",
        dir.path().join("a.jsonl").display()
    );
    let e = format!(
        "{:#}",
        PipelineConfig::from_toml_str(&toml, "t.toml").unwrap_err()
    );
    assert!(e.contains("short_docs") && e.contains("short_doc,"), "{e}");
}
