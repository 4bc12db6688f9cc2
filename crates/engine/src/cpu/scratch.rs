//! Per-worker scratch memory for kernels that need temporary matrices (attention scores),
//! allocated on first use and reused every step instead of being allocated per call.

use std::sync::{Mutex, MutexGuard};

pub struct ScratchPool<T> {
    slots: Vec<Mutex<Vec<T>>>,
}

impl<T: Copy + Default> ScratchPool<T> {
    pub fn new() -> Self {
        // One slot per pool worker plus one for the calling thread.
        let n = rayon::current_num_threads() + 1;
        ScratchPool {
            slots: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// The calling worker's buffer, grown to at least `len` elements.
    pub fn get(&self, len: usize) -> MutexGuard<'_, Vec<T>> {
        let slot = rayon::current_thread_index().map(|i| i + 1).unwrap_or(0);
        // A thread outside the pool the slots were sized for shares slot 0; the mutex keeps
        // that correct, merely serialised.
        let mut g = self
            .slots
            .get(slot)
            .unwrap_or(&self.slots[0])
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if g.len() < len {
            g.resize(len, T::default());
        }
        g
    }
}

impl<T: Copy + Default> Default for ScratchPool<T> {
    fn default() -> Self {
        Self::new()
    }
}
