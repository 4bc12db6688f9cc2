//! Continuous batching: one worker thread owns the decoding loop and steps every running
//! sequence together; requests that arrive meanwhile wait in a bounded queue and join the
//! batch between steps as soon as a slot is free. A full queue is refused at once (the server
//! answers 503) rather than growing without bound.
//!
//! Results leave through a per-request sink, called on the worker thread: it receives tokens
//! as they are produced and a final event, and returns `false` when the consumer no longer
//! wants the sequence (client gone, stop string found), which frees its slot.

use crate::runner::{Finish, GenParams, Runner, Sequence, TokenLogprob};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most.
    pub max_parallel: usize,
    /// Requests waiting for a slot at most; beyond that `submit` fails with `QueueFull`.
    pub max_queue: usize,
}

/// What a sink receives.
#[derive(Clone, Debug)]
pub enum Event {
    /// New tokens (several at once with speculative decoding).
    Tokens(Vec<u32>),
    /// The log-probabilities of the tokens of the `Tokens` event that follows, for requests
    /// submitted with [`Scheduler::submit_with_logprobs`].
    Logprobs(Vec<TokenLogprob>),
    /// The sequence ended; always the last event.
    Done(Summary),
    /// Decoding failed; the last event.
    Error(String),
}

#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub finish: Finish,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub proposed: usize,
    pub accepted: usize,
}

pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

#[derive(Debug)]
pub enum SubmitError {
    /// The waiting queue is full (HTTP 503).
    QueueFull {
        max_queue: usize,
    },
    /// The prompt or parameters were refused (HTTP 400).
    Invalid(anyhow::Error),
    ShuttingDown,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::QueueFull { max_queue } => write!(
                f,
                "the server is busy: all decoding slots are taken and {max_queue} requests are already waiting; retry later"
            ),
            SubmitError::Invalid(e) => write!(f, "{e:#}"),
            SubmitError::ShuttingDown => write!(f, "the server is shutting down"),
        }
    }
}

struct State {
    waiting: VecDeque<(Sequence, Sink)>,
    running: usize,
    /// While paused no waiting request is admitted (running ones continue).
    paused: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    cfg: SchedulerConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the queue inconsistent (every update is one step),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to the batching worker; clones share it.
#[derive(Clone)]
pub struct Scheduler {
    runner: Arc<Runner>,
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Scheduler {
    pub fn start(runner: Arc<Runner>, cfg: SchedulerConfig) -> Self {
        let cfg = SchedulerConfig {
            max_parallel: cfg.max_parallel.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                running: 0,
                paused: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            cfg,
        });
        let (r, s) = (runner.clone(), shared.clone());
        let worker = std::thread::Builder::new()
            .name("decode-batch".into())
            .spawn(move || work(&r, &s))
            .expect("spawn the decoding thread");
        Scheduler {
            runner,
            shared,
            worker: Arc::new(Mutex::new(Some(worker))),
        }
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The runner, for work beside the decoding loop (scoring prompts).
    pub fn runner_arc(&self) -> Arc<Runner> {
        self.runner.clone()
    }

    pub fn config(&self) -> SchedulerConfig {
        self.shared.cfg
    }

    /// Validates the prompt and queues it; the sink then receives its events.
    pub fn submit(&self, prompt: &[u32], params: GenParams, sink: Sink) -> Result<(), SubmitError> {
        self.submit_with_logprobs(prompt, params, None, sink)
    }

    /// [`Scheduler::submit`], and with `Some(top)` the sink also receives each token's
    /// log-probability with `top` alternatives.
    pub fn submit_with_logprobs(
        &self,
        prompt: &[u32],
        params: GenParams,
        logprobs: Option<usize>,
        sink: Sink,
    ) -> Result<(), SubmitError> {
        let mut seq = self
            .runner
            .new_sequence(prompt, params)
            .map_err(SubmitError::Invalid)?;
        seq.logprobs = logprobs;
        let mut st = self.shared.lock();
        if st.shutdown {
            return Err(SubmitError::ShuttingDown);
        }
        // A free slot takes the request at once; otherwise it waits if there is room.
        let free = st.running + st.waiting.len() < self.shared.cfg.max_parallel && !st.paused;
        if !free && st.waiting.len() >= self.shared.cfg.max_queue {
            return Err(SubmitError::QueueFull {
                max_queue: self.shared.cfg.max_queue,
            });
        }
        st.waiting.push_back((seq, sink));
        drop(st);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// (running, waiting) requests.
    pub fn load(&self) -> (usize, usize) {
        let st = self.shared.lock();
        (st.running, st.waiting.len())
    }

    /// Stops admitting waiting requests (running ones continue); for maintenance and tests.
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.wake.notify_all();
    }

    /// Finishes the running sequences' current step, cancels everything and joins the worker.
    pub fn shutdown(&self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn summary(s: &Sequence) -> Summary {
    Summary {
        finish: s.finish.unwrap_or(Finish::Cancelled),
        prompt_tokens: s.prompt_len,
        completion_tokens: s.generated().len(),
        proposed: s.proposed,
        accepted: s.accepted,
    }
}

fn work(runner: &Runner, shared: &Shared) {
    let mut active: Vec<(Sequence, Sink)> = Vec::new();
    loop {
        {
            let mut st = shared.lock();
            loop {
                if st.shutdown {
                    for (s, mut sink) in active.drain(..).chain(st.waiting.drain(..)) {
                        let mut sum = summary(&s);
                        sum.finish = Finish::Cancelled;
                        sink(Event::Done(sum));
                    }
                    st.running = 0;
                    return;
                }
                while !st.paused && active.len() < shared.cfg.max_parallel {
                    match st.waiting.pop_front() {
                        Some(job) => active.push(job),
                        None => break,
                    }
                }
                st.running = active.len();
                if !active.is_empty() {
                    break;
                }
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        let result = {
            let mut seqs: Vec<&mut Sequence> = active.iter_mut().map(|(s, _)| s).collect();
            runner.step(&mut seqs)
        };
        if let Err(e) = result {
            // Inputs were validated on submit, so this is an internal failure: report it to
            // everyone in the batch rather than retrying forever.
            let msg = format!("{e:#}");
            for (_, mut sink) in active.drain(..) {
                sink(Event::Error(msg.clone()));
            }
            continue;
        }
        active.retain_mut(|(s, sink)| {
            if !s.new_logprobs.is_empty() {
                sink(Event::Logprobs(std::mem::take(&mut s.new_logprobs)));
            }
            if !s.new_tokens.is_empty() && !sink(Event::Tokens(s.new_tokens.clone())) {
                s.finish.get_or_insert(Finish::Cancelled);
            }
            if s.finish.is_some() {
                sink(Event::Done(summary(s)));
                return false;
            }
            true
        });
    }
}
