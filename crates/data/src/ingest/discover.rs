//! Expanding each source's `paths` (files, directories, globs) into the ordered list of input
//! files. The order — sources in config order, then paths sorted — is the global document order
//! that makes deduplication and output deterministic.

use crate::config::{Format, PipelineConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Position in the global file list.
    pub index: usize,
    /// Index into `PipelineConfig::sources`.
    pub source: usize,
    pub path: PathBuf,
    /// Resolved format (never `Auto`).
    pub format: Format,
    pub size: u64,
    /// Modification time (seconds since the epoch), to notice inputs that change between
    /// stages.
    pub mtime: u64,
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether the file starts with parquet's magic bytes.
fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == b"PAR1")
}

/// The format `Auto` resolves to for `path`: parquet by its magic bytes or its name, jsonl by
/// its name (under any compression suffix), text otherwise. Compression itself is recognised
/// by magic bytes when the file is read.
pub fn detect_format(path: &Path) -> Format {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let base = [".gz", ".zst", ".zstd", ".xz", ".bz2"]
        .iter()
        .find_map(|x| name.strip_suffix(x))
        .unwrap_or(&name);
    if base.ends_with(".parquet") || is_parquet(path) {
        Format::Parquet
    } else if base.ends_with(".jsonl") || base.ends_with(".json") || base.ends_with(".ndjson") {
        Format::Jsonl
    } else {
        Format::Text
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        // Hidden files are editor swap files, partial downloads and our own temp files.
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// All input files of all sources, in global order.
pub fn discover(cfg: &PipelineConfig) -> Result<Vec<InputFile>> {
    let mut files = Vec::new();
    let mut owner: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (si, src) in cfg.sources.iter().enumerate() {
        let mut paths = Vec::new();
        for pat in &src.paths {
            let before = paths.len();
            if has_glob_chars(pat) {
                let it = glob::glob(pat)
                    .with_context(|| format!("source {}: bad glob pattern {pat:?}", src.name))?;
                for m in it {
                    let p = m.with_context(|| format!("source {}: {pat}", src.name))?;
                    if p.is_dir() {
                        walk(&p, &mut paths)?;
                    } else {
                        paths.push(p);
                    }
                }
            } else {
                let p = PathBuf::from(pat);
                if p.is_dir() {
                    walk(&p, &mut paths)?;
                } else if p.exists() {
                    paths.push(p);
                } else {
                    bail!(
                        "source {}: input path {pat} does not exist (check `paths` in the config)",
                        src.name
                    );
                }
            }
            if paths.len() == before {
                bail!(
                    "source {}: {pat:?} matched no files (check `paths` in the config)",
                    src.name
                );
            }
        }
        paths.sort();
        paths.dedup();
        for p in paths {
            if let Some(&other) = owner.get(&p) {
                if other != si {
                    bail!(
                        "{} belongs to both source {} and source {}; a file may feed only one source",
                        p.display(),
                        cfg.sources[other].name,
                        src.name
                    );
                }
            }
            owner.insert(p.clone(), si);
            // A file we cannot stat is still listed: reading it reports it as unreadable.
            let (size, mtime) = std::fs::metadata(&p)
                .map(|m| {
                    let mt = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    (m.len(), mt)
                })
                .unwrap_or((0, 0));
            let format = match src.format {
                Format::Auto => detect_format(&p),
                f => f,
            };
            files.push(InputFile {
                index: files.len(),
                source: si,
                path: p,
                format,
                size,
                mtime,
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn formats_from_names() {
        assert_eq!(detect_format(Path::new("a/b.jsonl.zst")), Format::Jsonl);
        assert_eq!(detect_format(Path::new("a/B.JSON.gz")), Format::Jsonl);
        assert_eq!(detect_format(Path::new("x.parquet")), Format::Parquet);
        assert_eq!(detect_format(Path::new("x.txt")), Format::Text);
        assert_eq!(detect_format(Path::new("a/b.jsonl.xz")), Format::Jsonl);
        assert_eq!(detect_format(Path::new("a/b.JSONL.bz2")), Format::Jsonl);
    }
}
