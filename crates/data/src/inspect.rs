//! `data inspect`: a shard's header, token count and a decoded sample.

use crate::packed::{PackedShard, HEADER_LEN};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

pub struct InspectOptions<'a> {
    /// Decode the sample with this tokenizer.json (or a directory holding one).
    pub tokenizer: Option<&'a Path>,
    /// First token of the sample.
    pub at: u64,
    /// Tokens in the sample.
    pub sample: usize,
    /// Count occurrences of this id (documents end with EOS).
    pub eos_id: Option<u32>,
}

pub fn inspect(path: &Path, o: &InspectOptions) -> Result<String> {
    let shard = PackedShard::open(path)?;
    let mut s = String::new();
    let _ = writeln!(s, "file        {}", path.display());
    let _ = writeln!(s, "magic       LITPKDS, version 1");
    let _ = writeln!(
        s,
        "dtype       {} (code {}), {} bytes per token",
        shard.dtype().name(),
        shard.dtype().code(),
        shard.dtype().size()
    );
    let _ = writeln!(
        s,
        "chunk size  {} tokens (header), file {} bytes = {HEADER_LEN} header + tokens",
        shard.len(),
        HEADER_LEN as u64 + shard.len() * shard.dtype().size() as u64
    );
    let _ = writeln!(s, "tokens      {}", shard.len());
    if let Some(eos) = o.eos_id {
        // Counted in blocks so huge shards do not need their size in memory.
        let mut n = 0u64;
        let mut pos = 0u64;
        while pos < shard.len() {
            let len = (shard.len() - pos).min(1 << 20) as usize;
            n += shard.read(pos, len)?.iter().filter(|&&t| t == eos).count() as u64;
            pos += len as u64;
        }
        let _ = writeln!(s, "documents   {n} (tokens equal to EOS id {eos})");
    }
    let at = o.at.min(shard.len());
    let len = (o.sample as u64).min(shard.len() - at) as usize;
    let ids = shard.read(at, len)?;
    let _ = writeln!(s, "sample      tokens {at}..{}: {ids:?}", at + len as u64);
    if let Some(t) = o.tokenizer {
        let file = if t.is_dir() {
            t.join("tokenizer.json")
        } else {
            t.to_path_buf()
        };
        let tok = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", file.display()))?;
        let text = tok
            .decode(&ids, false)
            .map_err(|e| anyhow::anyhow!("decoding: {e}"))
            .context("decoding the sample")?;
        let _ = writeln!(s, "decoded     {text:?}");
    }
    Ok(s)
}
