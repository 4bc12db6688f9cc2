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
