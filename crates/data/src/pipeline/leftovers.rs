//! Cleaning up after a killed run. Every output is written to `.NAME.tmp.PID` next to its
//! final name and renamed when complete ([`tinyllama_model::atomic`]), so a SIGKILL leaves
//! such files behind in `work/` and next to the shards. The next run removes those whose
//! process is not alive on this machine, when they are this run's own (unsharded runs own
//! everything; a shard owns the scan and emit files of its input files) or have not been
//! written to for a minute: a work directory shared by shards on several machines holds other
//! machines' files in progress, whose PIDs mean nothing here.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Files untouched for this long whose process is gone are leftovers.
const QUIET_FOR: Duration = Duration::from_secs(60);

/// The PID of a temporary name `.NAME.tmp.PID`.
fn temp_pid(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once(".tmp.")?;
    if !head.starts_with('.') {
        return None;
    }
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // Without /proc (not Linux) we cannot tell; then the age alone decides.
    let proc = Path::new("/proc");
    proc.is_dir() && proc.join(pid.to_string()).exists()
}

/// Decides whether a temporary file belongs to this run (see the module docs).
pub type Owned<'a> = &'a dyn Fn(&Path) -> bool;

fn stale(path: &Path, pid: u32, owned: Owned) -> bool {
    !alive(pid)
        && (owned(path)
            || std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|d| d >= QUIET_FOR))
}

/// The input-file index of a scan or emit temporary file (`.00012.sig.tmp.PID` → 12).
pub fn file_index(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix('.')?.split('.').next()?;
    (digits.len() == 5).then(|| digits.parse().ok()).flatten()
}

/// Removes `path` if it is a leftover temporary file; returns 1 if it did.
pub fn clean_file(path: &Path, owned: Owned) -> usize {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match temp_pid(&name) {
        Some(pid) if stale(path, pid, owned) && std::fs::remove_file(path).is_ok() => 1,
        _ => 0,
    }
}

/// Removes leftover temporary files under `root` (recursively, not following symlinks);
/// returns how many.
pub fn clean(root: &Path, owned: Owned) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        removed += if ft.is_dir() {
            clean(&e.path(), owned)
        } else if ft.is_file() {
            clean_file(&e.path(), owned)
        } else {
            0
        };
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(temp_pid(".00001.train.tmp.4242"), Some(4242));
        assert_eq!(temp_pid("00001.train.tmp.4242"), None);
        assert_eq!(temp_pid(".report.json"), None);
        assert_eq!(temp_pid(".x.tmp.abc"), None);
        assert_eq!(file_index(Path::new("w/scan/.00012.sig.tmp.7")), Some(12));
        assert_eq!(file_index(Path::new("w/.report.json.tmp.7")), None);
    }
}
