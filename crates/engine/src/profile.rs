//! A backend wrapper that times every operation, for `bench train --profile`: it answers "where
//! does a training step's time go" per op kind without an external profiler.

use crate::backend::{AttnShape, Backend};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct Profiled<B: Backend> {
    pub inner: B,
    times: Mutex<BTreeMap<&'static str, (f64, u64)>>,
}

impl<B: Backend> Profiled<B> {
    pub fn new(inner: B) -> Self {
        Profiled {
            inner,
            times: Mutex::new(BTreeMap::new()),
        }
    }
    fn t<R>(&self, name: &'static str, f: impl FnOnce() -> R) -> R {
        // A device backend queues work and returns at once: wait for the queue before and
        // after, so each op is charged its own run time (a no-op on the CPU).
        self.inner.synchronize();
        let t = Instant::now();
        let r = f();
        self.inner.synchronize();
        let mut m = self.times.lock().unwrap();
        let e = m.entry(name).or_insert((0.0, 0));
        e.0 += t.elapsed().as_secs_f64();
        e.1 += 1;
        r
    }
    /// (op, seconds, calls), most expensive first.
    pub fn report(&self) -> Vec<(&'static str, f64, u64)> {
        let mut v: Vec<_> = self
            .times
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (s, n))| (*k, *s, *n))
            .collect();
        v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        v
    }
    pub fn reset(&self) {
        self.times.lock().unwrap().clear();
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Buf = B::Buf;
    type Ids = B::Ids;
    fn name(&self) -> String {
        format!("{} (profiled)", self.inner.name())
    }
    fn synchronize(&self) {
        self.inner.synchronize()
    }
    fn host_f32<'a>(&self, buf: &'a B::Buf) -> Option<&'a [f32]> {
        self.inner.host_f32(buf)
    }
    fn host_f32_mut<'a>(&self, buf: &'a mut B::Buf) -> Option<&'a mut [f32]> {
        self.inner.host_f32_mut(buf)
    }
    fn zeros(&self, n: usize) -> B::Buf {
        self.inner.zeros(n)
    }
    fn upload(&self, d: &[f32]) -> B::Buf {
        self.inner.upload(d)
    }
    // Forwarded so a profiled device backend keeps its buffer kinds (e.g. bf16 activations).
    fn zeros_as(&self, n: usize, kind: crate::backend::BufKind) -> B::Buf {
        self.inner.zeros_as(n, kind)
    }
    fn upload_as(&self, d: &[f32], kind: crate::backend::BufKind) -> B::Buf {
        self.inner.upload_as(d, kind)
    }
    fn download(&self, b: &B::Buf) -> Vec<f32> {
        self.t("download", || self.inner.download(b))
    }
    fn write(&self, b: &mut B::Buf, o: usize, d: &[f32]) {
        self.inner.write(b, o, d)
    }
    fn len(&self, b: &B::Buf) -> usize {
        self.inner.len(b)
    }
    fn upload_ids(&self, ids: &[i32]) -> B::Ids {
        self.inner.upload_ids(ids)
    }
    fn write_ids(&self, d: &mut B::Ids, ids: &[i32]) {
        self.inner.write_ids(d, ids)
    }
    fn fill(&self, b: &mut B::Buf, v: f32) {
        self.t("fill", || self.inner.fill(b, v))
    }
    fn copy(&self, d: &mut B::Buf, doff: usize, s: &B::Buf, soff: usize, n: usize) {
        self.t("copy", || self.inner.copy(d, doff, s, soff, n))
    }
    fn add_assign(&self, d: &mut B::Buf, s: &B::Buf) {
        self.t("add_assign", || self.inner.add_assign(d, s))
    }
    fn scale(&self, b: &mut B::Buf, s: f32) {
        self.t("scale", || self.inner.scale(b, s))
    }
    fn sum_squares(&self, b: &B::Buf) -> f64 {
        self.t("sum_squares", || self.inner.sum_squares(b))
    }
    fn all_finite(&self, b: &B::Buf) -> bool {
        self.t("all_finite", || self.inner.all_finite(b))
    }
    fn matmul(
        &self,
        c: &mut B::Buf,
        a: &B::Buf,
        ta: bool,
        b: &B::Buf,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        acc: bool,
    ) {
        let name = match (ta, tb) {
            (false, true) => "matmul x·Wᵀ (forward)",
            (false, false) => "matmul dy·W (input grad)",
            (true, false) => "matmul dyᵀ·x (weight grad)",
            (true, true) => "matmul aᵀ·bᵀ",
        };
        self.t(name, || self.inner.matmul(c, a, ta, b, tb, m, n, k, acc))
    }
    fn embedding_fwd(&self, o: &mut B::Buf, t: &B::Buf, ids: &B::Ids, d: usize) {
        self.t("embedding", || self.inner.embedding_fwd(o, t, ids, d))
    }
    fn embedding_bwd(&self, dt: &mut B::Buf, d_o: &B::Buf, ids: &B::Ids, d: usize) {
        self.t("embedding bwd", || {
            self.inner.embedding_bwd(dt, d_o, ids, d)
        })
    }
    fn rmsnorm_fwd(
        &self,
        o: &mut B::Buf,
        r: &mut B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        d: usize,
        e: f32,
    ) {
        self.t("rmsnorm", || self.inner.rmsnorm_fwd(o, r, x, w, d, e))
    }
    fn rmsnorm_bwd(
        &self,
        dx: &mut B::Buf,
        dw: &mut B::Buf,
        d_o: &B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        r: &B::Buf,
        d: usize,
    ) {
        self.t("rmsnorm bwd", || {
            self.inner.rmsnorm_bwd(dx, dw, d_o, x, w, r, d)
        })
    }
    fn rope(&self, x: &mut B::Buf, t: &B::Buf, h: usize, hd: usize, s: usize, p: usize, inv: bool) {
        self.t("rope", || self.inner.rope(x, t, h, hd, s, p, inv))
    }
    fn attention_fwd(
        &self,
        o: &mut B::Buf,
        l: &mut B::Buf,
        q: &B::Buf,
        k: &B::Buf,
        v: &B::Buf,
        s: AttnShape,
    ) {
        self.t("attention", || self.inner.attention_fwd(o, l, q, k, v, s))
    }
    fn attention_bwd(
        &self,
        dq: &mut B::Buf,
        dk: &mut B::Buf,
        dv: &mut B::Buf,
        d_o: &B::Buf,
        o: &B::Buf,
        l: &B::Buf,
        q: &B::Buf,
        k: &B::Buf,
        v: &B::Buf,
        s: AttnShape,
    ) {
        self.t("attention bwd", || {
            self.inner.attention_bwd(dq, dk, dv, d_o, o, l, q, k, v, s)
        })
    }
    fn swiglu_fwd(&self, h: &mut B::Buf, g: &B::Buf, u: &B::Buf) {
        self.t("swiglu", || self.inner.swiglu_fwd(h, g, u))
    }
    fn swiglu_bwd(&self, dg: &mut B::Buf, du: &mut B::Buf, dh: &B::Buf, g: &B::Buf, u: &B::Buf) {
        self.t("swiglu bwd", || self.inner.swiglu_bwd(dg, du, dh, g, u))
    }
    fn lm_head_loss(
        &self,
        l: &mut B::Buf,
        x: &B::Buf,
        w: &B::Buf,
        t: &B::Ids,
        v: usize,
        d: usize,
        s: &mut B::Buf,
        g: Option<(&mut B::Buf, Option<&mut B::Buf>, f32)>,
    ) {
        let name = if g.is_some() {
            "lm head + loss (fwd+bwd)"
        } else {
            "lm head + loss (fwd)"
        };
        self.t(name, || self.inner.lm_head_loss(l, x, w, t, v, d, s, g))
    }
    fn head_chunk_rows(&self, v: usize) -> usize {
        self.inner.head_chunk_rows(v)
    }
    fn dropout(&self, x: &mut B::Buf, p: f32, seed: u64) {
        self.t("dropout", || self.inner.dropout(x, p, seed))
    }
    fn dropout_from(&self, dst: &mut B::Buf, src: &B::Buf, n: usize, p: f32, seed: u64) {
        self.t("dropout", || self.inner.dropout_from(dst, src, n, p, seed))
    }
    fn adamw(
        &self,
        p: &mut B::Buf,
        g: &B::Buf,
        m: &mut B::Buf,
        v: &mut B::Buf,
        lr: f32,
        b1: f32,
        b2: f32,
        eps: f32,
        wd: f32,
        step: u64,
        gs: f32,
    ) {
        self.t("adamw", || {
            self.inner.adamw(p, g, m, v, lr, b1, b2, eps, wd, step, gs)
        })
    }
}
