//! [`GpuDevice`]: a CUDA GPU through the driver API (cudarc, loaded dynamically), with the kernel
//! modules compiled by NVRTC for the device's compute capability and cuBLASLt for the matmuls.
//! All work goes to one stream; host copies wait for it.

use crate::device::{AllocStats, Arg, DType, Device, Gemm, Launch};
use crate::discover;
use crate::kernels::MODULES;
use crate::nvrtc::{Nvrtc, Target};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::cublaslt::sys as lt;
use cudarc::driver::sys as cu;
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Mutex;

/// cuBLASLt workspace (NVIDIA recommends 32 MiB on Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

fn check(r: cu::CUresult, what: &str) -> Result<()> {
    if r == cu::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut s: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: cuGetErrorString returns a static string or leaves the pointer null.
    let msg = unsafe {
        cu::cuGetErrorString(r, &mut s);
        if s.is_null() {
            format!("{r:?}")
        } else {
            format!("{r:?}: {}", std::ffi::CStr::from_ptr(s).to_string_lossy())
        }
    };
    Err(anyhow!("{what} failed ({msg})"))
}

fn must(r: cu::CUresult, what: &str) {
    if let Err(e) = check(r, what) {
        panic!("CUDA error: {e:#}");
    }
}

fn lt_check(r: lt::cublasStatus_t, what: &str) {
    if r != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        panic!("cuBLASLt error: {what} failed ({r:?})");
    }
}

/// One cached cuBLASLt plan.
struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    c: lt::cublasLtMatrixLayout_t,
    algo: lt::cublasLtMatmulAlgo_t,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    c_bf16: bool,
    /// Alignment (bytes, ≤ 16) of the A, B and C pointers: the heuristic must know them.
    align: [u8; 3],
}

/// Raw driver handles; used only under the device's own discipline (one stream, ops serialised
/// by the backend), which is what makes sharing them across threads sound.
struct Handles {
    ctx: cu::CUcontext,
    stream: cu::CUstream,
    lt: lt::cublasLtHandle_t,
    workspace: u64,
    functions: HashMap<String, (cu::CUfunction, i32)>,
    plans: HashMap<PlanKey, Plan>,
}

unsafe impl Send for Handles {}

pub struct GpuDevice {
    h: Mutex<Handles>,
    name: String,
    pub ordinal: usize,
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub total_memory: u64,
    /// Modules that came from the on-disk cache / were compiled now.
    pub modules_cached: usize,
    pub modules_compiled: usize,
    stats: AllocStats,
}

/// Parses `cuda`, `cuda:N` and `cuda:emu` (the kernel emulator). `None` for `cuda:emu`.
pub fn parse_device(dev: &str) -> Result<Option<usize>> {
    match dev {
        "cuda" => Ok(Some(0)),
        "cuda:emu" => Ok(None),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Some(n)),
            _ => bail!("unknown device `{d}`; use cpu, cuda or cuda:N"),
        },
    }
}

/// A device's identity, without opening it for compute.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub total_memory: u64,
}

/// Initialises the driver; the error says why no GPU can be used.
pub fn init_driver() -> Result<()> {
    let libs = discover::libraries();
    // SAFETY: only checks that the library can be opened.
    if libs.driver.is_none() || !unsafe { cu::is_culib_present() } {
        bail!(
            "no NVIDIA driver: libcuda.so.1 was not found (searched {}). This machine cannot run --device cuda; use --device cpu",
            libs.searched()
        );
    }
    // SAFETY: cuInit may be called any number of times.
    check(unsafe { cu::cuInit(0) }, "cuInit").context(
        "the NVIDIA driver is installed but no usable GPU answered (is one present and visible, e.g. CUDA_VISIBLE_DEVICES?)",
    )
}

/// Every visible GPU.
pub fn list_devices() -> Result<Vec<DeviceInfo>> {
    init_driver()?;
    let mut n = 0;
    // SAFETY: plain queries after cuInit.
    unsafe {
        check(cu::cuDeviceGetCount(&mut n), "cuDeviceGetCount")?;
        (0..n as usize).map(|i| device_info(i)).collect()
    }
}

unsafe fn device_info(ordinal: usize) -> Result<DeviceInfo> {
    let mut dev = 0;
    check(cu::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
    let attr = |a: cu::CUdevice_attribute| -> Result<i32> {
        let mut v = 0;
        check(
            cu::cuDeviceGetAttribute(&mut v, a, dev),
            "cuDeviceGetAttribute",
        )?;
        Ok(v)
    };
    let major = attr(cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sms = attr(cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let mut name = [0 as std::ffi::c_char; 256];
    check(
        cu::cuDeviceGetName(name.as_mut_ptr(), 256, dev),
        "cuDeviceGetName",
    )?;
    let mut total = 0usize;
    check(cu::cuDeviceTotalMem_v2(&mut total, dev), "cuDeviceTotalMem")?;
    Ok(DeviceInfo {
        ordinal,
        name: std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned(),
        compute_capability: (major as u32, minor as u32),
        sm_count: sms as u32,
        total_memory: total as u64,
    })
}

impl GpuDevice {
    /// Opens GPU `ordinal`: context, stream, kernels (compiled or from the cache), cuBLASLt.
    pub fn open(ordinal: usize) -> Result<Self> {
        init_driver()?;
        let libs = discover::libraries();
        let mut count = 0;
        // SAFETY: driver calls in the documented order; handles are kept in `Handles`.
        unsafe {
            check(cu::cuDeviceGetCount(&mut count), "cuDeviceGetCount")?;
            if ordinal >= count as usize {
                bail!("device cuda:{ordinal} does not exist ({count} GPU(s) visible)");
            }
            let info = device_info(ordinal)?;
            let (major, minor) = info.compute_capability;
            if major < 8 {
                bail!(
                    "{} has compute capability {major}.{minor}; the bf16 tensor-core kernels need 8.0 (Ampere) or newer",
                    info.name
                );
            }
            let mut dev = 0;
            check(cu::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
            let mut ctx = std::ptr::null_mut();
            check(
                cu::cuDevicePrimaryCtxRetain(&mut ctx, dev),
                "cuDevicePrimaryCtxRetain",
            )?;
            check(cu::cuCtxSetCurrent(ctx), "cuCtxSetCurrent")?;

            // Kernels: CUBIN for this exact architecture, through the cache.
            let nv = Nvrtc::load()?;
            let cc = major * 10 + minor;
            let target = Target::Cubin(cc);
            let dir = crate::cache_dir();
            let mut functions = HashMap::new();
            let (mut cached, mut compiled) = (0, 0);
            let t0 = std::time::Instant::now();
            for m in MODULES {
                let (image, hit) = nv
                    .compile_cached(m, target, &dir)
                    .map_err(|e| anyhow!("{e:#}"))?;
                if hit {
                    cached += 1;
                } else {
                    compiled += 1;
                }
                let mut module = std::ptr::null_mut();
                check(
                    cu::cuModuleLoadData(&mut module, image.as_ptr() as *const c_void),
                    &format!("loading the {} kernels (NVRTC {}.{} for sm_{cc})", m.name, nv.version.0, nv.version.1),
                )
                .with_context(|| {
                    format!(
                        "the driver ({}) may be older than NVRTC {}.{}; use an NVRTC no newer than the driver",
                        libs.driver_version
                            .map(|v| format!("CUDA {}.{}", v.0, v.1))
                            .unwrap_or_else(|| "unknown version".into()),
                        nv.version.0,
                        nv.version.1
                    )
                })?;
                for k in m.kernels {
                    let mut f = std::ptr::null_mut();
                    let name = CString::new(*k).unwrap();
                    check(
                        cu::cuModuleGetFunction(&mut f, module, name.as_ptr()),
                        &format!("finding kernel {k}"),
                    )?;
                    functions.insert(k.to_string(), (f, 0));
                }
            }

            if compiled > 0 {
                eprintln!(
                    "compiled {compiled} CUDA kernel module(s) with NVRTC {}.{} for sm_{cc} in {:.1} s (cached in {})",
                    nv.version.0,
                    nv.version.1,
                    t0.elapsed().as_secs_f64(),
                    dir.display()
                );
            }
            let mut stream = std::ptr::null_mut();
            check(
                cu::cuStreamCreate(
                    &mut stream,
                    cu::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                ),
                "cuStreamCreate",
            )?;
            if libs.cublaslt.is_none() || !lt::is_culib_present() {
                bail!(
                    "cuBLASLt (libcublasLt.so) was not found; searched {}. Install the CUDA toolkit or `pip install nvidia-cublas`",
                    libs.searched()
                );
            }
            let mut handle = std::ptr::null_mut();
            let r = lt::cublasLtCreate(&mut handle);
            if r != lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                bail!("cublasLtCreate failed ({r:?})");
            }
            let mut ws = 0;
            check(
                cu::cuMemAlloc_v2(&mut ws, WORKSPACE_BYTES),
                "allocating the cuBLASLt workspace",
            )?;
            Ok(GpuDevice {
                h: Mutex::new(Handles {
                    ctx,
                    stream,
                    lt: handle,
                    workspace: ws,
                    functions,
                    plans: HashMap::new(),
                }),
                name: format!("{} (sm_{cc})", info.name),
                ordinal,
                compute_capability: info.compute_capability,
                sm_count: info.sm_count,
                total_memory: info.total_memory,
                modules_cached: cached,
                modules_compiled: compiled,
                stats: AllocStats::default(),
            })
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Handles> {
        let h = self.h.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the context outlives the device; making it current is idempotent.
        unsafe { must(cu::cuCtxSetCurrent(h.ctx), "cuCtxSetCurrent") };
        h
    }
}

fn align_of(p: u64) -> u8 {
    [16u64, 8, 4, 2]
        .into_iter()
        .find(|a| p.is_multiple_of(*a))
        .unwrap_or(1) as u8
}

unsafe fn make_plan(h: &Handles, key: &PlanKey) -> Plan {
    let dt = |bf16: bool| {
        if bf16 {
            lt::cudaDataType_t::CUDA_R_16BF
        } else {
            lt::cudaDataType_t::CUDA_R_32F
        }
    };
    let mut desc = std::ptr::null_mut();
    lt_check(
        lt::cublasLtMatmulDescCreate(
            &mut desc,
            lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lt::cudaDataType_t::CUDA_R_32F,
        ),
        "cublasLtMatmulDescCreate",
    );
    // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 (an int32 attribute).
    let op = |t: bool| -> i32 { t as i32 };
    for (attr, t) in [
        (
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            key.ta,
        ),
        (
            lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            key.tb,
        ),
    ] {
        let v = op(t);
        lt_check(
            lt::cublasLtMatmulDescSetAttribute(
                desc,
                attr,
                &v as *const _ as *const c_void,
                std::mem::size_of_val(&v),
            ),
            "cublasLtMatmulDescSetAttribute",
        );
    }
    let layout = |ty, rows: usize, cols: usize, ld: usize| {
        let mut l = std::ptr::null_mut();
        lt_check(
            lt::cublasLtMatrixLayoutCreate(&mut l, ty, rows as u64, cols as u64, ld as i64),
            "cublasLtMatrixLayoutCreate",
        );
        l
    };
    // Stored shapes (column-major): A is m×k (k×m when transposed), B is k×n (n×k), C is m×n.
    let (ar, ac) = if key.ta {
        (key.k, key.m)
    } else {
        (key.m, key.k)
    };
    let (br, bc) = if key.tb {
        (key.n, key.k)
    } else {
        (key.k, key.n)
    };
    let a = layout(dt(true), ar, ac, key.lda);
    let b = layout(dt(true), br, bc, key.ldb);
    let c = layout(dt(key.c_bf16), key.m, key.n, key.ldc);
    let mut pref = std::ptr::null_mut();
    lt_check(
        lt::cublasLtMatmulPreferenceCreate(&mut pref),
        "cublasLtMatmulPreferenceCreate",
    );
    let ws = WORKSPACE_BYTES as u64;
    lt_check(
        lt::cublasLtMatmulPreferenceSetAttribute(
            pref,
            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &ws as *const _ as *const c_void,
            8,
        ),
        "cublasLtMatmulPreferenceSetAttribute",
    );
    for (attr, al) in [
        (
            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            key.align[0],
        ),
        (
            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            key.align[1],
        ),
        (
            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            key.align[2],
        ),
        (
            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            key.align[2],
        ),
    ] {
        let v = al as u32;
        lt_check(
            lt::cublasLtMatmulPreferenceSetAttribute(
                pref,
                attr,
                &v as *const _ as *const c_void,
                4,
            ),
            "cublasLtMatmulPreferenceSetAttribute",
        );
    }
    let mut result: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
    let mut count = 0;
    lt_check(
        lt::cublasLtMatmulAlgoGetHeuristic(
            h.lt,
            desc,
            a,
            b,
            c,
            c,
            pref,
            1,
            &mut result,
            &mut count,
        ),
        "cublasLtMatmulAlgoGetHeuristic",
    );
    lt::cublasLtMatmulPreferenceDestroy(pref);
    if count == 0 {
        panic!(
            "cuBLASLt has no algorithm for a bf16 {}×{}×{} product (ld {} {} {}, alignment {:?})",
            key.m, key.n, key.k, key.lda, key.ldb, key.ldc, key.align
        );
    }
    Plan {
        desc,
        a,
        b,
        c,
        algo: result.algo,
    }
}

impl Device for GpuDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn on_stream(
        &self,
        f: &mut dyn FnMut(u64) -> anyhow::Result<()>,
    ) -> Option<anyhow::Result<()>> {
        let h = self.lock();
        Some(f(h.stream as u64))
    }

    fn alloc(&self, bytes: usize) -> u64 {
        let _h = self.lock();
        let mut p = 0;
        // SAFETY: plain allocation.
        let r = unsafe { cu::cuMemAlloc_v2(&mut p, bytes) };
        if r == cu::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            panic!(
                "out of GPU memory allocating {:.1} MiB ({:.2} GiB already allocated by tinyllama); lower the micro-batch or enable recompute",
                bytes as f64 / (1 << 20) as f64,
                self.stats.current() as f64 / (1u64 << 30) as f64
            );
        }
        must(r, "cuMemAlloc");
        self.stats.add(bytes);
        p
    }

    fn free(&self, ptr: u64, bytes: usize) {
        let h = self.lock();
        // SAFETY: the stream is drained first so no queued kernel still uses the memory.
        unsafe {
            must(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize");
            must(cu::cuMemFree_v2(ptr), "cuMemFree");
        }
        self.stats.sub(bytes);
    }

    fn memset_zero(&self, ptr: u64, bytes: usize) {
        let h = self.lock();
        // SAFETY: ptr covers bytes (the backend's allocations).
        unsafe {
            must(
                cu::cuMemsetD8Async(ptr, 0, bytes, h.stream),
                "cuMemsetD8Async",
            )
        };
    }

    fn htod(&self, dst: u64, src: &[u8]) {
        let h = self.lock();
        // SAFETY: the copy is waited for before `src` can go away.
        unsafe {
            must(
                cu::cuMemcpyHtoDAsync_v2(dst, src.as_ptr() as *const c_void, src.len(), h.stream),
                "cuMemcpyHtoDAsync",
            );
            must(
                cu::cuStreamSynchronize(h.stream),
                "cuStreamSynchronize (upload)",
            );
        }
    }

    fn dtoh(&self, dst: &mut [u8], src: u64) {
        let h = self.lock();
        // SAFETY: as above.
        unsafe {
            must(
                cu::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr() as *mut c_void, src, dst.len(), h.stream),
                "cuMemcpyDtoHAsync",
            );
            must(
                cu::cuStreamSynchronize(h.stream),
                "a kernel or copy before this download",
            );
        }
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) {
        let h = self.lock();
        // SAFETY: device ranges owned by the backend.
        unsafe {
            must(
                cu::cuMemcpyDtoDAsync_v2(dst, src, bytes, h.stream),
                "cuMemcpyDtoDAsync",
            )
        };
    }

    fn launch(&self, kernel: &str, l: Launch, args: &[Arg]) {
        let mut h = self.lock();
        let stream = h.stream;
        let (f, smem_set) = *h
            .functions
            .get(kernel)
            .unwrap_or_else(|| panic!("no kernel named {kernel}"));
        // SAFETY: kernel arguments are laid out as the kernels declare them (see backend.rs).
        unsafe {
            if l.smem as usize > crate::tiling::DEFAULT_SMEM_LIMIT && (l.smem as i32) > smem_set {
                must(
                    cu::cuFuncSetAttribute(
                        f,
                        cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        l.smem as i32,
                    ),
                    &format!("allowing {} bytes of shared memory for {kernel}", l.smem),
                );
                h.functions.get_mut(kernel).unwrap().1 = l.smem as i32;
            }
            let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
            let mut ptrs: Vec<*mut c_void> = slots
                .iter_mut()
                .map(|s| s as *mut u64 as *mut c_void)
                .collect();
            must(
                cu::cuLaunchKernel(
                    f,
                    l.grid[0],
                    l.grid[1],
                    l.grid[2],
                    l.block[0],
                    l.block[1],
                    l.block[2],
                    l.smem,
                    stream,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
                &format!("launching {kernel}"),
            );
        }
    }

    fn gemm(&self, g: &Gemm) {
        let mut h = self.lock();
        let key = PlanKey {
            ta: g.trans_a,
            tb: g.trans_b,
            m: g.m,
            n: g.n,
            k: g.k,
            lda: g.lda,
            ldb: g.ldb,
            ldc: g.ldc,
            c_bf16: g.c_type == DType::Bf16,
            align: [align_of(g.a), align_of(g.b), align_of(g.c)],
        };
        if !h.plans.contains_key(&key) {
            // SAFETY: descriptors are created for this handle and kept for its life.
            let plan = unsafe { make_plan(&h, &key) };
            h.plans.insert(key, plan);
        }
        let p = &h.plans[&key];
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: operands are device buffers of the shapes in the plan; D aliases C as
        // cuBLASLt allows for identical layouts.
        unsafe {
            lt_check(
                lt::cublasLtMatmul(
                    h.lt,
                    p.desc,
                    &alpha as *const f32 as *const c_void,
                    g.a as *const c_void,
                    p.a,
                    g.b as *const c_void,
                    p.b,
                    &beta as *const f32 as *const c_void,
                    g.c as *const c_void,
                    p.c,
                    g.c as *mut c_void,
                    p.c,
                    &p.algo,
                    h.workspace as *mut c_void,
                    WORKSPACE_BYTES,
                    h.stream as lt::cudaStream_t,
                ),
                "cublasLtMatmul",
            );
        }
    }

    fn sync(&self) {
        let h = self.lock();
        // SAFETY: plain synchronisation.
        unsafe { must(cu::cuStreamSynchronize(h.stream), "cuStreamSynchronize") };
    }

    fn mem_info(&self) -> Option<(u64, u64)> {
        let _h = self.lock();
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: plain query.
        let r = unsafe { cu::cuMemGetInfo_v2(&mut free, &mut total) };
        (r == cu::CUresult::CUDA_SUCCESS).then_some((free as u64, total as u64))
    }

    fn stats(&self) -> &AllocStats {
        &self.stats
    }
}

/// A backend on GPU `ordinal`.
pub fn gpu_backend(ordinal: usize) -> Result<crate::CudaBackend> {
    let dev = GpuDevice::open(ordinal)?;
    Ok(crate::CudaBackend::with_device(std::sync::Arc::new(dev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert_eq!(parse_device("cuda").unwrap(), Some(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Some(3));
        assert_eq!(parse_device("cuda:emu").unwrap(), None);
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("gpu").is_err());
    }

    #[test]
    fn pointer_alignment_for_the_heuristic() {
        assert_eq!(align_of(0x1000), 16);
        assert_eq!(align_of(0x1008), 8);
        assert_eq!(align_of(0x1002), 2);
        assert_eq!(align_of(0x1001), 1);
    }
}
