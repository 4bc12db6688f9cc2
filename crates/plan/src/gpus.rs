//! A catalogue of training GPUs: dense bf16 tensor-core peak, memory, and an indicative rental
//! price. Extensible with `NAME:TFLOPS:GB[:PRICE]` specs (`--gpu-spec`).
//!
//! Peaks are the vendors' *dense* bf16 figures with f32 accumulation (the sparsity-doubled
//! numbers on data sheets are not reachable by training). Memory is the board's capacity; the
//! "GB" of HBM/GDDR boards is binary, so it is stored in GiB. Prices are rough on-demand cloud
//! rates per GPU-hour (2024–25) meant only as a default; pass `--price` for real quotes.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One accelerator model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Canonical name, e.g. `A100-40GB`.
    pub name: String,
    /// Dense bf16 tensor-core peak in TFLOP/s.
    pub bf16_tflops: f64,
    /// Memory capacity in GiB.
    pub memory_gib: f64,
    /// Indicative price in US dollars per GPU-hour, if known.
    pub price_per_hour: Option<f64>,
    /// Other spellings accepted by `--gpu-type` (compared case-insensitively, ignoring `-`,
    /// `_` and spaces).
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Gpu {
    /// Peak in FLOP/s.
    pub fn peak_flops(&self) -> f64 {
        self.bf16_tflops * 1e12
    }
    /// Capacity in bytes.
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gib * GIB
    }
    fn matches(&self, wanted: &str) -> bool {
        let w = normalise(wanted);
        normalise(&self.name) == w || self.aliases.iter().any(|a| normalise(a) == w)
    }
}

/// Bytes in a GiB.
pub const GIB: f64 = 1_073_741_824.0;

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn gpu(name: &str, tflops: f64, gib: f64, price: f64, aliases: &[&str]) -> Gpu {
    Gpu {
        name: name.into(),
        bf16_tflops: tflops,
        memory_gib: gib,
        price_per_hour: Some(price),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
    }
}

/// The built-in catalogue, data-centre parts first.
pub fn builtin() -> Vec<Gpu> {
    vec![
        gpu(
            "A100-40GB",
            312.0,
            40.0,
            1.30,
            &["a100-40g", "a100-sxm-40gb", "a100"],
        ),
        gpu(
            "A100-80GB",
            312.0,
            80.0,
            1.80,
            &["a100-80g", "a100-sxm-80gb"],
        ),
        gpu(
            "H100-SXM",
            989.4,
            80.0,
            3.00,
            &["h100", "h100-sxm5", "h100-80gb"],
        ),
        gpu("H100-PCIe", 756.5, 80.0, 2.50, &["h100-pcie-80gb"]),
        gpu("H200", 989.4, 141.0, 3.80, &["h200-sxm", "h200-141gb"]),
        gpu("L40S", 362.05, 48.0, 1.00, &["l40s-48gb"]),
        gpu("RTX-4090", 165.2, 24.0, 0.40, &["rtx4090", "4090"]),
        gpu("RTX-3090", 71.0, 24.0, 0.25, &["rtx3090", "3090"]),
    ]
}

/// Parses `NAME:TFLOPS:GB` or `NAME:TFLOPS:GB:PRICE` (price in $/GPU-hour).
pub fn parse_spec(spec: &str) -> Result<Gpu> {
    let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
    if !(3..=4).contains(&parts.len()) || parts[0].is_empty() {
        bail!("--gpu-spec `{spec}`: expected NAME:TFLOPS:GB or NAME:TFLOPS:GB:PRICE, e.g. MI300X:1307:192:4.0");
    }
    let num = |what: &str, s: &str| -> Result<f64> {
        let v: f64 = s
            .parse()
            .ok()
            .with_context(|| format!("--gpu-spec `{spec}`: {what} `{s}` is not a number"))?;
        if !(v.is_finite() && v > 0.0) {
            bail!("--gpu-spec `{spec}`: {what} must be positive, got {s}");
        }
        Ok(v)
    };
    Ok(Gpu {
        name: parts[0].to_string(),
        bf16_tflops: num("TFLOPS", parts[1])?,
        memory_gib: num("GB", parts[2])?,
        price_per_hour: parts.get(3).map(|p| num("PRICE", p)).transpose()?,
        aliases: vec![],
    })
}

/// The catalogue in use: the built-ins plus user specs; a user spec with a built-in's name
/// replaces it.
#[derive(Clone, Debug)]
pub struct Catalogue {
    pub gpus: Vec<Gpu>,
}

impl Catalogue {
    pub fn new(extra: &[Gpu]) -> Self {
        let mut gpus = builtin();
        for g in extra {
            gpus.retain(|b| !b.matches(&g.name));
            gpus.push(g.clone());
        }
        Catalogue { gpus }
    }

    /// Looks a GPU up by name or alias; the error lists the choices.
    pub fn find(&self, name: &str) -> Result<&Gpu> {
        match self.gpus.iter().find(|g| g.matches(name)) {
            Some(g) => Ok(g),
            None => bail!(
                "unknown GPU type `{name}`; choose one of: {} (or describe it with --gpu-spec NAME:TFLOPS:GB[:PRICE])",
                self.gpus
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_separators() {
        let c = Catalogue::new(&[]);
        assert_eq!(c.find("a100-40g").unwrap().name, "A100-40GB");
        assert_eq!(c.find("A100_40GB").unwrap().name, "A100-40GB");
        assert_eq!(c.find("h100 sxm").unwrap().name, "H100-SXM");
        assert_eq!(c.find("4090").unwrap().name, "RTX-4090");
    }

    #[test]
    fn unknown_gpu_lists_choices() {
        let e = Catalogue::new(&[]).find("V100").unwrap_err().to_string();
        for n in [
            "A100-40GB",
            "H100-PCIe",
            "H200",
            "L40S",
            "RTX-3090",
            "--gpu-spec",
        ] {
            assert!(e.contains(n), "{e}");
        }
    }

    #[test]
    fn specs_extend_and_override() {
        let mi = parse_spec("MI300X:1307:192:4.5").unwrap();
        assert_eq!(mi.memory_gib, 192.0);
        assert_eq!(mi.price_per_hour, Some(4.5));
        let a100 = parse_spec("a100-40gb:300:40").unwrap();
        let c = Catalogue::new(&[mi, a100]);
        assert_eq!(c.find("mi300x").unwrap().bf16_tflops, 1307.0);
        assert_eq!(c.find("A100-40GB").unwrap().bf16_tflops, 300.0);
        assert_eq!(c.find("A100-40GB").unwrap().price_per_hour, None);
        assert_eq!(c.gpus.len(), builtin().len() + 1);
    }

    #[test]
    fn bad_specs_are_rejected() {
        for s in [
            "X:1:2:3:4",
            "X:1",
            ":1:2",
            "X:fast:2",
            "X:0:2",
            "X:1:-2",
            "X:1:2:0",
        ] {
            assert!(parse_spec(s).is_err(), "{s}");
        }
    }
}
