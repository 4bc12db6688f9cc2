//! Generate the default synthetic corpus and print a summary with a few sample documents.
//!
//! `cargo run --release -p tinyllama-synth --example gen -- [OUT_DIR] [SEED]`

use std::io::BufRead;
use std::time::Instant;
use tinyllama_synth::{generate, SynthConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("synth-out"));
    let mut cfg = SynthConfig::default();
    if let Some(s) = args.get(2) {
        cfg.seed = s.parse()?;
    }
    let t = Instant::now();
    let m = generate(&cfg, &out)?;
    let secs = t.elapsed().as_secs_f64();
    println!("generated in {secs:.2} s into {}", out.display());
    println!("counts: {}", serde_json::to_string_pretty(&m.counts)?);
    println!("text bytes: {:?}", m.text_bytes);
    println!("eval items: {:?}", m.eval_counts);
    let mut disk = 0u64;
    for f in m.files.natural.iter().chain(&m.files.code) {
        disk += std::fs::metadata(out.join(f))?.len();
    }
    println!("compressed corpus on disk: {disk} bytes");

    // One sample per source kind from the first natural part.
    let z = std::fs::read(out.join(&m.files.natural[0]))?;
    let raw = zstd::stream::decode_all(&z[..])?;
    let kind_of: std::collections::HashMap<&str, String> = m
        .planted
        .iter()
        .map(|p| (p.id.as_str(), format!("{:?}", p.kind)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for line in raw.lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let id = v["id"].as_str().unwrap_or("");
        let kind = kind_of
            .get(id)
            .cloned()
            .unwrap_or_else(|| v["source"].as_str().unwrap_or("").to_string());
        if seen.insert(kind.clone()) {
            println!(
                "\n===== {id} [{kind}] {} =====",
                v["url"].as_str().unwrap_or("")
            );
            println!("{}", v["text"].as_str().unwrap_or(""));
        }
    }
    // One Python and one Rust document from the first code part.
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let r = SerializedFileReader::new(std::fs::File::open(out.join(&m.files.code[0]))?)?;
    let mut langs = std::collections::BTreeSet::new();
    for row in r.get_row_iter(None)? {
        let row = row?;
        let lang = row.get_string(2)?.clone();
        if langs.insert(lang.clone()) {
            println!("\n===== {} [{lang}] =====", row.get_string(0)?);
            println!("{}", row.get_string(1)?);
        }
    }
    Ok(())
}
