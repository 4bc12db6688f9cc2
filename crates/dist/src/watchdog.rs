//! A rank that dies or hangs must not leave the others waiting forever. Two parts:
//!
//! - **Heartbeats.** Every rank writes `heartbeat/rank-NNNNN.json` in the run directory (step,
//!   pid, host, time) after each step, so whoever notices a stall can say which rank stopped.
//! - **A bound on each collective.** [`Watched`] wraps a [`Collective`]; a watchdog thread ends
//!   the process when one operation has waited longer than the timeout, naming the ranks whose
//!   heartbeat is behind and the last complete checkpoint. Under mpirun or srun the launcher
//!   then ends the remaining ranks (a rank that exits with an error ends the job).
//!
//! A rank that is killed outright is noticed by the launcher itself (mpirun ends the job when
//! a rank dies); the watchdog covers what the launcher cannot see: a rank that is alive but
//! stuck, or a peer on a node that vanished without closing its connections.

use crate::collective::{Collective, ReduceOp};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub rank: usize,
    pub step: u64,
    pub pid: u32,
    pub host: String,
    pub unix_time: f64,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

pub fn heartbeat_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("heartbeat")
}

/// Every rank's last heartbeat found in `run_dir`.
pub fn read_heartbeats(run_dir: &Path) -> Vec<Heartbeat> {
    let mut v: Vec<Heartbeat> = std::fs::read_dir(heartbeat_dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    v.sort_by_key(|h| h.rank);
    v
}

/// Which ranks look failed: no heartbeat at all, a step behind the furthest rank, or (when
/// `waiting` lists the ranks known to be blocked in a collective) not blocked with the others.
pub fn suspects(beats: &[Heartbeat], waiting: &[usize], world: usize) -> Vec<String> {
    let max = beats.iter().map(|h| h.step).max().unwrap_or(0);
    let mut out = Vec::new();
    for r in 0..world {
        match beats.iter().find(|h| h.rank == r) {
            None => out.push(format!("rank {r} (no heartbeat)")),
            Some(h) if h.step < max || (!waiting.is_empty() && !waiting.contains(&r)) => {
                out.push(format!(
                    "rank {r} (pid {} on {}, last finished step {}, {:.0} s ago{})",
                    h.pid,
                    h.host,
                    h.step,
                    now_unix() - h.unix_time,
                    if waiting.contains(&r) {
                        ""
                    } else {
                        ", not waiting in the collective"
                    }
                ))
            }
            _ => {}
        }
    }
    out
}

/// Ranks that left a marker saying they are blocked in a collective (see [`Watched`]).
pub fn read_waiting(run_dir: &Path) -> Vec<usize> {
    let mut v: Vec<usize> = std::fs::read_dir(heartbeat_dir(run_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("rank-")?
                .strip_suffix(".waiting")?
                .parse()
                .ok()
        })
        .collect();
    v.sort();
    v
}

struct State {
    /// The operation in flight and when it began.
    waiting: Option<(&'static str, Instant)>,
    step: u64,
    last_checkpoint: Option<String>,
    /// The limit is multiplied by this (raised while rank 0 writes a checkpoint or an export
    /// and the others wait for it).
    patience: u32,
}

/// A [`Collective`] whose every operation is bounded in time (see the module doc).
pub struct Watched {
    inner: Box<dyn Collective>,
    state: Arc<Mutex<State>>,
    run_dir: PathBuf,
}

impl Watched {
    /// Wraps `inner`; `timeout` bounds each operation (`None`: no watchdog thread, heartbeats
    /// only).
    pub fn new(inner: Box<dyn Collective>, run_dir: &Path, timeout: Option<Duration>) -> Self {
        let state = Arc::new(Mutex::new(State {
            waiting: None,
            step: 0,
            last_checkpoint: None,
            patience: 1,
        }));
        // A marker from an earlier job in this directory would make this rank look blocked.
        let _ = std::fs::remove_file(
            heartbeat_dir(run_dir).join(format!("rank-{:05}.waiting", inner.rank())),
        );
        if let Some(limit) = timeout.filter(|_| inner.world() > 1) {
            let st = state.clone();
            let (rank, world) = (inner.rank(), inner.world());
            let dir = run_dir.to_path_buf();
            std::thread::Builder::new()
                .name("collective-watchdog".into())
                .spawn(move || loop {
                    std::thread::sleep((limit / 20).clamp(Duration::from_millis(50), Duration::from_secs(5)));
                    let s = st.lock().unwrap();
                    if let Some((op, since)) = s.waiting {
                        let limit = limit * s.patience;
                        if since.elapsed() > limit {
                            drop(s);
                            // Say that this rank is blocked, give the other blocked ranks a
                            // moment to say so too, then name the ranks that did not.
                            let hb = heartbeat_dir(&dir);
                            let _ = std::fs::create_dir_all(&hb);
                            let _ = std::fs::write(hb.join(format!("rank-{rank:05}.waiting")), op);
                            std::thread::sleep((limit / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)));
                            let s = st.lock().unwrap();
                            let who = suspects(&read_heartbeats(&dir), &read_waiting(&dir), world);
                            eprintln!(
                                "rank {rank}: `{op}` during step {} has waited {:.0} s for the other ranks (limit {} s, [dist] timeout_s); {}. \
                                 Ending this rank so the job stops. Last complete checkpoint: {}; continue with `--resume` (on the same or another number of ranks)",
                                s.step,
                                since.elapsed().as_secs_f64(),
                                limit.as_secs(),
                                if who.is_empty() {
                                    "every rank's heartbeat is at the same step, so a rank hung inside this operation or its node was lost".to_string()
                                } else {
                                    format!("not responding: {}", who.join(", "))
                                },
                                s.last_checkpoint.as_deref().unwrap_or("none yet")
                            );
                            std::process::exit(75);
                        }
                    }
                })
                .expect("spawn the watchdog thread");
        }
        Watched {
            inner,
            state,
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// Records that `step` finished on this rank (the heartbeat file) and the newest complete
    /// checkpoint, for the message if the job stalls later.
    pub fn beat(&self, step: u64, last_checkpoint: Option<&Path>) -> Result<()> {
        {
            let mut s = self.state.lock().unwrap();
            s.step = step;
            if let Some(c) = last_checkpoint {
                s.last_checkpoint = Some(c.display().to_string());
            }
        }
        if self.inner.world() == 1 {
            return Ok(());
        }
        let dir = heartbeat_dir(&self.run_dir);
        std::fs::create_dir_all(&dir)?;
        let hb = Heartbeat {
            rank: self.inner.rank(),
            step,
            pid: std::process::id(),
            host: host_name(),
            unix_time: now_unix(),
        };
        let path = dir.join(format!("rank-{:05}.json", hb.rank));
        let tmp = dir.join(format!(".rank-{:05}.json.tmp", hb.rank));
        std::fs::write(&tmp, serde_json::to_vec(&hb)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Runs `f` (which waits on other ranks' slow work, such as rank 0 writing a checkpoint)
    /// with each collective allowed `factor` times the usual limit.
    pub fn with_patience<T>(&self, factor: u32, f: impl FnOnce() -> T) -> T {
        self.state.lock().unwrap().patience = factor.max(1);
        let r = f();
        self.state.lock().unwrap().patience = 1;
        r
    }

    fn watch<T>(&self, op: &'static str, f: impl FnOnce(&dyn Collective) -> T) -> T {
        self.state.lock().unwrap().waiting = Some((op, Instant::now()));
        let r = f(&*self.inner);
        self.state.lock().unwrap().waiting = None;
        r
    }
}

impl Collective for Watched {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        self.watch("all-reduce", |c| c.all_reduce_f32(buf, op))
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        self.watch("all-reduce", |c| c.all_reduce_f64(buf, op))
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.watch("reduce-scatter", |c| c.reduce_scatter_f32(send, recv))
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.watch("all-gather", |c| c.all_gather_f32(send, recv))
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.watch("broadcast", |c| c.broadcast_bytes(buf, root))
    }
    fn barrier(&self) -> Result<()> {
        self.watch("barrier", |c| c.barrier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rank_behind_is_named() {
        let beats = vec![
            Heartbeat {
                rank: 0,
                step: 7,
                pid: 10,
                host: "a".into(),
                unix_time: now_unix(),
            },
            Heartbeat {
                rank: 2,
                step: 5,
                pid: 12,
                host: "b".into(),
                unix_time: now_unix() - 30.0,
            },
        ];
        let s = suspects(&beats, &[], 3);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].starts_with("rank 1 (no heartbeat"), "{s:?}");
        assert!(
            s[1].contains("rank 2 (pid 12 on b, last finished step 5"),
            "{s:?}"
        );
    }

    #[test]
    fn heartbeats_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let groups = crate::local::LocalGroup::new(2);
        let hs: Vec<_> = groups
            .into_iter()
            .map(|g| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let r = g.rank() as u64;
                    let w = Watched::new(Box::new(g), &d, Some(Duration::from_secs(60)));
                    w.beat(3 + r, None).unwrap();
                    w.barrier().unwrap();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let beats = read_heartbeats(dir.path());
        assert_eq!(beats.iter().map(|h| h.step).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(suspects(&beats, &[], 2).len(), 1);
        // Both at step 4 (say), rank 0 blocked in the collective, rank 1 not: rank 1 is named.
        let mut same = beats.clone();
        same[0].step = 4;
        let s = suspects(&same, &[0], 2);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(
            s[0].starts_with("rank 1 (pid") && s[0].contains("not waiting"),
            "{s:?}"
        );
        assert!(suspects(&same, &[0, 1], 2).is_empty());
    }
}
