//! Compressed inputs are recognised by their magic bytes (xz and bzip2 besides gzip and zstd,
//! whatever the file is called), and binary files of other formats are refused as file
//! problems naming the file instead of becoming one garbage document each.

use std::io::Write;
use std::path::Path;
use tinyllama_data::config::{OutputFormat, PipelineConfig, SourceConfig};
use tinyllama_data::pipeline::{run_with, RunOptions};

fn line(i: usize) -> String {
    serde_json::json!({"text": format!("Document number {i} talks about rivers, boats and the weather in spring.")})
        .to_string()
        + "\n"
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn kept_texts(out: &Path) -> Vec<String> {
    let mut kept = Vec::new();
    for e in std::fs::read_dir(out.join("mixed")).unwrap() {
        let bytes = zstd::decode_all(std::fs::File::open(e.unwrap().path()).unwrap()).unwrap();
        for l in String::from_utf8(bytes).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            kept.push(v["text"].as_str().unwrap().to_string());
        }
    }
    kept
}

#[test]
fn xz_and_bzip2_are_read_and_unknown_binaries_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in");
    std::fs::create_dir_all(&inp).unwrap();
    let jsonl: String = (0..50).map(line).collect();
    let jsonl2: String = (50..80).map(line).collect();
    std::fs::write(inp.join("a.jsonl.xz"), xz(jsonl.as_bytes())).unwrap();
    std::fs::write(inp.join("b.jsonl.bz2"), bz2(jsonl2.as_bytes())).unwrap();
    // Mislabelled: xz data under a plain-text name is still decompressed.
    let essay = "An essay about lighthouses and the keepers who lived in them for years.";
    std::fs::write(inp.join("c.txt"), xz(essay.as_bytes())).unwrap();
    // Not text: refused, each named.
    std::fs::write(
        inp.join("d.zip"),
        b"PK\x03\x04\x14\x00\x00\x00 rest of a zip",
    )
    .unwrap();
    let mut blob: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    blob[10] = 0;
    std::fs::write(inp.join("e.txt"), &blob).unwrap();
    std::fs::write(inp.join("f.txt.xz"), xz(&blob)).unwrap();

    let src = SourceConfig::new("mixed", &[&inp.display().to_string()]);
    let out = dir.path().join("out");
    let mut cfg = PipelineConfig::new(&out, vec![src]);
    cfg.output.format = OutputFormat::Jsonl;
    cfg.dedup.near = false;
    let r = run_with(
        &cfg,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();

    let kept = kept_texts(&out);
    assert_eq!(kept.len(), 81, "{}", r.tables());
    assert!(kept.iter().any(|t| t == essay));
    assert!(kept.iter().any(|t| t.starts_with("Document number 79 ")));
    let refused = &r.scan.file_errors["input/unsupported_binary_file"];
    assert_eq!(refused.docs, 3, "{refused:?}");
    let all = refused.examples.join("\n");
    assert!(
        all.contains("d.zip") && all.contains("zip archive"),
        "{all}"
    );
    assert!(all.contains("e.txt") && all.contains("NUL byte"), "{all}");
    assert!(
        all.contains("f.txt.xz") && all.contains("decompressed content"),
        "{all}"
    );
    assert!(r.tables().contains("input/unsupported_binary_file"));
}
