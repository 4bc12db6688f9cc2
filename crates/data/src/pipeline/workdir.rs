//! The work directory: where each stage leaves its per-file outputs and completion markers.
//!
//! ```text
//! work/
//!   files.json                 the input file list (informational)
//!   scan/NNNNN.sig             signature records of documents that passed the filters
//!   scan/NNNNN.json            completion marker + stats for input file NNNNN
//!   merge/drops.bin            duplicates to drop, per input file
//!   merge/merge.json           completion marker + dedup stats
//!   emit/NNNNN.train|.val      token ids (shard dtype) of kept documents
//!   emit/NNNNN.json            completion marker + token counts
//!   tmp/                       dedup spill files
//! ```
//!
//! Every output is written atomically and its marker last, so an interrupted stage leaves
//! either a complete file with its marker or no marker (and the file is redone). A marker
//! records the fingerprint of everything its output depends on; a marker whose fingerprint
//! differs from the current configuration counts as absent.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tinyllama_model::atomic::write_atomic;

#[derive(Clone, Debug)]
pub struct WorkDir {
    pub root: PathBuf,
}

impl WorkDir {
    pub fn new(root: PathBuf) -> Self {
        WorkDir { root }
    }
    pub fn files_json(&self) -> PathBuf {
        self.root.join("files.json")
    }
    pub fn scan_sig(&self, i: usize) -> PathBuf {
        self.root.join("scan").join(format!("{i:05}.sig"))
    }
    pub fn scan_marker(&self, i: usize) -> PathBuf {
        self.root.join("scan").join(format!("{i:05}.json"))
    }
    pub fn drops(&self) -> PathBuf {
        self.root.join("merge").join("drops.bin")
    }
    pub fn merge_marker(&self) -> PathBuf {
        self.root.join("merge").join("merge.json")
    }
    pub fn emit_train(&self, i: usize) -> PathBuf {
        self.root.join("emit").join(format!("{i:05}.train"))
    }
    pub fn emit_val(&self, i: usize) -> PathBuf {
        self.root.join("emit").join(format!("{i:05}.val"))
    }
    pub fn emit_marker(&self, i: usize) -> PathBuf {
        self.root.join("emit").join(format!("{i:05}.json"))
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// A stable hex fingerprint of any serialisable value.
pub fn fingerprint<T: Serialize + ?Sized>(v: &T) -> String {
    let s = serde_json::to_vec(v).expect("fingerprint input serialises");
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&s))
}

/// Reads a JSON marker; `None` when it is missing or unreadable (then the work is redone).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_vec_pretty(v).context("serialising JSON")?;
    write_atomic(path, &s).with_context(|| format!("writing {}", path.display()))
}
