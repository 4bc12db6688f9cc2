//! LoRA (Hu et al. 2021) as Hugging Face PEFT implements it: an adapted linear layer computes
//!
//! ```text
//! y = x·Wᵀ + s · (drop(x)·Aᵀ)·Bᵀ,   A [r, in], B [out, r], s = alpha / r
//! ```
//!
//! with the base `W` frozen and only `A` and `B` trained. `A` starts from PEFT's default
//! (Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in)) and `B` at zero, so an attached adapter
//! leaves the model unchanged until it is trained.
//!
//! This module holds the configuration, the adapter tensors ([`Lora`]) and the forward and
//! backward of one adapted linear ([`forward`], [`backward_weights`], [`backward_input`]),
//! checked against finite differences below. [`crate::llama::Llama`] wires them into its
//! layers (see `Llama::attach_lora`).
//!
//! Memory: per adapted module the forward pass keeps only `t = s·drop(x)·Aᵀ` (`[n, r]`). The
//! dropout mask is never stored: it is a pure function of a per-module seed and the element
//! index ([`crate::backend::dropout_keep`]) and is regenerated in the backward pass.

use crate::backend::Backend;
use anyhow::{bail, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tinyllama_model::params::{ParamKind, ParamSpec};
use tinyllama_model::peft::{self, PeftConfig};

/// A projection of a Llama layer that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    /// All seven, in layer order (the order adapter tensors are listed in).
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// Position in [`LoraTarget::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// PEFT's module name: `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`,
    /// `down_proj`.
    pub fn peft_name(self) -> &'static str {
        peft::TARGET_MODULES[self.index()]
    }

    /// The base weight this target adapts.
    pub fn base_kind(self) -> ParamKind {
        match self {
            LoraTarget::Q => ParamKind::Wq,
            LoraTarget::K => ParamKind::Wk,
            LoraTarget::V => ParamKind::Wv,
            LoraTarget::O => ParamKind::Wo,
            LoraTarget::Gate => ParamKind::WGate,
            LoraTarget::Up => ParamKind::WUp,
            LoraTarget::Down => ParamKind::WDown,
        }
    }

    /// Accepts PEFT's names (`q_proj`, …) and the short forms (`q`, `k`, `v`, `o`, `gate`,
    /// `up`, `down`).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        for target in Self::ALL {
            let name = target.peft_name();
            if t == name || t == name.trim_end_matches("_proj") {
                return Ok(target);
            }
        }
        bail!(
            "unknown LoRA target `{s}`; valid targets are {} (or short: q, k, v, o, gate, up, down)",
            peft::TARGET_MODULES.join(", ")
        )
    }
}

impl std::fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.peft_name())
    }
}

impl std::str::FromStr for LoraTarget {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for LoraTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.peft_name())
    }
}

impl<'de> Deserialize<'de> for LoraTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// LoRA hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Dropout probability on each adapter's input (training only).
    pub dropout: f32,
    /// The adapted projections (in every layer).
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: LoraTarget::ALL.to_vec(),
        }
    }
}

impl LoraConfig {
    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    pub fn targets(&self, t: LoraTarget) -> bool {
        self.targets.contains(&t)
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("lora.rank must be at least 1 (typical: 8 or 16)");
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            bail!(
                "lora.alpha must be a positive number, got {} (typical: twice the rank)",
                self.alpha
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!(
                "lora.dropout must be in [0, 1), got {} (typical: 0.05; 0 disables it)",
                self.dropout
            );
        }
        if self.targets.is_empty() {
            bail!(
                "lora.targets is empty; name at least one of {}",
                peft::TARGET_MODULES.join(", ")
            );
        }
        let mut seen = self.targets.clone();
        seen.sort();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            bail!("lora.targets names `{}` twice", w[0]);
        }
        Ok(())
    }

    /// The `adapter_config.json` view of this configuration.
    pub fn to_peft(&self) -> PeftConfig {
        PeftConfig {
            r: self.rank,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_modules: LoraTarget::ALL
                .iter()
                .filter(|t| self.targets(**t))
                .map(|t| t.peft_name().to_string())
                .collect(),
        }
    }

    pub fn from_peft(p: &PeftConfig) -> Result<Self> {
        let mut targets = p
            .target_modules
            .iter()
            .map(|m| LoraTarget::parse(m))
            .collect::<Result<Vec<_>>>()?;
        targets.sort();
        targets.dedup();
        let cfg = LoraConfig {
            rank: p.r,
            alpha: p.lora_alpha,
            dropout: p.lora_dropout,
            targets,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The adapters attached to a model: configuration, one `A` and one `B` per (layer, target)
/// in layer-then-[`LoraTarget::ALL`] order (PEFT's state-dict order), and the switches.
pub struct Lora<B: Backend> {
    pub config: LoraConfig,
    /// PEFT names, shapes and kinds ([`ParamKind::LoraA`] then [`ParamKind::LoraB`]).
    pub specs: Vec<ParamSpec>,
    pub weights: Vec<B::Buf>,
    pub(crate) enabled: bool,
    /// Atomic so a caller holding the model shared (the training loop's micro-batches) can
    /// give each pass its own masks.
    pub(crate) dropout_seed: std::sync::atomic::AtomicU64,
    /// `slots[l][t]`: index of the `A` of target `t` in layer `l` (its `B` follows).
    pub(crate) slots: Vec<[Option<usize>; 7]>,
}

impl<B: Backend> Lora<B> {
    /// Whether the adapters take part in the forward pass.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The seed of the dropout masks of the next passes.
    pub fn dropout_seed(&self) -> u64 {
        self.dropout_seed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Index in [`Lora::specs`] of the `A` of `target` in `layer` (its `B` is the next one).
    pub fn module(&self, layer: usize, target: LoraTarget) -> Option<usize> {
        self.slots.get(layer).and_then(|s| s[target.index()])
    }

    /// The dropout seed of one adapted module: each module draws its own mask.
    pub fn module_seed(&self, layer: usize, target: LoraTarget) -> u64 {
        let mut r = tinyllama_model::rng::Rng::derive(
            self.dropout_seed(),
            (layer * LoraTarget::ALL.len() + target.index()) as u64,
        );
        r.next_u64()
    }

    pub fn num_params(&self) -> usize {
        self.specs.iter().map(|s| s.numel()).sum()
    }
}

/// The geometry and constants of one adapted linear.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraShape {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f32,
    /// Dropout probability on the adapter's input (0: none, e.g. evaluation).
    pub dropout: f32,
    /// The module's dropout seed.
    pub seed: u64,
}

/// `y += s·(drop(x)·Aᵀ)·Bᵀ`, writing `t = s·drop(x)·Aᵀ` (`[rows, r]`, kept for the backward
/// pass). `xd` (`[rows, d_in]`, exactly) is scratch for `drop(x)`, needed only with dropout.
#[allow(clippy::too_many_arguments)]
pub fn forward<B: Backend>(
    be: &B,
    y: &mut B::Buf,
    t: &mut B::Buf,
    x: &B::Buf,
    a: &B::Buf,
    b: &B::Buf,
    xd: Option<&mut B::Buf>,
    sh: LoraShape,
) {
    down(be, t, x, a, xd, sh);
    be.matmul(y, t, false, b, true, sh.rows, sh.d_out, sh.rank, true);
}

/// The first half of [`forward`]: `t = s·drop(x)·Aᵀ` only.
pub fn down<B: Backend>(
    be: &B,
    t: &mut B::Buf,
    x: &B::Buf,
    a: &B::Buf,
    xd: Option<&mut B::Buf>,
    sh: LoraShape,
) {
    let xin = dropped_input(be, x, xd, sh);
    be.matmul(t, xin, false, a, true, sh.rows, sh.rank, sh.d_in, false);
    be.scale(t, sh.scale);
}

/// `drop(x)`: `x` itself without dropout, else `x` copied into `xd` and masked there.
fn dropped_input<'a, B: Backend>(
    be: &B,
    x: &'a B::Buf,
    xd: Option<&'a mut B::Buf>,
    sh: LoraShape,
) -> &'a B::Buf {
    if sh.dropout == 0.0 {
        return x;
    }
    let xd = xd.expect("LoRA dropout needs a [rows, d_in] scratch");
    be.dropout_from(xd, x, sh.rows * sh.d_in, sh.dropout, sh.seed);
    xd
}

/// The weight gradients of one adapted linear given `dy = ∂L/∂y`: `dB += dyᵀ·t`,
/// `g = s·dy·B` (`= ∂L/∂(drop(x)·Aᵀ)`, written to `g`, `[rows, r]`) and `dA += gᵀ·drop(x)`
/// (the mask regenerated into `xd`). Follow with [`backward_input`] for `∂L/∂x`.
#[allow(clippy::too_many_arguments)]
pub fn backward_weights<B: Backend>(
    be: &B,
    da: &mut B::Buf,
    db: &mut B::Buf,
    g: &mut B::Buf,
    xd: Option<&mut B::Buf>,
    dy: &B::Buf,
    x: &B::Buf,
    b: &B::Buf,
    t: &B::Buf,
    sh: LoraShape,
) {
    let LoraShape {
        rows,
        d_in,
        d_out,
        rank,
        ..
    } = sh;
    be.matmul(db, dy, true, t, false, d_out, rank, rows, true);
    be.matmul(g, dy, false, b, false, rows, rank, d_out, false);
    be.scale(g, sh.scale);
    let xin = dropped_input(be, x, xd, sh);
    be.matmul(da, g, true, xin, false, rank, d_in, rows, true);
}

/// `dx += drop'(g·A)`: the adapter's part of the input gradient, `g` from
/// [`backward_weights`]; `xd` is scratch (`[rows, d_in]`) when there is dropout.
pub fn backward_input<B: Backend>(
    be: &B,
    dx: &mut B::Buf,
    g: &B::Buf,
    a: &B::Buf,
    xd: Option<&mut B::Buf>,
    sh: LoraShape,
) {
    let LoraShape {
        rows, d_in, rank, ..
    } = sh;
    if sh.dropout == 0.0 {
        be.matmul(dx, g, false, a, false, rows, d_in, rank, true);
    } else {
        let xd = xd.expect("LoRA dropout needs a [rows, d_in] scratch");
        be.matmul(xd, g, false, a, false, rows, d_in, rank, false);
        be.dropout(xd, sh.dropout, sh.seed);
        be.add_assign(dx, xd);
    }
}

/// PEFT's default initialisation of `A` (`kaiming_uniform_(a=√5)`): U(−1/√in, 1/√in).
pub fn init_a(values: &mut [f32], d_in: usize, rng: &mut tinyllama_model::rng::Rng) {
    let bound = 1.0 / (d_in as f64).sqrt();
    for v in values {
        *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gradcheck::{check, project, rand_vec};
    use crate::CpuBackend;

    fn run(dropout: f32) {
        let be = CpuBackend::<f64>::new();
        let (rows, d_in, d_out, rank) = (7, 6, 5, 3);
        let sh = LoraShape {
            rows,
            d_in,
            d_out,
            rank,
            scale: 1.75,
            dropout,
            seed: 42,
        };
        let mut x = rand_vec(rows * d_in, 1);
        let mut a = rand_vec(rank * d_in, 2);
        let mut b = rand_vec(d_out * rank, 3);
        let y0 = rand_vec(rows * d_out, 4);
        let r = rand_vec(rows * d_out, 5);
        let loss = |x: &[f64], a: &[f64], b: &[f64]| {
            let mut y = y0.clone();
            let mut t = vec![0.0; rows * rank];
            let mut xd = vec![0.0; rows * d_in];
            forward(
                &be,
                &mut y,
                &mut t,
                &x.to_vec(),
                &a.to_vec(),
                &b.to_vec(),
                Some(&mut xd),
                sh,
            );
            project(&y, &r)
        };
        let mut y = y0.clone();
        let mut t = vec![0.0; rows * rank];
        let mut xd = vec![0.0; rows * d_in];
        forward(&be, &mut y, &mut t, &x, &a, &b, Some(&mut xd), sh);
        // Gradients accumulate: start from non-zero values and subtract them.
        let (mut dx, mut da, mut db) =
            (vec![0.5; x.len()], vec![0.25; a.len()], vec![-1.0; b.len()]);
        let mut g = vec![0.0; rows * rank];
        backward_weights(
            &be,
            &mut da,
            &mut db,
            &mut g,
            Some(&mut xd),
            &r,
            &x,
            &b,
            &t,
            sh,
        );
        backward_input(&be, &mut dx, &g, &a, Some(&mut xd), sh);
        dx.iter_mut().for_each(|v| *v -= 0.5);
        da.iter_mut().for_each(|v| *v -= 0.25);
        db.iter_mut().for_each(|v| *v += 1.0);
        let (a0, b0, x0) = (a.clone(), b.clone(), x.clone());
        check("lora dx", &mut x, &dx, 1000, |xx| loss(xx, &a0, &b0));
        check("lora dA", &mut a, &da, 1000, |aa| loss(&x0, aa, &b0));
        check("lora dB", &mut b, &db, 1000, |bb| loss(&x0, &a0, bb));
        if dropout > 0.0 {
            // Dropped inputs get exactly zero gradient.
            let dropped = (0..rows * d_in)
                .filter(|&i| !crate::backend::dropout_keep(42, i as u64, dropout))
                .collect::<Vec<_>>();
            assert!(!dropped.is_empty() && dropped.len() < rows * d_in);
            assert!(dropped.iter().all(|&i| dx[i] == 0.0));
        }
    }

    #[test]
    fn lora_linear_gradients_match_finite_differences() {
        run(0.0);
    }

    #[test]
    fn lora_linear_gradients_with_dropout_match_finite_differences() {
        run(0.3);
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_scales() {
        let be = CpuBackend::<f32>::new();
        let n = 100_000;
        let mut x = vec![1.0f32; n];
        be.dropout(&mut x, 0.25, 7);
        let kept = x.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
        assert!(x.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        // The in-place CPU kernel equals the trait's host default, element for element.
        let mut h = vec![1.0f32; n];
        crate::backend::dropout_host(&mut h, 0.25, 7);
        assert_eq!(x, h);
        // Another seed, another mask; p = 0 is the identity.
        let mut y = vec![1.0f32; n];
        be.dropout(&mut y, 0.25, 8);
        assert_ne!(x, y);
        let mut z = vec![3.0f32; 10];
        be.dropout(&mut z, 0.0, 1);
        assert!(z.iter().all(|&v| v == 3.0));
        // The fused masked copy equals a copy masked in place, on a ragged length, and leaves
        // the destination's tail alone.
        let src: Vec<f32> = (0..n - 3).map(|i| i as f32 * 0.5 - 7.0).collect();
        let mut fused = vec![9.0f32; n];
        be.dropout_from(&mut fused, &src, n - 3, 0.25, 7);
        let mut want = src.clone();
        crate::backend::dropout_host(&mut want, 0.25, 7);
        assert_eq!(&fused[..n - 3], &want[..]);
        assert_eq!(&fused[n - 3..], &[9.0; 3]);
    }

    #[test]
    fn targets_parse_with_a_clear_error() {
        assert_eq!(LoraTarget::parse("q_proj").unwrap(), LoraTarget::Q);
        assert_eq!(LoraTarget::parse("down").unwrap(), LoraTarget::Down);
        let e = format!("{:#}", LoraTarget::parse("lm_head").unwrap_err());
        assert!(e.contains("lm_head") && e.contains("gate_proj"), "{e}");
        let cfg: LoraConfig =
            serde_json::from_str(r#"{"rank": 4, "targets": ["q_proj", "v"]}"#).unwrap();
        assert_eq!(cfg.targets, vec![LoraTarget::Q, LoraTarget::V]);
        assert_eq!(cfg.alpha, 16.0);
        assert_eq!(cfg.scale(), 4.0);
        let e = serde_json::from_str::<LoraConfig>(r#"{"targets": ["qproj"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("qproj") && e.contains("q_proj"), "{e}");
        let d = LoraConfig::default();
        assert_eq!(
            (d.rank, d.alpha, d.dropout, d.targets.len()),
            (8, 16.0, 0.05, 7)
        );
        for bad in [
            LoraConfig {
                rank: 0,
                ..d.clone()
            },
            LoraConfig {
                alpha: f32::NAN,
                ..d.clone()
            },
            LoraConfig {
                dropout: 1.0,
                ..d.clone()
            },
            LoraConfig {
                targets: vec![],
                ..d.clone()
            },
            LoraConfig {
                targets: vec![LoraTarget::Q, LoraTarget::Q],
                ..d.clone()
            },
        ] {
            let e = format!("{:#}", bad.validate().unwrap_err());
            assert!(e.contains("lora."), "{e}");
        }
        let back = LoraConfig::from_peft(&d.to_peft()).unwrap();
        assert_eq!(back, d);
    }
}
