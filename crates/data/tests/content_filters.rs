//! The offensive-content rules with the shipped invented example lists, through a whole run.

use std::io::Write;
use std::path::PathBuf;
use tinyllama_data::config::{OutputFormat, PipelineConfig, SourceConfig};
use tinyllama_data::pipeline::{run_with, RunOptions};

fn lists() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/blocklists")
}

#[test]
fn word_list_and_url_blocklist() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    let docs = [
        (
            "A calm text about gardens and bread.",
            "https://www.fine-example.test/a",
        ),
        (
            "This one says Zorblax loudly.",
            "https://fine-example.test/b",
        ),
        (
            "A flerb   wozzle phrase spans spaces? No: two spaces.",
            "https://x.test/c",
        ),
        ("A flerb wozzle phrase appears here.", "https://x.test/d"),
        (
            "Unlisted host is fine here.",
            "https://notblocked-example.test/e",
        ),
        (
            "Blocked by its domain.",
            "https://news.blocked-example.test/f",
        ),
        (
            "Blocked by its path.",
            "https://fine-example.test/private/page?x=1",
        ),
        (
            "The word prezorblax is not the listed word.",
            "http://x.test/g",
        ),
    ];
    for (t, u) in docs {
        writeln!(f, "{}", serde_json::json!({"text": t, "url": u})).unwrap();
    }
    drop(f);
    let mut src = SourceConfig::new("web", &[&input.display().to_string()]);
    src.url_field = Some("url".into());
    let mut cfg = PipelineConfig::new(dir.path().join("out"), vec![src]);
    cfg.output.format = OutputFormat::Jsonl;
    cfg.filters.wordlist.enabled = true;
    cfg.filters.wordlist.files = vec![lists().join("words-en.txt")];
    cfg.filters.url_blocklist.enabled = true;
    cfg.filters.url_blocklist.dirs = vec![lists().join("ut1/invented_category")];
    let r = run_with(
        &cfg,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rej = &r.scan.rejected;
    assert_eq!(rej["wordlist/match"].docs, 2, "{rej:?}");
    assert!(rej["wordlist/match"].examples[0].ends_with("in.jsonl:2"));
    assert_eq!(rej["url_blocklist/domain"].docs, 1);
    assert_eq!(rej["url_blocklist/url"].docs, 1);
    assert_eq!(r.sources[0].docs_out, 4);
}

#[test]
fn shipped_slimpajama_starcoder_config_parses() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/data/slimpajama-starcoder.toml");
    let c = PipelineConfig::from_file(&p).unwrap();
    assert_eq!(c.sources.len(), 2);
    let (sp, sc) = (&c.sources[0], &c.sources[1]);
    assert_eq!((sp.weight, sc.weight), (0.693584, 0.306416));
    assert_eq!(sp.text_field, "text");
    assert_eq!(sp.exclude[0].field, "meta.redpajama_set_name");
    assert_eq!(sp.exclude[0].values, vec!["RedPajamaGithub"]);
    assert_eq!(sc.text_field, "content");
    assert_eq!(sc.format, tinyllama_data::config::Format::Parquet);
    assert!(!sc.apply_filters);
    assert_eq!(c.dedup.minhash().unwrap().bands, 9);
    assert_eq!(c.output.chunk_size, 2049 * 1024);
}
