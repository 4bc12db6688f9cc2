//! Packed token shards in lit-gpt's `LITPKDS` format — what the pipeline writes and the trainer
//! reads.
//!
//! # File layout
//!
//! | bytes | field |
//! |---|---|
//! | 7 | magic `LITPKDS` |
//! | 8 | version, u64 little-endian, always 1 |
//! | 1 | dtype code: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16 |
//! | 8 | chunk size in tokens, u64 little-endian |
//! | … | the tokens, little-endian, `chunk size` of them |
//!
//! The writer stores u16 when the vocabulary has fewer than 65,500 entries and i32 otherwise
//! (lit-gpt's rule). Token streams are cut into files of `chunk_size` tokens (default
//! 2049 × 1024) named `<prefix>-00000.bin`, `<prefix>-00001.bin`, …
//!
//! **The final, partial chunk is written shorter, not padded**: its header's chunk-size field
//! holds its true token count, so every file is exactly `24 + chunk_size × itemsize` bytes and
//! contains no filler tokens. (TinyLlama's writer padded the last chunk with BOS tokens, which
//! the trainer then learned from.) lit-gpt's Python `PackedDataset` takes the chunk size from
//! the first file only, so if you read these shards with it, drop or merge the last file of each
//! prefix; [`PackedReader`] reads each file's own size.
//!
//! # Reading
//!
//! ```no_run
//! use tinyllama_data::packed::PackedReader;
//! # fn main() -> anyhow::Result<()> {
//! let r = PackedReader::open_prefix("out/train".as_ref(), "slimpajama")?;
//! let window = r.read(12_345, 2049)?; // tokens 12345..14394 of the concatenated stream
//! # Ok(()) }
//! ```
//!
//! [`PackedShard`] is one file; [`PackedReader`] is the ordered concatenation of one prefix's
//! files, and `read` may span file boundaries (documents already run across them). Reads are
//! positioned reads (`pread`) on an open file, safe to call from many threads at once, and cost
//! one system call per window; nothing is memory-mapped, so a shard replaced or truncated while a
//! run is reading it gives an error instead of a crash.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tinyllama_model::atomic::write_atomic_with;

pub const MAGIC: &[u8; 7] = b"LITPKDS";
pub const VERSION: u64 = 1;
/// Magic + version + dtype code + chunk size.
pub const HEADER_LEN: usize = 7 + 8 + 1 + 8;
/// lit-gpt's default: 1024 training sequences of 2048 + 1 tokens per file.
pub const DEFAULT_CHUNK_SIZE: usize = 2049 * 1024;
/// Vocabularies at least this large are stored as i32 (lit-gpt's threshold).
pub const U16_VOCAB_LIMIT: usize = 65_500;

/// Element type of a shard, with lit-gpt's numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    I8,
    I16,
    I32,
    I64,
    F32,
    F64,
    U16,
}

impl DType {
    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::F32 => 6,
            DType::F64 => 7,
            DType::U16 => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<DType> {
        Some(match code {
            1 => DType::U8,
            2 => DType::I8,
            3 => DType::I16,
            4 => DType::I32,
            5 => DType::I64,
            6 => DType::F32,
            7 => DType::F64,
            8 => DType::U16,
            _ => return None,
        })
    }

    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// The dtype the writer uses for a vocabulary of `vocab_size` ids.
    pub fn for_vocab(vocab_size: usize) -> DType {
        if vocab_size < U16_VOCAB_LIMIT {
            DType::U16
        } else {
            DType::I32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::U16 => "u16",
        }
    }
}

/// The 24-byte header for `chunk_size` tokens of `dtype`.
pub fn header_bytes(dtype: DType, chunk_size: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..7].copy_from_slice(MAGIC);
    h[7..15].copy_from_slice(&VERSION.to_le_bytes());
    h[15] = dtype.code();
    h[16..24].copy_from_slice(&chunk_size.to_le_bytes());
    h
}

/// Appends `tokens` to `out` little-endian in `dtype` (u16 or i32; the writer uses no other).
pub fn encode_tokens(dtype: DType, tokens: &[u32], out: &mut Vec<u8>) {
    match dtype {
        DType::U16 => {
            out.reserve(tokens.len() * 2);
            for &t in tokens {
                out.extend_from_slice(&(t as u16).to_le_bytes());
            }
        }
        DType::I32 => {
            out.reserve(tokens.len() * 4);
            for &t in tokens {
                out.extend_from_slice(&(t as i32).to_le_bytes());
            }
        }
        other => unreachable!("the writer never produces {}", other.name()),
    }
}

/// File name of chunk `index` of `prefix`.
pub fn shard_file_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:05}.bin")
}

/// What a finished [`PackedWriter`] produced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PackedSummary {
    pub files: Vec<PathBuf>,
    pub tokens: u64,
    pub dtype: DType,
    pub chunk_size: usize,
}

/// Streams token ids into `<dir>/<prefix>-NNNNN.bin` files of `chunk_size` tokens each. Every
/// file is written atomically (temp file, fsync, rename) when it fills; [`finish`] writes the
/// final partial chunk with its true size (see the module docs).
///
/// [`finish`]: PackedWriter::finish
pub struct PackedWriter {
    dir: PathBuf,
    prefix: String,
    dtype: DType,
    vocab_size: usize,
    chunk_size: usize,
    buf: Vec<u32>,
    files: Vec<PathBuf>,
    tokens: u64,
}

impl PackedWriter {
    pub fn new(dir: &Path, prefix: &str, vocab_size: usize, chunk_size: usize) -> Result<Self> {
        if prefix.is_empty() || prefix.contains(['/', '\\']) {
            bail!("shard prefix {prefix:?} must be a non-empty file-name part without slashes");
        }
        if chunk_size == 0 {
            bail!("chunk size must be at least 1 token");
        }
        if vocab_size == 0 {
            bail!("vocab size must be at least 1");
        }
        if vocab_size > i32::MAX as usize {
            bail!("vocab size {vocab_size} does not fit the i32 shard format");
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        Ok(PackedWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            dtype: DType::for_vocab(vocab_size),
            vocab_size,
            chunk_size,
            buf: Vec::with_capacity(chunk_size.min(1 << 24)),
            files: Vec::new(),
            tokens: 0,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Tokens pushed so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Appends tokens, writing each chunk as it fills. Ids must be below the vocab size.
    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary of {} (shards {}/{}): the tokenizer \
                 and the declared vocab size disagree",
                self.vocab_size,
                self.dir.display(),
                self.prefix
            );
        }
        let mut rest = tokens;
        while !rest.is_empty() {
            let take = (self.chunk_size - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.tokens += take as u64;
            if self.buf.len() == self.chunk_size {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        let path = self
            .dir
            .join(shard_file_name(&self.prefix, self.files.len()));
        let dtype = self.dtype;
        let tokens = std::mem::take(&mut self.buf);
        write_atomic_with(&path, |w| {
            w.write_all(&header_bytes(dtype, tokens.len() as u64))?;
            let mut bytes = Vec::with_capacity(1 << 20);
            for part in tokens.chunks(1 << 18) {
                bytes.clear();
                encode_tokens(dtype, part, &mut bytes);
                w.write_all(&bytes)?;
            }
            Ok(())
        })
        .with_context(|| format!("writing shard {}", path.display()))?;
        self.buf = tokens;
        self.buf.clear();
        self.files.push(path);
        Ok(())
    }

    /// Writes the final partial chunk (if any) at its true length and returns what was written.
    pub fn finish(mut self) -> Result<PackedSummary> {
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        Ok(PackedSummary {
            files: self.files,
            tokens: self.tokens,
            dtype: self.dtype,
            chunk_size: self.chunk_size,
        })
    }
}

/// One `LITPKDS` file opened for random access.
#[derive(Debug)]
pub struct PackedShard {
    path: PathBuf,
    file: File,
    dtype: DType,
    tokens: u64,
}

impl PackedShard {
    /// Opens `path` and validates its header and length; errors name the file and the field.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open token shard {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat token shard {}", path.display()))?
            .len();
        let p = path.display();
        if len < HEADER_LEN as u64 {
            bail!(
                "{p}: {len} bytes, shorter than the {HEADER_LEN}-byte LITPKDS header \
                 (truncated or not a token shard; regenerate it with `tinyllama data prepare`)"
            );
        }
        let mut h = [0u8; HEADER_LEN];
        read_exact_at(&file, &mut h, 0).with_context(|| format!("reading header of {p}"))?;
        if &h[..7] != MAGIC {
            bail!(
                "{p}: magic is {:?}, expected \"LITPKDS\" (not a lit-gpt packed token shard)",
                String::from_utf8_lossy(&h[..7])
            );
        }
        let version = u64::from_le_bytes(h[7..15].try_into().unwrap());
        if version != VERSION {
            bail!("{p}: header version is {version}, this reader supports version {VERSION}");
        }
        let code = h[15];
        let dtype = DType::from_code(code).with_context(|| {
            format!("{p}: dtype code is {code}, expected 1..=8 (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16)")
        })?;
        if matches!(dtype, DType::F32 | DType::F64) {
            bail!(
                "{p}: dtype is {} (code {code}); token shards must hold integers",
                dtype.name()
            );
        }
        let tokens = u64::from_le_bytes(h[16..24].try_into().unwrap());
        let expected = tokens
            .checked_mul(dtype.size() as u64)
            .and_then(|b| b.checked_add(HEADER_LEN as u64));
        if expected != Some(len) {
            bail!(
                "{p}: header chunk size is {tokens} tokens of {} ({} bytes expected with the \
                 header) but the file is {len} bytes: the shard is truncated or corrupt; \
                 regenerate it with `tinyllama data prepare`",
                dtype.name(),
                expected.map_or("overflowing".into(), |e| e.to_string())
            );
        }
        Ok(PackedShard {
            path: path.to_path_buf(),
            file,
            dtype,
            tokens,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of tokens in this file.
    pub fn len(&self) -> u64 {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    /// Tokens `pos .. pos + len`.
    pub fn read(&self, pos: u64, len: usize) -> Result<Vec<u32>> {
        let mut out = vec![0u32; len];
        self.read_into(pos, &mut out)?;
        Ok(out)
    }

    /// Fills `out` with tokens `pos .. pos + out.len()` (no allocation beyond a byte buffer).
    pub fn read_into(&self, pos: u64, out: &mut [u32]) -> Result<()> {
        let len = out.len() as u64;
        if pos.checked_add(len).is_none_or(|end| end > self.tokens) {
            bail!(
                "{}: read of {len} tokens at {pos} is past the end ({} tokens)",
                self.path.display(),
                self.tokens
            );
        }
        let size = self.dtype.size();
        let mut bytes = vec![0u8; out.len() * size];
        read_exact_at(
            &self.file,
            &mut bytes,
            HEADER_LEN as u64 + pos * size as u64,
        )
        .with_context(|| format!("reading {}", self.path.display()))?;
        decode_tokens(self.dtype, &bytes, out)
            .with_context(|| format!("{}: tokens at {pos}", self.path.display()))
    }
}

fn decode_tokens(dtype: DType, bytes: &[u8], out: &mut [u32]) -> Result<()> {
    fn check(v: i64) -> Result<u32> {
        u32::try_from(v).map_err(|_| anyhow::anyhow!("token value {v} is not a valid id"))
    }
    match dtype {
        DType::U16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = u16::from_le_bytes([b[0], b[1]]) as u32;
            }
        }
        DType::I32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let v = i32::from_le_bytes(b.try_into().unwrap());
                *o = if v >= 0 { v as u32 } else { check(v as i64)? };
            }
        }
        DType::U8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = b as u32;
            }
        }
        DType::I8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = check(b as i8 as i64)?;
            }
        }
        DType::I16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = check(i16::from_le_bytes([b[0], b[1]]) as i64)?;
            }
        }
        DType::I64 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = check(i64::from_le_bytes(b.try_into().unwrap()))?;
            }
        }
        DType::F32 | DType::F64 => bail!("float shards hold no token ids"),
    }
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `<prefix>-NNNNN.bin` files in `dir`, in index order. Errors if there are none or an
/// index is missing (an interrupted copy would otherwise silently shorten the data).
pub fn list_shards(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read shard directory {}", dir.display()))?;
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".bin"))
        else {
            continue;
        };
        if rest.len() >= 5 && rest.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(i) = rest.parse::<u64>() {
                found.push((i, e.path()));
            }
        }
    }
    found.sort();
    if found.is_empty() {
        bail!(
            "no token shards named {prefix}-NNNNN.bin in {} (produce them with `tinyllama data prepare`)",
            dir.display()
        );
    }
    for (want, (i, p)) in found.iter().enumerate() {
        if *i != want as u64 {
            bail!(
                "{}: shard index {want} of prefix {prefix:?} is missing (found {} next); \
                 the output is incomplete — rerun `tinyllama data prepare`",
                dir.display(),
                p.display()
            );
        }
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The ordered concatenation of several shards, addressed by global token position.
#[derive(Debug)]
pub struct PackedReader {
    shards: Vec<PackedShard>,
    /// `starts[i]` is the global position of shard i's first token; one extra entry holds the
    /// total.
    starts: Vec<u64>,
}

impl PackedReader {
    /// Opens the given files in the given order.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut starts = Vec::with_capacity(paths.len() + 1);
        let mut total = 0u64;
        for p in paths {
            let s = PackedShard::open(p)?;
            starts.push(total);
            total += s.len();
            shards.push(s);
        }
        starts.push(total);
        Ok(PackedReader { shards, starts })
    }

    /// Opens all `<dir>/<prefix>-NNNNN.bin` files (see [`list_shards`]).
    pub fn open_prefix(dir: &Path, prefix: &str) -> Result<Self> {
        Self::open(&list_shards(dir, prefix)?)
    }

    /// Total tokens.
    pub fn len(&self) -> u64 {
        *self.starts.last().unwrap()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shards(&self) -> &[PackedShard] {
        &self.shards
    }

    /// Tokens `pos .. pos + len` of the concatenated stream (may span files).
    pub fn read(&self, pos: u64, len: usize) -> Result<Vec<u32>> {
        let mut out = vec![0u32; len];
        self.read_into(pos, &mut out)?;
        Ok(out)
    }

    pub fn read_into(&self, pos: u64, out: &mut [u32]) -> Result<()> {
        let total = self.len();
        if pos.checked_add(out.len() as u64).is_none_or(|e| e > total) {
            bail!(
                "read of {} tokens at {pos} is past the end of the stream ({total} tokens)",
                out.len()
            );
        }
        // The last shard whose start is <= pos.
        let mut i = self.starts.partition_point(|&s| s <= pos) - 1;
        let mut pos = pos;
        let mut filled = 0;
        while filled < out.len() {
            while self.shards[i].len() == pos - self.starts[i] {
                i += 1;
            }
            let local = pos - self.starts[i];
            let n = ((self.shards[i].len() - local) as usize).min(out.len() - filled);
            self.shards[i].read_into(local, &mut out[filled..filled + n])?;
            filled += n;
            pos += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_u16_with_short_final_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "train", 32000, 10).unwrap();
        assert_eq!(w.dtype(), DType::U16);
        let toks: Vec<u32> = (0..25u32).map(|i| i * 1000 % 32000).collect();
        w.push(&toks[..7]).unwrap();
        w.push(&toks[7..]).unwrap();
        let s = w.finish().unwrap();
        assert_eq!(s.tokens, 25);
        assert_eq!(s.files.len(), 3);
        assert!(s.files[2].ends_with("train-00002.bin"));
        // The last file is 5 tokens with its true size in the header: no padding.
        let bytes = std::fs::read(&s.files[2]).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 5 * 2);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 5);
        let r = PackedReader::open_prefix(dir.path(), "train").unwrap();
        assert_eq!(r.len(), 25);
        assert_eq!(r.read(0, 25).unwrap(), toks);
        // Windows that cross file boundaries.
        assert_eq!(r.read(8, 13).unwrap(), toks[8..21]);
        assert_eq!(r.read(20, 5).unwrap(), toks[20..]);
        assert_eq!(r.read(10, 0).unwrap(), Vec::<u32>::new());
        assert!(r.read(20, 6).is_err());
        assert_eq!(r.shards()[1].read(3, 2).unwrap(), toks[13..15]);
    }

    #[test]
    fn exact_chunk_multiple_writes_no_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "x", 100, 4).unwrap();
        w.push(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let s = w.finish().unwrap();
        assert_eq!(s.files.len(), 2);
    }

    #[test]
    fn large_vocab_uses_i32() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "big", 65_500, 1000).unwrap();
        assert_eq!(w.dtype(), DType::I32);
        w.push(&[65_499, 0, 7]).unwrap();
        let s = w.finish().unwrap();
        let bytes = std::fs::read(&s.files[0]).unwrap();
        assert_eq!(bytes[15], 4);
        assert_eq!(bytes.len(), HEADER_LEN + 12);
        let sh = PackedShard::open(&s.files[0]).unwrap();
        assert_eq!(sh.dtype(), DType::I32);
        assert_eq!(sh.read(0, 3).unwrap(), vec![65_499, 0, 7]);
        assert_eq!(DType::for_vocab(65_499), DType::U16);
    }

    #[test]
    fn header_is_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "h", 32000, 3).unwrap();
        w.push(&[1, 258, 31999]).unwrap();
        let s = w.finish().unwrap();
        let bytes = std::fs::read(&s.files[0]).unwrap();
        let mut want = b"LITPKDS".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // version 1
        want.push(8); // u16
        want.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]); // 3 tokens
        want.extend_from_slice(&[1, 0, 2, 1, 0xff, 0x7c]); // 1, 258, 31999 (0x7cff) little-endian
        assert_eq!(bytes, want);
    }

    #[test]
    fn rejects_ids_outside_vocab() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "v", 10, 3).unwrap();
        let e = w.push(&[3, 10]).unwrap_err().to_string();
        assert!(e.contains("token id 10"), "{e}");
    }

    fn corrupt(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad-00000.bin");
        std::fs::write(&p, bytes).unwrap();
        let e = PackedShard::open(&p).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("bad-00000.bin"),
            "error must name the file: {msg}"
        );
        msg
    }

    #[test]
    fn corrupt_headers_give_clear_errors() {
        let good = header_bytes(DType::U16, 2);
        let mut ok = good.to_vec();
        ok.extend_from_slice(&[1, 0, 2, 0]);

        assert!(corrupt(&good[..10]).contains("shorter than the 24-byte"));
        let mut m = ok.clone();
        m[0] = b'X';
        assert!(corrupt(&m).contains("magic"));
        let mut v = ok.clone();
        v[7] = 2;
        assert!(corrupt(&v).contains("version is 2"));
        let mut d = ok.clone();
        d[15] = 9;
        assert!(corrupt(&d).contains("dtype code is 9"));
        let mut f = ok.clone();
        f[15] = 6;
        assert!(corrupt(&f).contains("f32"));
        assert!(corrupt(&ok[..ok.len() - 1]).contains("truncated"));
        let mut long = ok.clone();
        long.push(0);
        assert!(corrupt(&long).contains("chunk size is 2 tokens"));
    }

    #[test]
    fn missing_index_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackedWriter::new(dir.path(), "g", 100, 1).unwrap();
        w.push(&[1, 2, 3]).unwrap();
        let s = w.finish().unwrap();
        std::fs::remove_file(&s.files[1]).unwrap();
        let e = PackedReader::open_prefix(dir.path(), "g").unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
        assert!(PackedReader::open_prefix(dir.path(), "none").is_err());
    }

    #[test]
    fn reads_other_integer_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i64-00000.bin");
        let mut b = header_bytes(DType::I64, 2).to_vec();
        b.extend_from_slice(&5i64.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let s = PackedShard::open(&p).unwrap();
        assert_eq!(s.read(0, 1).unwrap(), vec![5]);
        assert!(s.read(1, 1).is_err());
    }
}
