//! How the stages use the machine: a few input files are open at once, each read by its own
//! thread one batch ahead of processing, and every batch is processed by the whole rayon pool
//! (order preserved). Memory is bounded by `open files × 3 batches`; per-file outputs make
//! the results independent of scheduling.

use crate::config::SourceConfig;
use crate::ingest::{read_file, FileProblem, InputFile, RawRecord, ReadLimits};
use crate::progress::Progress;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Reads `file` on a helper thread and hands each batch to `consume` on this one.
pub fn read_batches(
    file: &InputFile,
    src: &SourceConfig,
    limits: ReadLimits,
    progress: &Progress,
    mut consume: impl FnMut(Vec<RawRecord>) -> Result<()>,
) -> Result<Vec<FileProblem>> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<RawRecord>>(1);
        let reader = s.spawn(move || {
            read_file(file, src, limits, progress, &mut |b| {
                tx.send(b).map_err(|_| anyhow!("processing stopped"))
            })
        });
        let mut err = None;
        for b in rx {
            if let Err(e) = consume(b) {
                err = Some(e);
                break;
            }
        }
        let res = reader
            .join()
            .map_err(|_| anyhow!("the reader thread for {} panicked", file.path.display()))?;
        match err {
            Some(e) => Err(e),
            None => res,
        }
    })
}

/// Runs `work` on each file with up to `open` files in flight; results in input order. The
/// first error stops new files from starting and is returned.
pub fn for_each_file<T: Send>(
    files: &[&InputFile],
    open: usize,
    work: impl Fn(&InputFile) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    let first_err: Mutex<Option<(usize, anyhow::Error)>> = Mutex::new(None);
    let threads = open.clamp(1, files.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files.len() {
                    break;
                }
                match work(files[i]) {
                    Ok(v) => results.lock().unwrap()[i] = Some(v),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        let mut fe = first_err.lock().unwrap();
                        if fe.as_ref().is_none_or(|(j, _)| i < *j) {
                            *fe = Some((i, e));
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some((i, e)) = first_err.into_inner().unwrap() {
        return Err(e).with_context(|| format!("processing {}", files[i].path.display()));
    }
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every file processed"))
        .collect())
}
