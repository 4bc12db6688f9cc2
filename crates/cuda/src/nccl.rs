//! NCCL for device buffers, called through our own handle on the library that discovery found
//! (`libnccl.so.2`, the only soname NVIDIA ships; cudarc's loader tries `libnccl.so` and
//! `libnccl.so.<CUDA major>` and so never finds it). Only the handful of entry points data
//! parallelism needs are bound: unique id, communicator set-up, all-reduce, reduce-scatter,
//! all-gather, broadcast, version, error strings.
//!
//! Start-up: rank 0 makes a [`UniqueId`]; every rank must receive its 128 bytes before
//! [`NcclComm::init_rank`] — broadcast over MPI (`Collective::broadcast_bytes`), or, without MPI,
//! written to the run directory with `tinyllama_dist::rendezvous` ([`UniqueId::to_hex`] /
//! [`UniqueId::from_hex`]).

use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

/// `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UniqueId {
    pub internal: [u8; 128],
}

impl UniqueId {
    pub fn to_hex(&self) -> String {
        self.internal.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() != 256 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "an NCCL unique id is 256 hex digits; got {} characters",
                s.len()
            );
        }
        let mut internal = [0u8; 128];
        for (i, b) in internal.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
        }
        Ok(UniqueId { internal })
    }
}

/// `ncclDataType_t` values (nccl.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum DataType {
    Uint8 = 1,
    Float32 = 7,
    Float64 = 8,
    Bfloat16 = 9,
}

/// `ncclRedOp_t` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum RedOp {
    Sum = 0,
    Max = 2,
}

type Comm = *mut c_void;
type Stream = *mut c_void;

/// The bound entry points.
struct Api {
    _lib: libloading::Library,
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    reduce_scatter: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    all_gather:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, Comm, Stream) -> c_int,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
}

/// The symbols bound, in the order [`Api`] holds them (checked by a test against the struct).
pub const SYMBOLS: [&str; 9] = [
    "ncclGetVersion",
    "ncclGetUniqueId",
    "ncclCommInitRank",
    "ncclCommDestroy",
    "ncclGetErrorString",
    "ncclAllReduce",
    "ncclReduceScatter",
    "ncclAllGather",
    "ncclBroadcast",
];

/// NCCL's version code (`NCCL_VERSION_CODE`: major·10000 + minor·100 + patch since 2.9) as text.
pub fn version_string(code: i32) -> String {
    if code >= 10000 {
        format!("{}.{}.{}", code / 10000, (code % 10000) / 100, code % 100)
    } else {
        format!("{}.{}.{}", code / 1000, (code % 1000) / 100, code % 100)
    }
}

pub struct Nccl {
    api: Api,
    pub version: String,
}

impl Nccl {
    /// Binds the library discovery found (or the one at `path`).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => crate::discover::libraries()
                .nccl
                .as_ref()
                .map(|f| f.path.clone())
                .context(
                    "NCCL was not found (libnccl.so.2): install NVIDIA's NCCL (e.g. `pip install nvidia-nccl-cu12`) or set LD_LIBRARY_PATH; `tinyllama info --devices` lists the places searched",
                )?,
        };
        // SAFETY: loading NVIDIA's library; the signatures below are nccl.h's.
        unsafe {
            let lib = libloading::Library::new(&path)
                .with_context(|| format!("cannot load {}", path.display()))?;
            macro_rules! sym {
                ($name:expr) => {
                    *lib.get($name.as_bytes())
                        .with_context(|| format!("{}: no symbol {}", path.display(), $name))?
                };
            }
            let api = Api {
                get_version: sym!(SYMBOLS[0]),
                get_unique_id: sym!(SYMBOLS[1]),
                comm_init_rank: sym!(SYMBOLS[2]),
                comm_destroy: sym!(SYMBOLS[3]),
                get_error_string: sym!(SYMBOLS[4]),
                all_reduce: sym!(SYMBOLS[5]),
                reduce_scatter: sym!(SYMBOLS[6]),
                all_gather: sym!(SYMBOLS[7]),
                broadcast: sym!(SYMBOLS[8]),
                _lib: lib,
            };
            let mut v = 0;
            (api.get_version)(&mut v);
            Ok(Nccl {
                api,
                version: version_string(v),
            })
        }
    }

    fn check(&self, what: &str, code: c_int) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let msg = unsafe { CStr::from_ptr((self.api.get_error_string)(code)) };
        bail!(
            "{what} failed: {} (NCCL error {code})",
            msg.to_string_lossy()
        )
    }

    pub fn unique_id(&self) -> Result<UniqueId> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes 128 bytes into `id`.
        self.check("ncclGetUniqueId", unsafe {
            (self.api.get_unique_id)(&mut id)
        })?;
        Ok(id)
    }
}

/// One rank's communicator; the CUDA context of its GPU must be current on the calling thread.
pub struct NcclComm<'a> {
    nccl: &'a Nccl,
    comm: Comm,
    pub rank: usize,
    pub world: usize,
}

impl<'a> NcclComm<'a> {
    pub fn init_rank(nccl: &'a Nccl, id: UniqueId, rank: usize, world: usize) -> Result<Self> {
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: every rank calls this with the same id and world; NCCL fills `comm`.
        nccl.check("ncclCommInitRank", unsafe {
            (nccl.api.comm_init_rank)(&mut comm, world as c_int, id, rank as c_int)
        })?;
        Ok(NcclComm {
            nccl,
            comm,
            rank,
            world,
        })
    }

    /// Device pointers and a stream (`CUstream`) of the caller's: queued on that stream.
    ///
    /// # Safety
    /// `send` and `recv` must be device allocations of at least `count` (and `world × count`
    /// for `send`) elements of `dtype`, alive until the stream has run the operation.
    pub unsafe fn reduce_scatter(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        stream: u64,
    ) -> Result<()> {
        self.nccl.check(
            "ncclReduceScatter",
            (self.nccl.api.reduce_scatter)(
                send as _,
                recv as _,
                count,
                dtype as c_int,
                RedOp::Sum as c_int,
                self.comm,
                stream as _,
            ),
        )
    }

    /// # Safety
    /// As [`Self::reduce_scatter`], with `recv` holding `world × count` elements.
    pub unsafe fn all_gather(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        stream: u64,
    ) -> Result<()> {
        self.nccl.check(
            "ncclAllGather",
            (self.nccl.api.all_gather)(
                send as _,
                recv as _,
                count,
                dtype as c_int,
                self.comm,
                stream as _,
            ),
        )
    }

    /// # Safety
    /// As [`Self::reduce_scatter`], both buffers `count` elements (they may be the same).
    pub unsafe fn all_reduce(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        op: RedOp,
        stream: u64,
    ) -> Result<()> {
        self.nccl.check(
            "ncclAllReduce",
            (self.nccl.api.all_reduce)(
                send as _,
                recv as _,
                count,
                dtype as c_int,
                op as c_int,
                self.comm,
                stream as _,
            ),
        )
    }

    /// # Safety
    /// As [`Self::reduce_scatter`], both buffers `count` elements.
    pub unsafe fn broadcast(
        &self,
        send: u64,
        recv: u64,
        count: usize,
        dtype: DataType,
        root: usize,
        stream: u64,
    ) -> Result<()> {
        self.nccl.check(
            "ncclBroadcast",
            (self.nccl.api.broadcast)(
                send as _,
                recv as _,
                count,
                dtype as c_int,
                root as c_int,
                self.comm,
                stream as _,
            ),
        )
    }
}

impl Drop for NcclComm<'_> {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by init_rank and is destroyed once.
        unsafe {
            (self.nccl.api.comm_destroy)(self.comm);
        }
    }
}

/// NCCL as the job's collective: the gradient and parameter exchanges on device buffers
/// ([`tinyllama_dist::DeviceCollective`]), and the small host values of a step (target counts,
/// losses, norms, checkpoint bookkeeping) staged through device memory
/// ([`tinyllama_dist::Collective`]), so a GPU job can also run without MPI.
pub struct NcclCollective {
    comm: NcclComm<'static>,
    dev: std::sync::Arc<dyn crate::device::Device>,
    version: String,
}

// SAFETY: the communicator is used only under the device's lock (`Device::on_stream`), which
// serialises every call, as NCCL requires for one communicator.
unsafe impl Send for NcclCollective {}
unsafe impl Sync for NcclCollective {}

/// Where the unique id comes from.
pub enum IdExchange<'a> {
    /// Broadcast from rank 0 over an existing host collective (MPI).
    Host(&'a dyn tinyllama_dist::Collective),
    /// Through `rendezvous/<key>` in the run directory (no MPI).
    File {
        run_dir: &'a Path,
        key: String,
        timeout: std::time::Duration,
    },
}

impl NcclCollective {
    pub fn open(
        dev: std::sync::Arc<dyn crate::device::Device>,
        rank: usize,
        world: usize,
        ids: IdExchange,
    ) -> Result<Self> {
        let nccl: &'static Nccl = Box::leak(Box::new(Nccl::load(None)?));
        let mut id = UniqueId { internal: [0; 128] };
        if rank == 0 {
            id = nccl.unique_id()?;
        }
        match ids {
            IdExchange::Host(c) => c.broadcast_bytes(&mut id.internal, 0)?,
            IdExchange::File {
                run_dir,
                key,
                timeout,
            } => {
                let hex = id.to_hex();
                let got = tinyllama_dist::rendezvous::share_via_file(
                    run_dir,
                    &format!("nccl-{key}"),
                    (rank == 0).then_some(hex.as_bytes()),
                    timeout,
                )?;
                id = UniqueId::from_hex(&String::from_utf8_lossy(&got))?;
            }
        }
        let mut comm = None;
        dev.on_stream(&mut |_| {
            comm = Some(NcclComm::init_rank(nccl, id, rank, world)?);
            Ok(())
        })
        .context("NCCL needs a GPU (the kernel emulator has no streams)")??;
        Ok(NcclCollective {
            comm: comm.expect("set by the closure"),
            dev,
            version: nccl.version.clone(),
        })
    }

    /// Copies `bytes` to a device scratch buffer, runs `op(ptr, stream)` on the device's
    /// stream, and copies `out_len` bytes back (the copy back waits for the stream).
    fn staged(
        &self,
        bytes: &[u8],
        out_len: usize,
        op: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<Vec<u8>> {
        let size = bytes.len().max(out_len).max(1);
        let ptr = self.dev.alloc(size);
        self.dev.htod(ptr, bytes);
        let r = self
            .dev
            .on_stream(&mut |stream| op(ptr, stream))
            .expect("a real device");
        let mut out = vec![0u8; out_len];
        if r.is_ok() {
            self.dev.dtoh(&mut out, ptr);
        }
        self.dev.free(ptr, size);
        r.map(|_| out)
    }
}

fn bytes_of<T: Copy>(x: &[T]) -> Vec<u8> {
    // SAFETY: plain numbers viewed as bytes.
    unsafe {
        std::slice::from_raw_parts(x.as_ptr() as *const u8, std::mem::size_of_val(x)).to_vec()
    }
}

fn fill_from<T: Copy>(dst: &mut [T], b: &[u8]) {
    // SAFETY: `b` holds exactly `dst`'s bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            dst.as_mut_ptr() as *mut u8,
            std::mem::size_of_val(dst),
        )
    }
}

fn red(op: tinyllama_dist::ReduceOp) -> RedOp {
    match op {
        tinyllama_dist::ReduceOp::Sum => RedOp::Sum,
        tinyllama_dist::ReduceOp::Max => RedOp::Max,
    }
}

impl tinyllama_dist::Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.comm.rank
    }
    fn world(&self) -> usize {
        self.comm.world
    }
    fn name(&self) -> String {
        format!("NCCL {}", self.version)
    }
    fn all_reduce_f32(&self, buf: &mut [f32], op: tinyllama_dist::ReduceOp) -> Result<()> {
        let n = buf.len();
        let out = self.staged(&bytes_of(buf), 4 * n, &mut |p, s| unsafe {
            self.comm.all_reduce(p, p, n, DataType::Float32, red(op), s)
        })?;
        fill_from(buf, &out);
        Ok(())
    }
    fn all_reduce_f64(&self, buf: &mut [f64], op: tinyllama_dist::ReduceOp) -> Result<()> {
        let n = buf.len();
        let out = self.staged(&bytes_of(buf), 8 * n, &mut |p, s| unsafe {
            self.comm.all_reduce(p, p, n, DataType::Float64, red(op), s)
        })?;
        fill_from(buf, &out);
        Ok(())
    }
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = recv.len();
        // Result in place at the front of the scratch buffer: NCCL allows recv = send + rank·n.
        let out = self.staged(&bytes_of(send), 4 * send.len(), &mut |p, s| unsafe {
            self.comm.reduce_scatter(
                p,
                p + (4 * n * self.comm.rank) as u64,
                n,
                DataType::Float32,
                s,
            )
        })?;
        let at = 4 * n * self.comm.rank;
        fill_from(recv, &out[at..at + 4 * n]);
        Ok(())
    }
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let n = send.len();
        let mut full = vec![0u8; 4 * recv.len()];
        full[4 * n * self.comm.rank..4 * n * (self.comm.rank + 1)].copy_from_slice(&bytes_of(send));
        let out = self.staged(&full, full.len(), &mut |p, s| unsafe {
            self.comm.all_gather(
                p + (4 * n * self.comm.rank) as u64,
                p,
                n,
                DataType::Float32,
                s,
            )
        })?;
        fill_from(recv, &out);
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        let n = buf.len();
        let out = self.staged(buf, n, &mut |p, s| unsafe {
            self.comm.broadcast(p, p, n, DataType::Uint8, root, s)
        })?;
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.all_reduce_f32(&mut [0.0], tinyllama_dist::ReduceOp::Sum)
    }
}

impl NcclCollective {
    /// Runs `op(send_ptr, recv_ptr, count, stream)` on two f32 CUDA buffers, `count` being the
    /// shorter buffer's length; `Ok(false)` for buffers that are not f32 CUDA buffers.
    fn on_device(
        &self,
        send: &dyn std::any::Any,
        recv: &mut dyn std::any::Any,
        op: &dyn Fn(u64, u64, usize, u64) -> Result<()>,
    ) -> Result<bool> {
        let (Some(s), Some(r)) = (
            send.downcast_ref::<crate::CudaBuf>(),
            recv.downcast_ref::<crate::CudaBuf>(),
        ) else {
            return Ok(false);
        };
        let (Some(sp), Some(rp)) = (s.f32_ptr(), r.f32_ptr()) else {
            return Ok(false);
        };
        let (n, long) = (s.len().min(r.len()), s.len().max(r.len()));
        assert_eq!(
            long,
            n * self.comm.world,
            "buffers of a reduce-scatter or all-gather"
        );
        self.dev
            .on_stream(&mut |stream| op(sp, rp, n, stream))
            .map(|r| r.map(|_| true))
            .unwrap_or(Ok(false))
    }
}

impl tinyllama_dist::DeviceCollective for NcclCollective {
    fn name(&self) -> String {
        format!("NCCL {}", self.version)
    }
    fn reduce_scatter_f32(
        &self,
        _backend: &dyn std::any::Any,
        send: &dyn std::any::Any,
        recv: &mut dyn std::any::Any,
    ) -> Result<bool> {
        // SAFETY: f32 device buffers of the stated sizes, used in stream order.
        self.on_device(send, recv, &|s, r, n, stream| unsafe {
            self.comm.reduce_scatter(s, r, n, DataType::Float32, stream)
        })
    }
    fn all_gather_f32(
        &self,
        _backend: &dyn std::any::Any,
        send: &dyn std::any::Any,
        recv: &mut dyn std::any::Any,
    ) -> Result<bool> {
        // SAFETY: as above.
        self.on_device(send, recv, &|s, r, n, stream| unsafe {
            self.comm.all_gather(s, r, n, DataType::Float32, stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_survive_the_file_rendezvous_encoding() {
        let mut id = UniqueId { internal: [0; 128] };
        for (i, b) in id.internal.iter_mut().enumerate() {
            *b = (i * 37 % 256) as u8;
        }
        let hex = id.to_hex();
        assert_eq!(hex.len(), 256);
        assert!(UniqueId::from_hex(&format!("{hex}\n")).unwrap() == id);
        assert!(UniqueId::from_hex("abc").is_err());
        assert!(UniqueId::from_hex(&"zz".repeat(128)).is_err());
        assert_eq!(
            std::mem::size_of::<UniqueId>(),
            128,
            "ncclUniqueId is 128 bytes"
        );
    }

    #[test]
    fn versions_and_codes_match_nccl_h() {
        assert_eq!(version_string(22304), "2.23.4");
        assert_eq!(version_string(2708), "2.7.8");
        assert_eq!(
            (DataType::Float32 as i32, DataType::Bfloat16 as i32),
            (7, 9)
        );
        assert_eq!((RedOp::Sum as i32, RedOp::Max as i32), (0, 2));
    }

    #[test]
    fn a_missing_library_is_a_clear_error() {
        let e = Nccl::load(Some(Path::new("/nonexistent/libnccl.so.2")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot load /nonexistent/libnccl.so.2"), "{e}");
    }
}
