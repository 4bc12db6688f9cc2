//! The narrow interface the backend drives a device through: raw allocations, copies, kernel
//! launches by name and one GEMM entry point in cuBLAS (column-major) terms. Two implementations:
//! [`crate::driver::GpuDevice`] (CUDA driver API, NVRTC-compiled kernels, cuBLASLt) and
//! [`crate::emu::EmuDevice`] (the same kernel sources compiled for the CPU and run one fiber per
//! CUDA thread, plus a reference GEMM), so everything above this trait is testable without a GPU.
//!
//! Device errors after initialisation (a failed launch, an out-of-memory allocation) panic with
//! the driver's message: the `Backend` trait has no error channel, and none of them is
//! recoverable mid-step.

use std::sync::atomic::{AtomicU64, Ordering};

/// Element types of device buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// A kernel argument, passed by value. Every variant occupies one 8-byte slot whose first bytes
/// hold the value (little-endian), which is what `cuLaunchKernel` reads through its pointer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg {
    pub fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// `D = alpha · op(A) · op(B) + beta · C` with `D` written over `C`, all column-major as cuBLAS
/// defines it: `op(A)` is `m × k`, `op(B)` is `k × n`, `C` is `m × n` with leading dimension
/// `ldc`. A and B are bf16; C is f32 or bf16; accumulation is f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
    pub c_type: DType,
    pub alpha: f32,
    pub beta: f32,
}

/// Launch geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
}

impl Launch {
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Launch {
            grid: [blocks.max(1), 1, 1],
            block: [threads, 1, 1],
            smem: 0,
        }
    }
}

pub trait Device: Send + Sync {
    /// e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
    fn name(&self) -> String;
    /// Device memory, aligned to at least 256 bytes; `bytes > 0`.
    fn alloc(&self, bytes: usize) -> u64;
    fn free(&self, ptr: u64, bytes: usize);
    fn memset_zero(&self, ptr: u64, bytes: usize);
    fn htod(&self, dst: u64, src: &[u8]);
    /// Waits for all queued work, then copies.
    fn dtoh(&self, dst: &mut [u8], src: u64);
    fn dtod(&self, dst: u64, src: u64, bytes: usize);
    fn launch(&self, kernel: &str, l: Launch, args: &[Arg]);
    fn gemm(&self, g: &Gemm);
    fn sync(&self);
    /// Bytes (free, total) on the device, where known.
    fn mem_info(&self) -> Option<(u64, u64)>;
    /// Allocation accounting shared by the implementations.
    fn stats(&self) -> &AllocStats;
    /// Runs `f` with the device's context current and its stream (`CUstream`) as argument,
    /// holding the device's lock, so a library outside the backend (NCCL) can queue work in
    /// order with the backend's own. `None` where there is no real stream (the emulator).
    fn on_stream(
        &self,
        f: &mut dyn FnMut(u64) -> anyhow::Result<()>,
    ) -> Option<anyhow::Result<()>> {
        let _ = f;
        None
    }
}

/// Bytes currently allocated through a [`Device`] and the high-water mark.
#[derive(Default, Debug)]
pub struct AllocStats {
    current: AtomicU64,
    peak: AtomicU64,
}

impl AllocStats {
    pub fn add(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    pub fn sub(&self, bytes: usize) {
        self.current.fetch_sub(bytes as u64, Ordering::Relaxed);
    }
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_slots_hold_values_in_their_low_bytes() {
        assert_eq!(Arg::I32(-1).slot(), 0xffff_ffff);
        assert_eq!(Arg::F32(1.0).slot(), 0x3f80_0000);
        assert_eq!(Arg::I64(-2).slot(), u64::MAX - 1);
        assert_eq!(Arg::Ptr(0x1234).slot(), 0x1234);
        let s = Arg::I32(7).slot().to_le_bytes();
        assert_eq!(i32::from_le_bytes([s[0], s[1], s[2], s[3]]), 7);
    }

    #[test]
    fn alloc_stats_track_the_high_water_mark() {
        let s = AllocStats::default();
        s.add(100);
        s.add(50);
        s.sub(100);
        s.add(10);
        assert_eq!((s.current(), s.peak()), (60, 150));
        s.reset_peak();
        assert_eq!(s.peak(), 60);
    }
}
