//! The CUDA backend of tinyllama: bf16 mixed-precision training on NVIDIA GPUs.
//!
//! - [`backend::CudaBackend`] implements the engine's `Backend` trait (storage precision per
//!   buffer kind, cuBLASLt matmuls, fused kernels, flash attention forward and backward).
//! - `kernels/*.cu` are CUDA C++ sources compiled at run time by NVRTC for the device's compute
//!   capability and cached on disk.
//! - [`emu::EmuDevice`] runs the same kernel sources on the CPU so everything but the hardware
//!   itself is tested without a GPU.
//!
//! Nothing here links against CUDA at build time: the driver, NVRTC and cuBLASLt are loaded
//! dynamically when a device is opened.

pub mod backend;
pub mod device;
pub mod discover;
pub mod driver;
pub mod emu;
pub mod kernels;
pub mod memory;
pub mod nccl;
pub mod nvrtc;
pub mod selftest;
pub mod tiling;

pub use backend::{CudaBackend, CudaBuf, CudaIds, MemoryReport};
pub use driver::{gpu_backend, parse_device};

use std::path::PathBuf;

/// Where compiled kernels (and the emulator library) are cached: `$TINYLLAMA_CACHE/kernels`,
/// else `$XDG_CACHE_HOME/tinyllama/kernels`, else `~/.cache/tinyllama/kernels`, else a
/// directory under the system temp dir.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(
        std::env::var_os("TINYLLAMA_CACHE").map(PathBuf::from),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn cache_dir_from(
    explicit: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    let nonempty = |p: &Option<PathBuf>| p.as_ref().filter(|p| !p.as_os_str().is_empty()).cloned();
    if let Some(p) = nonempty(&explicit) {
        return p.join("kernels");
    }
    if let Some(p) = nonempty(&xdg) {
        return p.join("tinyllama").join("kernels");
    }
    if let Some(p) = nonempty(&home) {
        return p.join(".cache").join("tinyllama").join("kernels");
    }
    std::env::temp_dir().join("tinyllama").join("kernels")
}

/// A backend on the kernel emulator (tests, `selftest --device cuda:emu`, `device = "cuda:emu"`).
/// `TINYLLAMA_EMU_REVERSE=1` runs each phase's threads in descending order.
pub fn emulator_backend() -> anyhow::Result<CudaBackend> {
    let reverse = std::env::var("TINYLLAMA_EMU_REVERSE").is_ok_and(|v| v == "1");
    emulator_backend_ordered(reverse)
}

/// [`emulator_backend`] with an explicit thread order.
pub fn emulator_backend_ordered(reverse: bool) -> anyhow::Result<CudaBackend> {
    let dev = emu::EmuDevice::new(&cache_dir().join("emu"), reverse)?;
    Ok(CudaBackend::with_device(std::sync::Arc::new(dev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_directory_precedence() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            cache_dir_from(p("/c"), p("/x"), p("/h")),
            PathBuf::from("/c/kernels")
        );
        assert_eq!(
            cache_dir_from(None, p("/x"), p("/h")),
            PathBuf::from("/x/tinyllama/kernels")
        );
        assert_eq!(
            cache_dir_from(p(""), None, p("/h")),
            PathBuf::from("/h/.cache/tinyllama/kernels")
        );
        assert!(cache_dir_from(None, None, None).ends_with("tinyllama/kernels"));
    }
}
