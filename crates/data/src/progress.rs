//! Progress for long stages: an indicatif bar when stderr is a terminal, otherwise a plain log
//! line every few seconds (batch jobs and CI logs should not fill with carriage returns), and
//! nothing at all when the caller asked for quiet.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    /// For log-line mode.
    done: AtomicU64,
    last_log: Mutex<Instant>,
    start: Instant,
    log: bool,
    bytes: bool,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Progress over `total` bytes.
    pub fn bytes(label: &str, total: u64, quiet: bool) -> Self {
        Self::new(label, total, quiet, true)
    }

    /// Progress over `total` items.
    pub fn items(label: &str, total: u64, quiet: bool) -> Self {
        Self::new(label, total, quiet, false)
    }

    fn new(label: &str, total: u64, quiet: bool, bytes: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let tmpl = if bytes {
                "{prefix:>8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
            };
            let b = ProgressBar::new(total).with_prefix(label.to_string());
            b.set_style(
                ProgressStyle::with_template(tmpl)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        Progress {
            label: label.to_string(),
            total,
            bar,
            done: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
            start: Instant::now(),
            log: !quiet && !tty,
            bytes,
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
            return;
        }
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if self.log {
            let mut last = self.last_log.lock().unwrap();
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                drop(last);
                self.log_line(done);
            }
        }
    }

    fn fmt(&self, n: u64) -> String {
        if self.bytes {
            human_bytes(n)
        } else {
            n.to_string()
        }
    }

    fn log_line(&self, done: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let pct = if self.total > 0 {
            100.0 * done as f64 / self.total as f64
        } else {
            100.0
        };
        eprintln!(
            "{}: {} / {} ({pct:.0}%), {}/s",
            self.label,
            self.fmt(done),
            self.fmt(self.total),
            self.fmt((done as f64 / secs) as u64)
        );
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        } else if self.log {
            self.log_line(self.done.load(Ordering::Relaxed));
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}
