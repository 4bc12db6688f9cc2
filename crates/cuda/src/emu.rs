//! [`EmuDevice`]: the kernels of `kernels/*.cu`, compiled with the host C++ compiler against
//! `emu/cuda_emu.h` and run on the CPU (one cooperative fiber per CUDA thread), plus a reference
//! GEMM with cuBLAS's column-major semantics. It lets the whole backend — launch geometry,
//! buffer kinds, conversions, the row-major to column-major GEMM mapping and the kernels' own
//! index arithmetic and tensor-core fragment handling — be tested against the CPU backend on a
//! machine without a GPU. See the header for what it can and cannot catch.
//!
//! Needs a C++17 compiler (`$CXX`, else `c++`); the built library is cached next to the NVRTC
//! cache, keyed by a hash of the sources and the compiler's version.

use crate::device::{AllocStats, Arg, DType, Device, Gemm, Launch};
use crate::kernels::{self, MODULES};
use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The emulator header.
pub const EMU_HEADER: &str = include_str!("../emu/cuda_emu.h");

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    *mut *mut c_void,
    *mut c_char,
    c_int,
) -> c_int;
type AllocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type OrderFn = unsafe extern "C" fn(c_int);

/// The emulator keeps global state: one launch (or allocation) at a time in the process.
static EMU_LOCK: Mutex<()> = Mutex::new(());

pub struct EmuDevice {
    _lib: libloading::Library,
    launch_fn: LaunchFn,
    alloc_fn: AllocFn,
    free_fn: FreeFn,
    order_fn: OrderFn,
    /// Threads of a phase run in descending order (see the header).
    reverse: bool,
    stats: AllocStats,
}

/// The single translation unit the emulator library is built from.
pub fn emulator_source() -> String {
    let mut s = String::new();
    s.push_str(EMU_HEADER);
    s.push_str("\n#line 1 \"common.cuh\"\n");
    s.push_str(kernels::COMMON);
    for m in MODULES {
        s.push_str(&format!("\n#line 1 \"{}.cu\"\n", m.name));
        s.push_str(m.source);
    }
    s.push_str("\n// ---- kernel table ----\nstatic const EmuKernel EMU_TABLE[] = {\n");
    for k in kernels::all_kernels() {
        s.push_str(&format!(
            "    {{\"{k}\", [](void** a) {{ emu::call(&{k}, a); }}}},\n"
        ));
    }
    s.push_str("};\nconst EmuKernel* emu_kernel_table(int* n) {\n    *n = (int)(sizeof(EMU_TABLE) / sizeof(EMU_TABLE[0]));\n    return EMU_TABLE;\n}\n");
    s
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Builds (or finds in the cache) the emulator library; returns its path.
pub fn build_library(cache_dir: &Path) -> Result<PathBuf> {
    let cxx = compiler();
    let version = std::process::Command::new(&cxx)
        .arg("--version")
        .output()
        .with_context(|| {
            format!("the kernel emulator needs a C++ compiler; `{cxx} --version` failed (set CXX)")
        })?;
    let src = emulator_source();
    let key = kernels::fnv1a(&[
        src.as_bytes(),
        &version.stdout,
        b"emu-v4 -O2 -fno-strict-aliasing -U_FORTIFY_SOURCE",
    ]);
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let lib = cache_dir.join(format!("tinyllama-emu-{key:016x}.so"));
    if lib.exists() {
        return Ok(lib);
    }
    let tmp = tempdir_in(cache_dir)?;
    let cpp = tmp.join("kernels_emu.cpp");
    std::fs::write(&cpp, &src)?;
    let out = tmp.join("lib.so");
    let res = std::process::Command::new(&cxx)
        // The kernels type-pun through pointer casts as CUDA code does: no strict aliasing.
        .args([
            "-std=c++17",
            "-O2",
            "-fno-strict-aliasing",
            "-fPIC",
            "-shared",
            "-Wno-unknown-pragmas",
        ])
        .arg("-o")
        .arg(&out)
        .arg(&cpp)
        .output()
        .with_context(|| format!("running {cxx}"))?;
    if !res.status.success() {
        bail!(
            "compiling the kernels for the emulator failed:\n{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(&out, &lib)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(lib)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let d = dir.join(format!(
        "tmp-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

impl EmuDevice {
    /// Builds the emulator (cached under `cache_dir`) and loads it; `reverse` runs the threads
    /// between two barriers in descending order (run tests both ways to expose missing barriers).
    pub fn new(cache_dir: &Path, reverse: bool) -> Result<Self> {
        let path = build_library(cache_dir)?;
        // SAFETY: the library is ours, built just now from known sources; its initialisers only
        // set up globals.
        unsafe {
            let lib = libloading::Library::new(&path)
                .with_context(|| format!("loading {}", path.display()))?;
            let launch_fn = *lib.get::<LaunchFn>(b"emu_launch\0")?;
            let alloc_fn = *lib.get::<AllocFn>(b"emu_alloc\0")?;
            let free_fn = *lib.get::<FreeFn>(b"emu_free\0")?;
            let order_fn = *lib.get::<OrderFn>(b"emu_set_reverse\0")?;
            Ok(EmuDevice {
                _lib: lib,
                launch_fn,
                alloc_fn,
                free_fn,
                order_fn,
                reverse,
                stats: AllocStats::default(),
            })
        }
    }
}

fn read_f(ptr: u64, ty: DType, idx: usize) -> f32 {
    // SAFETY: callers index within the operand extents the Gemm describes.
    unsafe {
        match ty {
            DType::F32 => *(ptr as *const f32).add(idx),
            DType::Bf16 => half::bf16::from_bits(*(ptr as *const u16).add(idx)).to_f32(),
        }
    }
}

/// The column-major product cuBLAS computes: f32 accumulation over k in order.
pub fn reference_gemm(g: &Gemm) {
    for j in 0..g.n {
        for i in 0..g.m {
            let mut acc = 0f32;
            for p in 0..g.k {
                let a = if g.trans_a {
                    read_f(g.a, DType::Bf16, p + i * g.lda)
                } else {
                    read_f(g.a, DType::Bf16, i + p * g.lda)
                };
                let b = if g.trans_b {
                    read_f(g.b, DType::Bf16, j + p * g.ldb)
                } else {
                    read_f(g.b, DType::Bf16, p + j * g.ldb)
                };
                acc += a * b;
            }
            let idx = i + j * g.ldc;
            let mut v = g.alpha * acc;
            if g.beta != 0.0 {
                v += g.beta * read_f(g.c, g.c_type, idx);
            }
            // SAFETY: idx is within C's extent.
            unsafe {
                match g.c_type {
                    DType::F32 => *(g.c as *mut f32).add(idx) = v,
                    DType::Bf16 => *(g.c as *mut u16).add(idx) = half::bf16::from_f32(v).to_bits(),
                }
            }
        }
    }
}

impl Device for EmuDevice {
    fn name(&self) -> String {
        format!(
            "cuda-emulator (kernels on the CPU{})",
            if self.reverse {
                ", threads in reverse order"
            } else {
                ""
            }
        )
    }
    fn alloc(&self, bytes: usize) -> u64 {
        let _l = EMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: plain allocation through the library.
        let p = unsafe { (self.alloc_fn)(bytes) };
        assert!(!p.is_null(), "emulator: cannot allocate {bytes} bytes");
        self.stats.add(bytes);
        p as u64
    }
    fn free(&self, ptr: u64, bytes: usize) {
        let _l = EMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: ptr came from alloc.
        unsafe { (self.free_fn)(ptr as *mut c_void) };
        self.stats.sub(bytes);
    }
    fn memset_zero(&self, ptr: u64, bytes: usize) {
        // SAFETY: device pointers are host pointers here.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, bytes) };
    }
    fn htod(&self, dst: u64, src: &[u8]) {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
    }
    fn dtoh(&self, dst: &mut [u8], src: u64) {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
    }
    fn dtod(&self, dst: u64, src: u64, bytes: usize) {
        // SAFETY: as above; `copy` handles overlap.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
    }
    fn launch(&self, kernel: &str, l: Launch, args: &[Arg]) {
        let _l = EMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let name = CString::new(kernel).unwrap();
        let mut err = vec![0 as c_char; 512];
        // SAFETY: arguments are laid out as cuLaunchKernel expects; the kernels index device
        // (host) memory the backend allocated.
        let rc = unsafe {
            (self.order_fn)(self.reverse as c_int);
            (self.launch_fn)(
                name.as_ptr(),
                l.grid[0],
                l.grid[1],
                l.grid[2],
                l.block[0],
                l.block[1],
                l.block[2],
                l.smem,
                ptrs.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            let msg: Vec<u8> = err
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            panic!("emulated kernel failed: {}", String::from_utf8_lossy(&msg));
        }
    }
    fn gemm(&self, g: &Gemm) {
        reference_gemm(g);
    }
    fn sync(&self) {}
    fn mem_info(&self) -> Option<(u64, u64)> {
        None
    }
    fn stats(&self) -> &AllocStats {
        &self.stats
    }
}
