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

/// Whether a file or directory name is hidden (`.cache`, `.a.jsonl.swp`, our own
/// `.NAME.tmp.PID`).
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with('.') && n != "." && n != ".."
}

/// Whether `path`, matched by glob `pattern`, passes through a hidden file or directory that
/// the pattern does not name with a literal leading dot. Components are compared position by
/// position; after a `**` the pattern no longer says, so hidden ones are skipped.
fn hidden_in_match(pattern: &str, path: &Path) -> bool {
    let pat: Vec<String> = Path::new(pattern)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut past_globstar = false;
    for (i, c) in path.components().enumerate() {
        let p = pat.get(i).map(String::as_str);
        past_globstar |= p == Some("**");
        if is_hidden(c.as_os_str()) && (past_globstar || !p.is_some_and(|p| p.starts_with('.'))) {
            return true;
        }
    }
    false
}

/// Hidden files are editor swap files, partial downloads and our own temporary files, so one
/// rule holds for directories and globs alike: a hidden file or directory is read only when
/// the path or pattern names it with its leading dot (`data/.extra.jsonl`, `data/.*.jsonl`).
/// `skipped` counts what the rule left out.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut u64) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if is_hidden(&e.file_name()) {
            *skipped += 1;
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, skipped)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// All input files of all sources, in global order.
pub fn discover(cfg: &PipelineConfig) -> Result<Vec<InputFile>> {
    Ok(discover_counting(cfg)?.0)
}

/// [`discover`], and how many hidden files and directories were skipped (see [`walk`]).
pub fn discover_counting(cfg: &PipelineConfig) -> Result<(Vec<InputFile>, u64)> {
    let mut skipped = 0u64;
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
                    if hidden_in_match(pat, &p) {
                        skipped += 1;
                    } else if p.is_dir() {
                        walk(&p, &mut paths, &mut skipped)?;
                    } else {
                        paths.push(p);
                    }
                }
            } else {
                let p = PathBuf::from(pat);
                if p.is_dir() {
                    walk(&p, &mut paths, &mut skipped)?;
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
                    "source {}: {pat:?} matched no files (check `paths` in the config; hidden files are read only when the pattern names their leading dot)",
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
    Ok((files, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hidden_files_follow_one_rule_for_directories_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "a.jsonl",
            ".a.jsonl.swp",
            ".cache/b.jsonl",
            "sub/c.jsonl",
            ".x.jsonl",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "{\"text\": \"hi\"}\n").unwrap();
        }
        let names = |paths: &[&str]| {
            let src = crate::config::SourceConfig::new("s", paths);
            let cfg = PipelineConfig::new(d.join("out"), vec![src]);
            let (files, skipped) = discover_counting(&cfg).unwrap();
            let mut n: Vec<String> = files
                .iter()
                .map(|f| f.path.strip_prefix(d).unwrap().display().to_string())
                .collect();
            n.sort();
            (n, skipped)
        };
        let dir_s = d.display().to_string();
        let want = (vec!["a.jsonl".to_string(), "sub/c.jsonl".to_string()], 3);
        assert_eq!(names(&[&dir_s]), want);
        assert_eq!(names(&[&format!("{dir_s}/*")]), want);
        assert_eq!(names(&[&format!("{dir_s}/**/*.jsonl")]).0, want.0);
        // Named with the dot, hidden files are read.
        assert_eq!(
            names(&[&format!("{dir_s}/.*.jsonl")]),
            (vec![".x.jsonl".to_string()], 0)
        );
        assert_eq!(
            names(&[&format!("{dir_s}/.cache/b.jsonl")]).0,
            vec![".cache/b.jsonl".to_string()]
        );
    }

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
