//! A few bytes from rank 0 to every rank through a file on the shared filesystem, for jobs
//! started without MPI (torchrun-style variables, or srun without an MPI library): the NCCL
//! unique id travels this way. Rank 0 writes `rendezvous/<key>` in the run directory atomically;
//! the others wait for it, bounded in time. The key should name the job (Slurm's job id when
//! there is one) so that a file left by an earlier job is never read; without one, files older
//! than this process's start are ignored.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A key for this job from the launcher's environment (`SLURM_JOB_ID`, `TORCHELASTIC_RUN_ID`),
/// or `job` when there is none.
pub fn job_key(get: impl Fn(&str) -> Option<String>) -> String {
    for var in ["SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "PMIX_NAMESPACE"] {
        if let Some(v) = get(var) {
            let clean: String = v
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            return format!("job-{clean}");
        }
    }
    "job".into()
}

/// Rank 0 passes `Some(bytes)` and gets them back; the others pass `None` and wait up to
/// `timeout` for rank 0's file.
pub fn share_via_file(
    run_dir: &Path,
    key: &str,
    bytes: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let dir = run_dir.join("rendezvous");
    let path = dir.join(key);
    if let Some(b) = bytes {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, b).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
        return Ok(b.to_vec());
    }
    // A file from before this process started belongs to an earlier job.
    let born = SystemTime::now() - Duration::from_secs(5);
    let t0 = Instant::now();
    loop {
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.modified().map(|m| m >= born).unwrap_or(true) {
                return std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()));
            }
        }
        if t0.elapsed() > timeout {
            bail!(
                "waited {} s for rank 0 to write {}: is the run directory on a filesystem every node shares, and did rank 0 start?",
                timeout.as_secs(),
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_reach_the_waiting_rank_and_a_missing_writer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            share_via_file(&d, "job-7", None, Duration::from_secs(20)).unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        share_via_file(
            dir.path(),
            "job-7",
            Some(b"nccl-id"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(waiter.join().unwrap(), b"nccl-id");
        let e = share_via_file(dir.path(), "job-8", None, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("job-8") && e.contains("shares"), "{e}");
        assert_eq!(
            job_key(|k| (k == "SLURM_JOB_ID").then(|| "12/3".to_string())),
            "job-12_3"
        );
    }
}
