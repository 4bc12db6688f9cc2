//! The signature file the scan stage writes per input file: one fixed-size record per document
//! that passed ingest and the filters, in file order.
//!
//! Header: `TLSCAN01`, bands (u32), 4 reserved bytes. Record: line (u64), text bytes (u64),
//! exact hash (u128), flags (u64: bit 0 takes part in dedup, bit 1 has MinHash bands), then
//! `bands` band hashes (u64). All little-endian.

use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"TLSCAN01";
pub const HEADER: usize = 16;
pub const FLAG_DEDUP: u64 = 1;
pub const FLAG_BANDS: u64 = 2;

pub fn record_size(bands: usize) -> usize {
    40 + 8 * bands
}

pub fn write_header(w: &mut dyn Write, bands: usize) -> std::io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&(bands as u32).to_le_bytes())?;
    w.write_all(&[0; 4])
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanRecord {
    pub line: u64,
    pub bytes: u64,
    pub exact: u128,
    pub flags: u64,
    pub bands: Vec<u64>,
}

impl ScanRecord {
    pub fn write(&self, w: &mut dyn Write, bands: usize) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(record_size(bands));
        buf.extend_from_slice(&self.line.to_le_bytes());
        buf.extend_from_slice(&self.bytes.to_le_bytes());
        buf.extend_from_slice(&self.exact.to_le_bytes());
        buf.extend_from_slice(&self.flags.to_le_bytes());
        for i in 0..bands {
            buf.extend_from_slice(&self.bands.get(i).copied().unwrap_or(0).to_le_bytes());
        }
        w.write_all(&buf)
    }
}

/// Streams the records of one signature file.
pub struct ScanReader {
    r: BufReader<std::fs::File>,
    bands: usize,
    buf: Vec<u8>,
    path: std::path::PathBuf,
}

impl ScanReader {
    pub fn open(path: &Path, bands: usize) -> Result<Self> {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open signature file {}", path.display()))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut h = [0u8; HEADER];
        r.read_exact(&mut h)
            .with_context(|| format!("{}: truncated header", path.display()))?;
        if &h[..8] != MAGIC {
            bail!("{}: not a signature file", path.display());
        }
        let b = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
        if b != bands {
            bail!(
                "{}: written with {b} bands, the config has {bands}; rerun the scan stage",
                path.display()
            );
        }
        Ok(ScanReader {
            r,
            bands,
            buf: vec![0; record_size(bands)],
            path: path.to_path_buf(),
        })
    }

    /// The next record into `rec`; false at the end.
    pub fn next_into(&mut self, rec: &mut ScanRecord) -> Result<bool> {
        let mut filled = 0;
        while filled < self.buf.len() {
            let n = self
                .r
                .read(&mut self.buf[filled..])
                .with_context(|| format!("reading {}", self.path.display()))?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                bail!("{}: truncated record", self.path.display());
            }
            filled += n;
        }
        let b = &self.buf;
        rec.line = u64::from_le_bytes(b[0..8].try_into().unwrap());
        rec.bytes = u64::from_le_bytes(b[8..16].try_into().unwrap());
        rec.exact = u128::from_le_bytes(b[16..32].try_into().unwrap());
        rec.flags = u64::from_le_bytes(b[32..40].try_into().unwrap());
        rec.bands.clear();
        for i in 0..self.bands {
            let o = 40 + 8 * i;
            rec.bands
                .push(u64::from_le_bytes(b[o..o + 8].try_into().unwrap()));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.sig");
        let recs = vec![
            ScanRecord {
                line: 3,
                bytes: 10,
                exact: 1 << 100,
                flags: 3,
                bands: vec![7, 8],
            },
            ScanRecord {
                line: 9,
                bytes: 1,
                exact: 5,
                flags: 1,
                bands: vec![0, 0],
            },
        ];
        let mut f = std::fs::File::create(&p).unwrap();
        write_header(&mut f, 2).unwrap();
        for r in &recs {
            r.write(&mut f, 2).unwrap();
        }
        drop(f);
        let mut rd = ScanReader::open(&p, 2).unwrap();
        let mut r = ScanRecord::default();
        let mut got = Vec::new();
        while rd.next_into(&mut r).unwrap() {
            got.push(r.clone());
        }
        assert_eq!(got, recs);
        assert!(ScanReader::open(&p, 3).is_err());
    }
}
