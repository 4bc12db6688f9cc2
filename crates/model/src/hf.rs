//! Hugging Face model directories: `config.json`, `model.safetensors` or sharded
//! `model-0000k-of-0000n.safetensors` with `model.safetensors.index.json`, `generation_config.json`
//! and the tokenizer files. Reads f32, f16 and bf16 weights (converted to f32); writes the
//! layout transformers writes, so `from_pretrained` loads our output unchanged.

use crate::atomic::write_atomic;
use crate::params::{param_specs, HostWeights};
use crate::ModelConfig;
use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Weights are written as one file up to this many bytes, sharded above it (transformers'
/// default `max_shard_size` is 5 GB; 2 GB keeps each shard comfortably mappable).
pub const DEFAULT_SHARD_BYTES: usize = 2 << 30;

/// The safetensors files of a model directory, single or sharded.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: missing `weight_map` object", index.display()))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for p in &paths {
            if !p.exists() {
                bail!(
                    "{} names shard {}, which does not exist",
                    index.display(),
                    p.display()
                );
            }
        }
        return Ok(paths);
    }
    if dir.join("pytorch_model.bin").exists() {
        bail!(
            "{} holds only pytorch_model.bin; convert it to safetensors first \
             (in Python: model.save_pretrained(dir, safe_serialization=True))",
            dir.display()
        );
    }
    bail!(
        "no weights in {}: expected model.safetensors or model.safetensors.index.json with its shards",
        dir.display()
    )
}

pub(crate) fn to_f32(view: &TensorView, file: &Path, name: &str) -> Result<Vec<f32>> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => bail!(
            "{}: tensor `{name}` has dtype {other:?}; supported are F32, F16, BF16 and F64",
            file.display()
        ),
    })
}

/// Loads a Hugging Face Llama directory into host f32 weights.
pub fn load_dir(dir: &Path) -> Result<HostWeights> {
    if !dir.is_dir() {
        bail!(
            "model directory {} does not exist (or is not a directory)",
            dir.display()
        );
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        bail!(
            "{} has no config.json; is it a Hugging Face model directory?",
            dir.display()
        );
    }
    let cfg = ModelConfig::from_hf_json(&cfg_path)?;
    let specs = param_specs(&cfg);
    let mut want: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut tensors: Vec<Option<Vec<f32>>> = vec![None; specs.len()];
    let mut tied_head: Option<Vec<f32>> = None;
    for file in weight_files(dir)? {
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
        for (name, view) in st.tensors() {
            let Some(&i) = want.get(name.as_str()) else {
                // Tied checkpoints sometimes still carry lm_head.weight; rotary caches are derived.
                if name == "lm_head.weight" && cfg.tie_embeddings {
                    // Some tied checkpoints store the shared matrix only under the head's name.
                    if view.shape() != [cfg.vocab_size, cfg.dim] {
                        bail!(
                            "{}: tensor `lm_head.weight` has shape {:?}, but config.json implies {:?}",
                            file.display(),
                            view.shape(),
                            [cfg.vocab_size, cfg.dim]
                        );
                    }
                    tied_head = Some(to_f32(&view, &file, &name)?);
                    continue;
                }
                if name.ends_with("rotary_emb.inv_freq") {
                    continue;
                }
                bail!(
                    "{}: unexpected tensor `{name}` for a Llama model",
                    file.display()
                );
            };
            let spec = &specs[i];
            if view.shape() != spec.shape.as_slice() {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, but config.json implies {:?}",
                    file.display(),
                    view.shape(),
                    spec.shape
                );
            }
            tensors[i] = Some(to_f32(&view, &file, &name)?);
            want.remove(name.as_str());
        }
    }
    if tensors[0].is_none() {
        if let Some(h) = tied_head {
            tensors[0] = Some(h);
            want.remove(specs[0].name.as_str());
        }
    }
    if let Some(missing) = specs.iter().find(|s| want.contains_key(s.name.as_str())) {
        bail!(
            "{}: tensor `{}` (shape {:?}) is missing from the weights{}",
            dir.display(),
            missing.name,
            missing.shape,
            if missing.name == "lm_head.weight" {
                "; if the head is tied to the embedding, set \"tie_word_embeddings\": true in config.json"
            } else {
                ""
            }
        );
    }
    Ok(HostWeights {
        config: cfg,
        specs,
        tensors: tensors.into_iter().map(Option::unwrap).collect(),
    })
}

/// Storage type for saved weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    BF16,
    F16,
}

impl SaveDtype {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" | "float32" => SaveDtype::F32,
            "bf16" | "bfloat16" => SaveDtype::BF16,
            "f16" | "float16" => SaveDtype::F16,
            _ => bail!("unknown dtype `{s}`; use f32, bf16 or f16"),
        })
    }
    fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::BF16 => "bfloat16",
            SaveDtype::F16 => "float16",
        }
    }
    fn encode(self, t: &[f32]) -> (Dtype, Vec<u8>) {
        match self {
            SaveDtype::F32 => (Dtype::F32, t.iter().flat_map(|x| x.to_le_bytes()).collect()),
            SaveDtype::BF16 => (
                Dtype::BF16,
                t.iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
            SaveDtype::F16 => (
                Dtype::F16,
                t.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ),
        }
    }
}

/// Writes `config.json`, `generation_config.json` and the weights (sharded above `shard_bytes`),
/// each file atomically.
pub fn save_dir(w: &HostWeights, dir: &Path, dtype: SaveDtype, shard_bytes: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cfg_json = serde_json::to_vec_pretty(&w.config.to_hf_json(dtype.torch_name()))?;
    write_atomic(&dir.join("config.json"), &cfg_json)?;
    let gen = serde_json::json!({
        "bos_token_id": w.config.bos_id,
        "eos_token_id": w.config.eos_id,
        "max_length": w.config.max_seq_len,
    });
    write_atomic(
        &dir.join("generation_config.json"),
        &serde_json::to_vec_pretty(&gen)?,
    )?;

    // Group tensors into shards in parameter order.
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = w
        .specs
        .iter()
        .zip(&w.tensors)
        .map(|(s, t)| {
            let (dt, bytes) = dtype.encode(t);
            (s.name.clone(), dt, s.shape.clone(), bytes)
        })
        .collect();
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut cur = 0usize;
    for (i, e) in encoded.iter().enumerate() {
        if cur > 0 && cur + e.3.len() > shard_bytes {
            shards.push(vec![]);
            cur = 0;
        }
        shards.last_mut().unwrap().push(i);
        cur += e.3.len();
    }
    // Remove stale weight files of a different layout so loaders do not see two.
    for stale in std::fs::read_dir(dir)?.flatten() {
        let n = stale.file_name().to_string_lossy().into_owned();
        if (n.starts_with("model-") && n.ends_with(".safetensors"))
            || n == "model.safetensors.index.json"
            || n == "model.safetensors"
        {
            std::fs::remove_file(stale.path()).ok();
        }
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let total: usize = encoded.iter().map(|e| e.3.len()).sum();
    for (k, idx) in shards.iter().enumerate() {
        let fname = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, n)
        };
        let views: Vec<(String, TensorView)> = idx
            .iter()
            .map(|&i| {
                let e = &encoded[i];
                (
                    e.0.clone(),
                    TensorView::new(e.1, e.2.clone(), &e.3).expect("shape matches data"),
                )
            })
            .collect();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(views, Some(meta))?;
        write_atomic(&dir.join(&fname), &bytes)?;
        for &i in idx {
            weight_map.insert(encoded[i].0.clone(), fname.clone());
        }
    }
    if n > 1 {
        let index =
            serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        write_atomic(
            &dir.join("model.safetensors.index.json"),
            &serde_json::to_vec_pretty(&index)?,
        )?;
    }
    Ok(())
}

/// The dtype of the first tensor of a safetensors file, for display.
pub fn stored_dtype(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
    Ok(meta
        .tensors()
        .values()
        .next()
        .map(|t| format!("{:?}", t.dtype).to_lowercase())
        .unwrap_or_else(|| "none".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    #[test]
    fn round_trip_single_and_sharded_in_every_dtype() {
        let mut cfg = presets::get("test-tiny").unwrap();
        for tie in [false, true] {
            cfg.tie_embeddings = tie;
            let w = HostWeights::init(&cfg, 1);
            for (dt, tol) in [
                (SaveDtype::F32, 0.0),
                (SaveDtype::BF16, 1e-2),
                (SaveDtype::F16, 1e-3),
            ] {
                for shard in [DEFAULT_SHARD_BYTES, 2000] {
                    let dir = tempfile::tempdir().unwrap();
                    save_dir(&w, dir.path(), dt, shard).unwrap();
                    assert_eq!(
                        shard == 2000,
                        dir.path().join("model.safetensors.index.json").exists()
                    );
                    let r = load_dir(dir.path()).unwrap();
                    assert_eq!(r.config, cfg);
                    for (a, b) in w.tensors.iter().zip(&r.tensors) {
                        for (x, y) in a.iter().zip(b) {
                            assert!((x - y).abs() <= tol * x.abs().max(1e-3), "{x} {y} {dt:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shape_mismatch_names_file_tensor_and_shape() {
        let cfg = presets::get("test-tiny").unwrap();
        let w = HostWeights::init(&cfg, 1);
        let dir = tempfile::tempdir().unwrap();
        save_dir(&w, dir.path(), SaveDtype::F32, DEFAULT_SHARD_BYTES).unwrap();
        let mut bad = cfg.clone();
        bad.ffn_dim = 32;
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&bad.to_hf_json("float32")).unwrap(),
        )
        .unwrap();
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(
            e.contains("model.safetensors")
                && e.contains("mlp.")
                && e.contains("config.json implies"),
            "{e}"
        );
    }

    #[test]
    fn missing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(e.contains("config.json"), "{e}");
        let cfg = presets::get("test-tiny").unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&cfg.to_hf_json("float32")).unwrap(),
        )
        .unwrap();
        let e = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(e.contains("model.safetensors"), "{e}");
    }
}
