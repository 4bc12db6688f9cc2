//! [`CudaBackend`]: the engine's [`Backend`] trait on a CUDA device (or on the kernel emulator).
//!
//! Storage, chosen from the [`BufKind`] the model code passes when it allocates:
//! - `Act` (activations and activation gradients): bf16.
//! - `Weight`: an f32 master copy plus a bf16 mirror. Matmuls, the embedding and the LM head read
//!   the mirror; RMSNorm reads the (tiny) f32 norm weights; AdamW updates the master and rewrites
//!   the mirror in the same pass; any other write refreshes the mirror.
//! - `F32` (weight gradients, AdamW moments, rstd, log-sum-exp, losses, tables, the logits
//!   scratch): f32. Gradients must be f32: `_bwd` ops accumulate into them across micro-batches.
//!
//! Every kernel has fixed operand types (bf16 activations, f32 statistics and gradients). When a
//! caller hands a buffer of another kind (the trait allows any buffer anywhere), it is converted
//! into a temporary and, for outputs, converted back: slower, never wrong. Values cross the
//! host boundary as f32 (bf16 is widened exactly on download; uploads round to nearest even).

use crate::device::{Arg, DType, Device, Gemm, Launch};
use crate::tiling;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinyllama_engine::{AttnShape, Backend, BufKind};

/// A device allocation, freed on drop.
pub struct DevMem {
    ptr: u64,
    bytes: usize,
    dev: Arc<dyn Device>,
}

impl DevMem {
    fn new(dev: &Arc<dyn Device>, bytes: usize) -> Self {
        let ptr = if bytes == 0 { 0 } else { dev.alloc(bytes) };
        DevMem {
            ptr,
            bytes,
            dev: dev.clone(),
        }
    }
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl Drop for DevMem {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.dev.free(self.ptr, self.bytes);
        }
    }
}

/// A buffer of numbers on the device.
pub struct CudaBuf {
    mem: DevMem,
    dtype: DType,
    len: usize,
    /// The bf16 copy of an f32 weight.
    mirror: Option<DevMem>,
}

impl CudaBuf {
    /// The device address of an f32 buffer (what NCCL is handed); `None` for bf16 storage.
    pub fn f32_ptr(&self) -> Option<u64> {
        (self.dtype == DType::F32).then_some(self.mem.ptr)
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn has_mirror(&self) -> bool {
        self.mirror.is_some()
    }
    fn at(&self, off: usize) -> u64 {
        self.mem.ptr + (off * self.dtype.size()) as u64
    }
}

/// Token ids on the device, with the host copy the embedding backward pass groups rows by.
pub struct CudaIds {
    mem: DevMem,
    host: Vec<i32>,
}

/// A pointer to operand data: the buffer itself or a converted temporary.
enum View {
    Dev(u64),
    Tmp(DevMem),
}

impl View {
    fn ptr(&self) -> u64 {
        match self {
            View::Dev(p) => *p,
            View::Tmp(m) => m.ptr,
        }
    }
}

/// Where a kernel writes an output; `finish` converts back and refreshes mirrors.
struct Out {
    ptr: u64,
    tmp: Option<(DevMem, DType)>,
}

/// Peak and current device memory.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MemoryReport {
    /// Bytes this process allocated through the backend, at most at any time.
    pub peak_allocated: u64,
    pub allocated: u64,
    /// Device-wide used and total bytes (all processes, context and library workspaces included).
    pub device_used: Option<u64>,
    pub device_total: Option<u64>,
}

pub struct CudaBackend {
    dev: Arc<dyn Device>,
    label: String,
    /// Reusable scratch allocations, by purpose; the lock also serialises ops (they share them).
    scratch: Mutex<HashMap<&'static str, DevMem>>,
}

fn bf16_bits(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * data.len());
    for &x in data {
        out.extend_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes());
    }
    out
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * data.len());
    for &x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn i32_bytes(data: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * data.len());
    for &x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Rows grouped by token id for the deterministic embedding backward pass: distinct ids in
/// increasing order, `starts` (one past the end appended) into `order`, rows ascending per id.
pub fn group_rows(ids: &[i32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut order: Vec<i32> = (0..ids.len() as i32).collect();
    order.sort_by_key(|&r| ids[r as usize]); // stable: rows stay ascending within an id
    let (mut uniq, mut starts) = (Vec::new(), Vec::new());
    for (k, &r) in order.iter().enumerate() {
        let id = ids[r as usize];
        if uniq.last() != Some(&id) {
            uniq.push(id);
            starts.push(k as i32);
        }
    }
    starts.push(order.len() as i32);
    (uniq, starts, order)
}

impl CudaBackend {
    pub fn with_device(dev: Arc<dyn Device>) -> Self {
        let label = format!("{} · bf16 mixed precision", dev.name());
        CudaBackend {
            dev,
            label,
            scratch: Mutex::new(HashMap::new()),
        }
    }

    pub fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }

    pub fn memory(&self) -> MemoryReport {
        let s = self.dev.stats();
        let info = self.dev.mem_info();
        MemoryReport {
            peak_allocated: s.peak(),
            allocated: s.current(),
            device_used: info.map(|(free, total)| total - free),
            device_total: info.map(|(_, total)| total),
        }
    }

    /// Restarts the peak-allocation count from what is allocated now.
    pub fn reset_peak_memory(&self) {
        self.dev.stats().reset_peak();
    }

    fn alloc(&self, bytes: usize) -> DevMem {
        DevMem::new(&self.dev, bytes)
    }

    fn launch(&self, kernel: &str, l: Launch, args: &[Arg]) {
        self.dev.launch(kernel, l, args);
    }

    /// A zeroed scratch allocation of at least `bytes` for `slot`, reused across calls.
    fn scratch(
        &self,
        map: &mut HashMap<&'static str, DevMem>,
        slot: &'static str,
        bytes: usize,
    ) -> u64 {
        let fits = map.get(slot).is_some_and(|m| m.bytes >= bytes);
        if !fits {
            map.remove(slot);
            map.insert(slot, self.alloc(bytes.max(256)));
        }
        map[slot].ptr
    }

    fn cast(&self, dst: u64, dst_t: DType, src: u64, src_t: DType, n: usize) {
        if n == 0 {
            return;
        }
        match (src_t, dst_t) {
            (DType::F32, DType::Bf16) => self.launch(
                "cast_f32_bf16",
                tiling::elementwise(n),
                &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I64(n as i64)],
            ),
            (DType::Bf16, DType::F32) => self.launch(
                "cast_bf16_f32",
                tiling::elementwise(n),
                &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I64(n as i64)],
            ),
            _ => self.dev.dtod(dst, src, n * src_t.size()),
        }
    }

    /// Rewrites the bf16 mirror of `buf[off..off + n]` from its master.
    fn refresh_mirror(&self, buf: &CudaBuf, off: usize, n: usize) {
        if let Some(m) = &buf.mirror {
            self.cast(
                m.ptr + 2 * off as u64,
                DType::Bf16,
                buf.at(off),
                buf.dtype,
                n,
            );
        }
    }

    /// `buf` as bf16 (the mirror of a weight).
    fn bf16_in(&self, buf: &CudaBuf) -> View {
        if let Some(m) = &buf.mirror {
            return View::Dev(m.ptr);
        }
        match buf.dtype {
            DType::Bf16 => View::Dev(buf.mem.ptr),
            DType::F32 => {
                let t = self.alloc(2 * buf.len);
                self.cast(t.ptr, DType::Bf16, buf.mem.ptr, DType::F32, buf.len);
                View::Tmp(t)
            }
        }
    }

    /// `buf` as f32 (the master of a weight).
    fn f32_in(&self, buf: &CudaBuf) -> View {
        match buf.dtype {
            DType::F32 => View::Dev(buf.mem.ptr),
            DType::Bf16 => {
                let t = self.alloc(4 * buf.len);
                self.cast(t.ptr, DType::F32, buf.mem.ptr, DType::Bf16, buf.len);
                View::Tmp(t)
            }
        }
    }

    /// An output of type `want` over `buf`; with `init` the current contents are read first
    /// (accumulating and in-place kernels).
    fn out(&self, buf: &CudaBuf, want: DType, init: bool) -> Out {
        if buf.dtype == want {
            return Out {
                ptr: buf.mem.ptr,
                tmp: None,
            };
        }
        let t = self.alloc(want.size() * buf.len);
        if init {
            self.cast(t.ptr, want, buf.mem.ptr, buf.dtype, buf.len);
        }
        Out {
            ptr: t.ptr,
            tmp: Some((t, want)),
        }
    }

    fn finish(&self, buf: &CudaBuf, o: Out) {
        if let Some((t, ty)) = o.tmp {
            self.cast(buf.mem.ptr, buf.dtype, t.ptr, ty, buf.len);
        }
        self.refresh_mirror(buf, 0, buf.len);
    }

    /// Row-major `c[m,n] (+)= op(a)·op(b)` on raw bf16 operand pointers (see [`Backend::matmul`]),
    /// as the column-major product `cᵀ = op(b)ᵀ·op(a)ᵀ` cuBLAS computes.
    #[allow(clippy::too_many_arguments)]
    fn gemm_rm(
        &self,
        c: u64,
        c_type: DType,
        a: u64,
        trans_a: bool,
        b: u64,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        self.dev.gemm(&rowmajor_gemm(
            c, c_type, a, trans_a, b, trans_b, m, n, k, accumulate,
        ));
    }

    /// An uninitialised buffer in the storage `kind` calls for.
    fn alloc_buf(&self, n: usize, kind: BufKind) -> CudaBuf {
        let dtype = match kind {
            BufKind::Act => DType::Bf16,
            BufKind::F32 | BufKind::Weight => DType::F32,
        };
        CudaBuf {
            mem: self.alloc(n * dtype.size()),
            dtype,
            len: n,
            mirror: (kind == BufKind::Weight).then(|| self.alloc(2 * n)),
        }
    }

    fn ids_ptr(&self, ids: &CudaIds) -> u64 {
        ids.mem.ptr
    }
}

/// The cuBLAS call computing the row-major product of [`Backend::matmul`]: a row-major `[r, c]`
/// matrix is a column-major `c × r` one with the same leading dimension, so
/// `C = op(A)·op(B)` becomes `Cᵀ = op(B)ᵀ·op(A)ᵀ` with the operands swapped.
#[allow(clippy::too_many_arguments)]
pub fn rowmajor_gemm(
    c: u64,
    c_type: DType,
    a: u64,
    trans_a: bool,
    b: u64,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Gemm {
    Gemm {
        trans_a: trans_b,
        trans_b: trans_a,
        m: n,
        n: m,
        k,
        a: b,
        lda: if trans_b { k } else { n },
        b: a,
        ldb: if trans_a { m } else { k },
        c,
        ldc: n,
        c_type,
        alpha: 1.0,
        beta: if accumulate { 1.0 } else { 0.0 },
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Ids = CudaIds;

    fn name(&self) -> String {
        self.label.clone()
    }

    fn synchronize(&self) {
        self.dev.sync();
    }

    fn zeros(&self, n: usize) -> CudaBuf {
        self.zeros_as(n, BufKind::F32)
    }

    fn zeros_as(&self, n: usize, kind: BufKind) -> CudaBuf {
        let b = self.alloc_buf(n, kind);
        self.dev.memset_zero(b.mem.ptr, n * b.dtype.size());
        if let Some(m) = &b.mirror {
            self.dev.memset_zero(m.ptr, 2 * n);
        }
        b
    }

    fn upload(&self, data: &[f32]) -> CudaBuf {
        self.upload_as(data, BufKind::F32)
    }

    fn upload_as(&self, data: &[f32], kind: BufKind) -> CudaBuf {
        let mut b = self.alloc_buf(data.len(), kind);
        self.write(&mut b, 0, data);
        b
    }

    fn download(&self, buf: &CudaBuf) -> Vec<f32> {
        let mut bytes = vec![0u8; buf.len * buf.dtype.size()];
        if !bytes.is_empty() {
            self.dev.dtoh(&mut bytes, buf.mem.ptr);
        }
        match buf.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
        }
    }

    fn write(&self, buf: &mut CudaBuf, offset: usize, data: &[f32]) {
        assert!(
            offset + data.len() <= buf.len,
            "write past the end of a buffer"
        );
        if data.is_empty() {
            return;
        }
        let bytes = match buf.dtype {
            DType::F32 => f32_bytes(data),
            DType::Bf16 => bf16_bits(data),
        };
        self.dev.htod(buf.at(offset), &bytes);
        self.refresh_mirror(buf, offset, data.len());
    }

    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn upload_ids(&self, ids: &[i32]) -> CudaIds {
        let mem = self.alloc(4 * ids.len());
        if !ids.is_empty() {
            self.dev.htod(mem.ptr, &i32_bytes(ids));
        }
        CudaIds {
            mem,
            host: ids.to_vec(),
        }
    }

    fn write_ids(&self, dst: &mut CudaIds, ids: &[i32]) {
        if dst.host.len() != ids.len() {
            *dst = self.upload_ids(ids);
            return;
        }
        if !ids.is_empty() {
            self.dev.htod(dst.mem.ptr, &i32_bytes(ids));
        }
        dst.host.copy_from_slice(ids);
    }

    fn fill(&self, buf: &mut CudaBuf, value: f32) {
        let _g = self.scratch.lock().unwrap();
        if buf.len == 0 {
            return;
        }
        if value == 0.0 {
            self.dev
                .memset_zero(buf.mem.ptr, buf.len * buf.dtype.size());
            if let Some(m) = &buf.mirror {
                self.dev.memset_zero(m.ptr, 2 * buf.len);
            }
            return;
        }
        let k = match buf.dtype {
            DType::F32 => "fill_f32",
            DType::Bf16 => "fill_bf16",
        };
        let args = [
            Arg::Ptr(buf.mem.ptr),
            Arg::F32(value),
            Arg::I64(buf.len as i64),
        ];
        self.launch(k, tiling::elementwise(buf.len), &args);
        self.refresh_mirror(buf, 0, buf.len);
    }

    fn copy(&self, dst: &mut CudaBuf, dst_off: usize, src: &CudaBuf, src_off: usize, n: usize) {
        let _g = self.scratch.lock().unwrap();
        assert!(
            dst_off + n <= dst.len && src_off + n <= src.len,
            "copy out of bounds"
        );
        if n == 0 {
            return;
        }
        self.cast(dst.at(dst_off), dst.dtype, src.at(src_off), src.dtype, n);
        self.refresh_mirror(dst, dst_off, n);
    }

    fn add_assign(&self, dst: &mut CudaBuf, src: &CudaBuf) {
        let _g = self.scratch.lock().unwrap();
        assert_eq!(dst.len, src.len, "add_assign: lengths differ");
        let n = dst.len;
        let s = match dst.dtype {
            DType::F32 => self.f32_in(src),
            DType::Bf16 => self.bf16_in(src),
        };
        let k = match dst.dtype {
            DType::F32 => "add_f32",
            DType::Bf16 => "add_bf16",
        };
        self.launch(
            k,
            tiling::elementwise(n),
            &[Arg::Ptr(dst.mem.ptr), Arg::Ptr(s.ptr()), Arg::I64(n as i64)],
        );
        self.refresh_mirror(dst, 0, n);
    }

    fn scale(&self, buf: &mut CudaBuf, s: f32) {
        let _g = self.scratch.lock().unwrap();
        let k = match buf.dtype {
            DType::F32 => "scale_f32",
            DType::Bf16 => "scale_bf16",
        };
        self.launch(
            k,
            tiling::elementwise(buf.len),
            &[Arg::Ptr(buf.mem.ptr), Arg::F32(s), Arg::I64(buf.len as i64)],
        );
        self.refresh_mirror(buf, 0, buf.len);
    }

    fn sum_squares(&self, buf: &CudaBuf) -> f64 {
        let mut sc = self.scratch.lock().unwrap();
        if buf.len == 0 {
            return 0.0;
        }
        let l = tiling::sumsq(buf.len);
        let parts = self.scratch(&mut sc, "sumsq_parts", 8 * l.grid[0] as usize + 8);
        let out = parts + 8 * l.grid[0] as u64;
        let k = match buf.dtype {
            DType::F32 => "sumsq_f32",
            DType::Bf16 => "sumsq_bf16",
        };
        self.launch(
            k,
            l,
            &[
                Arg::Ptr(buf.mem.ptr),
                Arg::I64(buf.len as i64),
                Arg::Ptr(parts),
            ],
        );
        self.launch(
            "reduce_f64",
            Launch::linear(1, 256),
            &[Arg::Ptr(parts), Arg::I32(l.grid[0] as i32), Arg::Ptr(out)],
        );
        let mut b = [0u8; 8];
        self.dev.dtoh(&mut b, out);
        f64::from_le_bytes(b)
    }

    fn all_finite(&self, buf: &CudaBuf) -> bool {
        let mut sc = self.scratch.lock().unwrap();
        if buf.len == 0 {
            return true;
        }
        let flag = self.scratch(&mut sc, "finite_flag", 4);
        self.dev.memset_zero(flag, 4);
        let k = match buf.dtype {
            DType::F32 => "nonfinite_f32",
            DType::Bf16 => "nonfinite_bf16",
        };
        self.launch(
            k,
            tiling::elementwise(buf.len),
            &[
                Arg::Ptr(buf.mem.ptr),
                Arg::I64(buf.len as i64),
                Arg::Ptr(flag),
            ],
        );
        let mut b = [0u8; 4];
        self.dev.dtoh(&mut b, flag);
        i32::from_le_bytes(b) == 0
    }

    fn matmul(
        &self,
        c: &mut CudaBuf,
        a: &CudaBuf,
        trans_a: bool,
        b: &CudaBuf,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) {
        let _g = self.scratch.lock().unwrap();
        assert!(
            a.len >= m * k && b.len >= k * n && c.len >= m * n,
            "matmul: operands too short for {m}×{k} · {k}×{n}"
        );
        let (av, bv) = (self.bf16_in(a), self.bf16_in(b));
        // Gradients accumulate in f32, activations are written in bf16: cuBLASLt takes both.
        let out = Out {
            ptr: c.mem.ptr,
            tmp: None,
        };
        self.gemm_rm(
            out.ptr,
            c.dtype,
            av.ptr(),
            trans_a,
            bv.ptr(),
            trans_b,
            m,
            n,
            k,
            accumulate,
        );
        self.finish(c, out);
    }

    fn embedding_fwd(&self, out: &mut CudaBuf, table: &CudaBuf, ids: &CudaIds, dim: usize) {
        let _g = self.scratch.lock().unwrap();
        let rows = ids.host.len();
        assert!(out.len >= rows * dim, "embedding: output too short");
        let t = self.bf16_in(table);
        let o = self.out(out, DType::Bf16, rows * dim < out.len);
        if rows > 0 {
            self.launch(
                "embedding_fwd",
                Launch::linear(rows as u32, tiling::row_threads(dim, 256)),
                &[
                    Arg::Ptr(o.ptr),
                    Arg::Ptr(t.ptr()),
                    Arg::Ptr(self.ids_ptr(ids)),
                    Arg::I32(dim as i32),
                ],
            );
        }
        self.finish(out, o);
    }

    fn embedding_bwd(&self, dtable: &mut CudaBuf, dout: &CudaBuf, ids: &CudaIds, dim: usize) {
        let mut sc = self.scratch.lock().unwrap();
        if ids.host.is_empty() {
            return;
        }
        let (uniq, starts, order) = group_rows(&ids.host);
        let pu = self.scratch(&mut sc, "emb_uniq", 4 * uniq.len());
        let ps = self.scratch(&mut sc, "emb_starts", 4 * starts.len());
        let po = self.scratch(&mut sc, "emb_order", 4 * order.len());
        self.dev.htod(pu, &i32_bytes(&uniq));
        self.dev.htod(ps, &i32_bytes(&starts));
        self.dev.htod(po, &i32_bytes(&order));
        let d = self.bf16_in(dout);
        let o = self.out(dtable, DType::F32, true);
        self.launch(
            "embedding_bwd",
            Launch::linear(uniq.len() as u32, tiling::row_threads(dim, 256)),
            &[
                Arg::Ptr(o.ptr),
                Arg::Ptr(d.ptr()),
                Arg::Ptr(pu),
                Arg::Ptr(ps),
                Arg::Ptr(po),
                Arg::I32(dim as i32),
            ],
        );
        self.finish(dtable, o);
    }

    fn rmsnorm_fwd(
        &self,
        out: &mut CudaBuf,
        rstd: &mut CudaBuf,
        x: &CudaBuf,
        w: &CudaBuf,
        dim: usize,
        eps: f32,
    ) {
        let _g = self.scratch.lock().unwrap();
        let rows = x.len / dim;
        assert!(out.len >= rows * dim && rstd.len >= rows && w.len == dim);
        let (xv, wv) = (self.bf16_in(x), self.f32_in(w));
        let o = self.out(out, DType::Bf16, rows * dim < out.len);
        let r = self.out(rstd, DType::F32, rows < rstd.len);
        if rows > 0 {
            self.launch(
                "rmsnorm_fwd",
                Launch::linear(rows as u32, tiling::row_threads(dim, 256)),
                &[
                    Arg::Ptr(o.ptr),
                    Arg::Ptr(r.ptr),
                    Arg::Ptr(xv.ptr()),
                    Arg::Ptr(wv.ptr()),
                    Arg::I32(dim as i32),
                    Arg::F32(eps),
                ],
            );
        }
        self.finish(out, o);
        self.finish(rstd, r);
    }

    fn rmsnorm_bwd(
        &self,
        dx: &mut CudaBuf,
        dw: &mut CudaBuf,
        dout: &CudaBuf,
        x: &CudaBuf,
        w: &CudaBuf,
        rstd: &CudaBuf,
        dim: usize,
    ) {
        let mut sc = self.scratch.lock().unwrap();
        let rows = x.len / dim;
        if rows == 0 {
            return;
        }
        let (blocks, per) = tiling::rmsnorm_bwd_split(rows);
        let partial = self.scratch(&mut sc, "rmsnorm_partial", 4 * blocks * dim);
        let (dv, xv, wv, rv) = (
            self.bf16_in(dout),
            self.bf16_in(x),
            self.f32_in(w),
            self.f32_in(rstd),
        );
        let dxo = self.out(dx, DType::Bf16, true);
        let dwo = self.out(dw, DType::F32, true);
        let mut l = Launch::linear(blocks as u32, tiling::row_threads(dim, 256));
        l.smem = (4 * dim) as u32;
        self.launch(
            "rmsnorm_bwd",
            l,
            &[
                Arg::Ptr(dxo.ptr),
                Arg::Ptr(partial),
                Arg::Ptr(dv.ptr()),
                Arg::Ptr(xv.ptr()),
                Arg::Ptr(wv.ptr()),
                Arg::Ptr(rv.ptr()),
                Arg::I32(dim as i32),
                Arg::I32(rows as i32),
                Arg::I32(per as i32),
            ],
        );
        self.launch(
            "colsum_add",
            Launch::linear(tiling::ceil_div(dim, 256) as u32, 256),
            &[
                Arg::Ptr(dwo.ptr),
                Arg::Ptr(partial),
                Arg::I32(blocks as i32),
                Arg::I32(dim as i32),
            ],
        );
        self.finish(dx, dxo);
        self.finish(dw, dwo);
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        table: &CudaBuf,
        n_heads: usize,
        head_dim: usize,
        seq_len: usize,
        pos0: usize,
        inverse: bool,
    ) {
        let _g = self.scratch.lock().unwrap();
        let rows = x.len / (n_heads * head_dim);
        let max_pos = table.len / head_dim;
        let last = pos0 + rows.min(seq_len).saturating_sub(1);
        assert!(
            rows == 0 || last < max_pos,
            "rope: position {last} beyond the table ({max_pos})"
        );
        let t = self.f32_in(table);
        let o = self.out(x, DType::Bf16, true);
        let pairs = rows * n_heads * head_dim / 2;
        if pairs > 0 {
            self.launch(
                "rope",
                tiling::elementwise(pairs),
                &[
                    Arg::Ptr(o.ptr),
                    Arg::Ptr(t.ptr()),
                    Arg::I64(rows as i64),
                    Arg::I32(n_heads as i32),
                    Arg::I32(head_dim as i32),
                    Arg::I32(seq_len as i32),
                    Arg::I32(pos0 as i32),
                    Arg::I32(max_pos as i32),
                    Arg::I32(inverse as i32),
                ],
            );
        }
        self.finish(x, o);
    }

    fn attention_fwd(
        &self,
        out: &mut CudaBuf,
        lse: &mut CudaBuf,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        s: AttnShape,
    ) {
        let _g = self.scratch.lock().unwrap();
        if let Err(e) = tiling::check_attn(&s) {
            panic!("attention: {e}");
        }
        check_attn_lens(&s, q.len, k.len, v.len, out.len, lse.len);
        let (qv, kv, vv) = (self.bf16_in(q), self.bf16_in(k), self.bf16_in(v));
        let qn = s.batch * s.tq * s.n_heads * s.head_dim;
        let o = self.out(out, DType::Bf16, qn < out.len);
        let l = self.out(lse, DType::F32, s.batch * s.n_heads * s.tq < lse.len);
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        self.launch(
            &format!("attn_fwd_hd{}", s.head_dim),
            tiling::attn_fwd_launch(&s),
            &[
                Arg::Ptr(qv.ptr()),
                Arg::Ptr(kv.ptr()),
                Arg::Ptr(vv.ptr()),
                Arg::Ptr(o.ptr),
                Arg::Ptr(l.ptr),
                Arg::I32(s.tq as i32),
                Arg::I32(s.tk as i32),
                Arg::I32(s.kv_stride as i32),
                Arg::I32(s.n_heads as i32),
                Arg::I32(s.n_kv_heads as i32),
                Arg::F32(scale * std::f32::consts::LOG2_E),
            ],
        );
        self.finish(out, o);
        self.finish(lse, l);
    }

    fn attention_bwd(
        &self,
        dq: &mut CudaBuf,
        dk: &mut CudaBuf,
        dv: &mut CudaBuf,
        dout: &CudaBuf,
        out: &CudaBuf,
        lse: &CudaBuf,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        s: AttnShape,
    ) {
        let mut sc = self.scratch.lock().unwrap();
        if let Err(e) = tiling::check_attn(&s) {
            panic!("attention: {e}");
        }
        check_attn_lens(&s, q.len, k.len, v.len, out.len, lse.len);
        check_attn_lens(&s, dq.len, dk.len, dv.len, dout.len, lse.len);
        let qn = s.batch * s.tq * s.n_heads * s.head_dim;
        let nd = s.batch * s.n_heads * s.tq;
        let d_ptr = self.scratch(&mut sc, "attn_D", 4 * nd);
        let acc = self.scratch(&mut sc, "attn_dq_acc", 4 * qn);
        let (dov, ov, lv) = (self.bf16_in(dout), self.bf16_in(out), self.f32_in(lse));
        let (qv, kv, vv) = (self.bf16_in(q), self.bf16_in(k), self.bf16_in(v));
        let dqo = self.out(dq, DType::Bf16, qn < dq.len);
        let dko = self.out(dk, DType::Bf16, true);
        let dvo = self.out(dv, DType::Bf16, true);
        self.launch(
            "attn_bwd_dot",
            tiling::attn_dot_launch(&s),
            &[
                Arg::Ptr(dov.ptr()),
                Arg::Ptr(ov.ptr()),
                Arg::Ptr(d_ptr),
                Arg::I32(s.batch as i32),
                Arg::I32(s.tq as i32),
                Arg::I32(s.n_heads as i32),
                Arg::I32(s.head_dim as i32),
            ],
        );
        self.dev.memset_zero(acc, 4 * qn);
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        self.launch(
            &format!("attn_bwd_hd{}", s.head_dim),
            tiling::attn_bwd_launch(&s),
            &[
                Arg::Ptr(qv.ptr()),
                Arg::Ptr(kv.ptr()),
                Arg::Ptr(vv.ptr()),
                Arg::Ptr(dov.ptr()),
                Arg::Ptr(lv.ptr()),
                Arg::Ptr(d_ptr),
                Arg::Ptr(acc),
                Arg::Ptr(dko.ptr),
                Arg::Ptr(dvo.ptr),
                Arg::I32(s.tq as i32),
                Arg::I32(s.tk as i32),
                Arg::I32(s.kv_stride as i32),
                Arg::I32(s.n_heads as i32),
                Arg::I32(s.n_kv_heads as i32),
                Arg::F32(scale),
                Arg::F32(scale * std::f32::consts::LOG2_E),
            ],
        );
        self.launch(
            "attn_dq_finish",
            tiling::elementwise(qn),
            &[
                Arg::Ptr(dqo.ptr),
                Arg::Ptr(acc),
                Arg::F32(scale),
                Arg::I64(qn as i64),
            ],
        );
        self.finish(dq, dqo);
        self.finish(dk, dko);
        self.finish(dv, dvo);
    }

    fn swiglu_fwd(&self, h: &mut CudaBuf, g: &CudaBuf, u: &CudaBuf) {
        let _g = self.scratch.lock().unwrap();
        let n = h.len;
        assert!(g.len >= n && u.len >= n);
        let (gv, uv) = (self.bf16_in(g), self.bf16_in(u));
        let o = self.out(h, DType::Bf16, false);
        self.launch(
            "swiglu_fwd",
            tiling::elementwise(n),
            &[
                Arg::Ptr(o.ptr),
                Arg::Ptr(gv.ptr()),
                Arg::Ptr(uv.ptr()),
                Arg::I64(n as i64),
            ],
        );
        self.finish(h, o);
    }

    fn swiglu_bwd(
        &self,
        dg: &mut CudaBuf,
        du: &mut CudaBuf,
        dh: &CudaBuf,
        g: &CudaBuf,
        u: &CudaBuf,
    ) {
        let _g = self.scratch.lock().unwrap();
        let n = dg.len;
        assert!(du.len >= n && dh.len >= n && g.len >= n && u.len >= n);
        let (dhv, gv, uv) = (self.bf16_in(dh), self.bf16_in(g), self.bf16_in(u));
        let dgo = self.out(dg, DType::Bf16, false);
        let duo = self.out(du, DType::Bf16, n < du.len);
        self.launch(
            "swiglu_bwd",
            tiling::elementwise(n),
            &[
                Arg::Ptr(dgo.ptr),
                Arg::Ptr(duo.ptr),
                Arg::Ptr(dhv.ptr()),
                Arg::Ptr(gv.ptr()),
                Arg::Ptr(uv.ptr()),
                Arg::I64(n as i64),
            ],
        );
        self.finish(dg, dgo);
        self.finish(du, duo);
    }

    fn lm_head_loss(
        &self,
        losses: &mut CudaBuf,
        x: &CudaBuf,
        w: &CudaBuf,
        targets: &CudaIds,
        vocab: usize,
        dim: usize,
        scratch: &mut CudaBuf,
        grad: Option<(&mut CudaBuf, Option<&mut CudaBuf>, f32)>,
    ) {
        let mut sc = self.scratch.lock().unwrap();
        let rows = targets.host.len();
        assert!(
            x.len >= rows * dim && w.len == vocab * dim && losses.len >= rows,
            "lm_head_loss: shapes"
        );
        let chunk = (scratch.len / vocab).min(rows).max(1);
        // The logits chunk: the caller's f32 scratch, or an f32 one of our own.
        let logits = if scratch.dtype == DType::F32 && scratch.len >= chunk * vocab {
            scratch.mem.ptr
        } else {
            self.scratch(&mut sc, "head_logits", 4 * chunk * vocab)
        };
        let dlogits = if grad.is_some() {
            self.scratch(&mut sc, "head_dlogits", 2 * chunk * vocab)
        } else {
            0
        };
        let (xv, wv) = (self.bf16_in(x), self.bf16_in(w));
        let lo = self.out(losses, DType::F32, rows < losses.len);
        let scale = grad.as_ref().map(|g| g.2).unwrap_or(0.0);
        let (mut dxo, mut dwo) = (None, None);
        if let Some((dx, dw, _)) = &grad {
            dxo = Some(self.out(dx, DType::Bf16, rows * dim < dx.len));
            // A frozen head (LoRA) passes no dw: its GEMM is skipped.
            dwo = dw.as_ref().map(|dw| self.out(dw, DType::F32, true));
        }
        let tgt = self.ids_ptr(targets);
        for r0 in (0..rows).step_by(chunk) {
            let cr = chunk.min(rows - r0);
            let xr = xv.ptr() + 2 * (r0 * dim) as u64;
            self.gemm_rm(
                logits,
                DType::F32,
                xr,
                false,
                wv.ptr(),
                true,
                cr,
                vocab,
                dim,
                false,
            );
            self.launch(
                "xent_rows",
                Launch::linear(cr as u32, tiling::XENT_THREADS),
                &[
                    Arg::Ptr(logits),
                    Arg::I32(vocab as i32),
                    Arg::Ptr(tgt + 4 * r0 as u64),
                    Arg::Ptr(lo.ptr + 4 * r0 as u64),
                    Arg::Ptr(dlogits),
                    Arg::F32(scale),
                ],
            );
            if let Some(dxo) = &dxo {
                // dx = dlogits·W ; dW += dlogitsᵀ·x
                self.gemm_rm(
                    dxo.ptr + 2 * (r0 * dim) as u64,
                    DType::Bf16,
                    dlogits,
                    false,
                    wv.ptr(),
                    false,
                    cr,
                    dim,
                    vocab,
                    false,
                );
                if let Some(dwo) = &dwo {
                    self.gemm_rm(
                        dwo.ptr,
                        DType::F32,
                        dlogits,
                        true,
                        xr,
                        false,
                        vocab,
                        dim,
                        cr,
                        true,
                    );
                }
            }
        }
        self.finish(losses, lo);
        if let Some((dx, dw, _)) = grad {
            self.finish(dx, dxo.unwrap());
            if let (Some(dw), Some(dwo)) = (dw, dwo) {
                self.finish(dw, dwo);
            }
        }
    }

    fn head_chunk_rows(&self, vocab: usize) -> usize {
        tiling::head_chunk_rows(vocab)
    }

    fn adamw(
        &self,
        p: &mut CudaBuf,
        g: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        step: u64,
        grad_scale: f32,
    ) {
        let _g = self.scratch.lock().unwrap();
        assert!(step >= 1 && p.len == g.len && p.len == m.len && p.len == v.len);
        let n = p.len;
        // Constants exactly as the CPU backend derives them (f64, then rounded).
        let (lr, b1, b2) = (lr as f64, beta1 as f64, beta2 as f64);
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
        let gv = self.f32_in(g);
        let po = self.out(p, DType::F32, true);
        let mo = self.out(m, DType::F32, true);
        let vo = self.out(v, DType::F32, true);
        let mirror = match (&p.mirror, &po.tmp) {
            (Some(mm), None) => mm.ptr,
            _ => 0,
        };
        self.launch(
            "adamw",
            tiling::elementwise(n),
            &[
                Arg::Ptr(po.ptr),
                Arg::Ptr(mirror),
                Arg::Ptr(gv.ptr()),
                Arg::Ptr(mo.ptr),
                Arg::Ptr(vo.ptr),
                Arg::I64(n as i64),
                Arg::F32(b1 as f32),
                Arg::F32(b2 as f32),
                Arg::F32((1.0 - b1) as f32),
                Arg::F32((1.0 - b2) as f32),
                Arg::F32(eps),
                Arg::F32((1.0 - lr * weight_decay as f64) as f32),
                Arg::F32((lr / bc1) as f32),
                Arg::F32((1.0 / bc2_sqrt) as f32),
                Arg::F32(grad_scale),
            ],
        );
        // The fused kernel already rewrote the mirror; only converted outputs need `finish`.
        if po.tmp.is_some() {
            self.finish(p, po);
        }
        self.finish(m, mo);
        self.finish(v, vo);
    }
}

fn check_attn_lens(s: &AttnShape, q: usize, k: usize, v: usize, out: usize, lse: usize) {
    let qn = s.batch * s.tq * s.n_heads * s.head_dim;
    let kn = ((s.batch - 1) * s.kv_stride + s.tk) * s.n_kv_heads * s.head_dim;
    assert!(q >= qn && out >= qn, "attention: q/out too short");
    assert!(k >= kn && v >= kn, "attention: k/v too short");
    assert!(
        lse >= s.batch * s.n_heads * s.tq,
        "attention: lse too short"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_id_in_ascending_row_order() {
        let (u, s, o) = group_rows(&[5, 2, 5, 0, 2, 5]);
        assert_eq!(u, vec![0, 2, 5]);
        assert_eq!(s, vec![0, 1, 3, 6]);
        assert_eq!(o, vec![3, 1, 4, 0, 2, 5]);
        let (u, s, o) = group_rows(&[]);
        assert!(u.is_empty() && o.is_empty());
        assert_eq!(s, vec![0]);
    }

    #[test]
    fn rowmajor_products_map_to_swapped_column_major_operands() {
        // c[m,n] = a[m,k]·b[k,n]: cuBLAS sees n×m = (n×k)·(k×m).
        let g = rowmajor_gemm(1, DType::F32, 2, false, 3, false, 4, 5, 6, false);
        assert_eq!((g.m, g.n, g.k), (5, 4, 6));
        assert_eq!((g.a, g.lda, g.trans_a), (3, 5, false));
        assert_eq!((g.b, g.ldb, g.trans_b), (2, 6, false));
        assert_eq!((g.ldc, g.beta), (5, 0.0));
        // Transposed operands: a stored [k,m], b stored [n,k].
        let g = rowmajor_gemm(1, DType::Bf16, 2, true, 3, true, 4, 5, 6, true);
        assert_eq!((g.a, g.lda, g.trans_a), (3, 6, true));
        assert_eq!((g.b, g.ldb, g.trans_b), (2, 4, true));
        assert_eq!(g.beta, 1.0);
    }
}
