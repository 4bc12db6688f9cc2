//! LoRA adapters in the directory layout of Hugging Face PEFT: `adapter_config.json` and
//! `adapter_model.safetensors`, so `PeftModel.from_pretrained(base, dir)` loads what we write
//! and we load what PEFT writes (plain LoRA on the seven Llama projections; the variants we do
//! not implement — DoRA, rsLoRA, biases, per-layer ranks, extra saved modules — are refused
//! with the field to change).
//!
//! Tensor names are PEFT's, without the adapter name:
//! `base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight` (`[r, in]`) and
//! `….lora_B.weight` (`[out, r]`); the MLP's under `mlp.` (`gate_proj`, `up_proj`, `down_proj`).

use crate::atomic::write_atomic;
use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The Llama modules a LoRA adapter may target, as PEFT names them, in layer order.
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The sub-module a target lives in (`self_attn` or `mlp`), `None` for an unknown name.
pub fn module_parent(module: &str) -> Option<&'static str> {
    match module {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => Some("self_attn"),
        "gate_proj" | "up_proj" | "down_proj" => Some("mlp"),
        _ => None,
    }
}

/// PEFT's name of one adapter tensor: `b = false` for `lora_A`, `true` for `lora_B`.
pub fn tensor_name(layer: usize, module: &str, b: bool) -> String {
    let parent = module_parent(module).unwrap_or("self_attn");
    let ab = if b { "lora_B" } else { "lora_A" };
    format!("base_model.model.model.layers.{layer}.{parent}.{module}.{ab}.weight")
}

/// The hyper-parameters of a plain LoRA adapter, as `adapter_config.json` holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub r: usize,
    pub lora_alpha: f32,
    pub lora_dropout: f32,
    /// PEFT module names, a subset of [`TARGET_MODULES`].
    pub target_modules: Vec<String>,
}

/// One stored tensor, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An adapter directory read by [`load_peft`].
#[derive(Clone, Debug, PartialEq)]
pub struct PeftAdapter {
    pub config: PeftConfig,
    /// `base_model_name_or_path` from the config, when set.
    pub base_model_name_or_path: Option<String>,
    /// Every tensor of `adapter_model.safetensors`, by PEFT name.
    pub tensors: BTreeMap<String, PeftTensor>,
}

/// The `adapter_config.json` we write: what PEFT 0.22's `save_pretrained` writes for a plain
/// LoRA adapter on a causal LM (fields PEFT does not know are never added, so older PEFT
/// versions load it too).
pub fn config_json(cfg: &PeftConfig, base_model_name_or_path: Option<&str>) -> Value {
    let mut targets = cfg.target_modules.clone();
    targets.sort();
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": cfg.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false,
    })
}

fn check_config(cfg: &PeftConfig) -> Result<()> {
    if cfg.r == 0 {
        bail!("LoRA rank `r` must be at least 1");
    }
    if !cfg.lora_alpha.is_finite() {
        bail!(
            "`lora_alpha` must be a finite number, got {}",
            cfg.lora_alpha
        );
    }
    if !(0.0..1.0).contains(&cfg.lora_dropout) {
        bail!("`lora_dropout` must be in [0, 1), got {}", cfg.lora_dropout);
    }
    if cfg.target_modules.is_empty() {
        bail!(
            "`target_modules` is empty; name at least one of {}",
            TARGET_MODULES.join(", ")
        );
    }
    for m in &cfg.target_modules {
        if module_parent(m).is_none() {
            bail!(
                "`target_modules` names `{m}`, which is not a Llama projection we can adapt; \
                 use {}",
                TARGET_MODULES.join(", ")
            );
        }
    }
    Ok(())
}

/// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (f32), each file
/// atomically. `names`, `shapes` and `tensors` run in parallel (PEFT names, see
/// [`tensor_name`]).
pub fn save_peft(
    dir: &Path,
    cfg: &PeftConfig,
    names: &[String],
    shapes: &[Vec<usize>],
    tensors: &[Vec<f32>],
    base_model_name_or_path: Option<&str>,
) -> Result<()> {
    check_config(cfg)?;
    if names.len() != tensors.len() || shapes.len() != tensors.len() {
        bail!(
            "save_peft: {} names, {} shapes and {} tensors",
            names.len(),
            shapes.len(),
            tensors.len()
        );
    }
    let encoded: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(names.len());
    for ((name, shape), bytes) in names.iter().zip(shapes).zip(&encoded) {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes).with_context(|| {
            format!("save_peft: tensor `{name}` does not match shape {shape:?}")
        })?;
        views.push((name.clone(), view));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    let json = serde_json::to_vec_pretty(&config_json(cfg, base_model_name_or_path))?;
    write_atomic(&dir.join(CONFIG_FILE), &json)?;
    Ok(())
}

/// A field that must be absent, null, false or empty: we refuse adapters that set it.
fn refuse_if_set(v: &Value, path: &Path, field: &str, why: &str) -> Result<()> {
    let set = match v.get(field) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if set {
        bail!(
            "{}: `{field}` is {}, which tinyllama does not support ({why})",
            path.display(),
            v[field]
        );
    }
    Ok(())
}

fn parse_config(v: &Value, path: &Path) -> Result<PeftConfig> {
    match v.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        Some(other) => bail!(
            "{}: `peft_type` is \"{other}\"; only LoRA adapters (\"LORA\") are supported",
            path.display()
        ),
        None => bail!(
            "{}: no `peft_type`; is this a PEFT adapter_config.json?",
            path.display()
        ),
    }
    match v.get("task_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "CAUSAL_LM" => {}
        Some(t) => bail!(
            "{}: `task_type` is {t}; a Llama language-model adapter has \"CAUSAL_LM\"",
            path.display()
        ),
    }
    match v.get("bias").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(b) => bail!(
            "{}: `bias` is \"{b}\"; only adapters without bias terms (\"none\") are supported \
             — train with bias=\"none\"",
            path.display()
        ),
    }
    for (field, why) in [
        ("use_dora", "train a plain LoRA adapter with use_dora=False"),
        (
            "use_rslora",
            "rank-stabilised scaling alpha/sqrt(r); train with use_rslora=False",
        ),
        (
            "fan_in_fan_out",
            "weights stored transposed, as for GPT-2's Conv1D; Llama uses fan_in_fan_out=False",
        ),
        ("lora_bias", "train with lora_bias=False"),
        (
            "rank_pattern",
            "per-module ranks; use one rank `r` for every module",
        ),
        (
            "alpha_pattern",
            "per-module alphas; use one `lora_alpha` for every module",
        ),
        (
            "layers_to_transform",
            "adapters on some layers only; adapt every layer",
        ),
        (
            "modules_to_save",
            "fully trained extra modules; save only the LoRA matrices",
        ),
        (
            "exclude_modules",
            "remove it and adapt every matching module",
        ),
        ("layer_replication", "remove it"),
        ("target_parameters", "remove it"),
        ("trainable_token_indices", "remove it"),
        ("alora_invocation_tokens", "activated LoRA is not supported"),
        (
            "use_qalora",
            "QA-LoRA is not supported; train a plain LoRA adapter",
        ),
        ("use_bdlora", "a LoRA variant tinyllama does not implement"),
        (
            "arrow_config",
            "a LoRA variant tinyllama does not implement",
        ),
        ("kasa_config", "a LoRA variant tinyllama does not implement"),
        (
            "monteclora_config",
            "a LoRA variant tinyllama does not implement",
        ),
        (
            "velora_config",
            "a LoRA variant tinyllama does not implement",
        ),
    ] {
        refuse_if_set(v, path, field, why)?;
    }
    let r = v.get("r").and_then(Value::as_u64).with_context(|| {
        format!(
            "{}: `r` (the rank) is missing or not an integer",
            path.display()
        )
    })? as usize;
    let num = |field: &str, default: f64| -> Result<f32> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(default as f32),
            Some(x) => x.as_f64().map(|f| f as f32).with_context(|| {
                format!("{}: `{field}` is {x}, expected a number", path.display())
            }),
        }
    };
    // PEFT's defaults when a field is absent.
    let lora_alpha = num("lora_alpha", 8.0)?;
    let lora_dropout = num("lora_dropout", 0.0)?;
    let target_modules = match v.get("target_modules") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| {
                m.as_str().map(String::from).with_context(|| {
                    format!(
                        "{}: `target_modules` holds {m}, not a module name",
                        path.display()
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?,
        Some(Value::String(s)) => bail!(
            "{}: `target_modules` is the pattern \"{s}\"; list the module names instead \
             (a subset of {})",
            path.display(),
            TARGET_MODULES.join(", ")
        ),
        _ => bail!(
            "{}: `target_modules` is missing; list the adapted modules (a subset of {})",
            path.display(),
            TARGET_MODULES.join(", ")
        ),
    };
    let cfg = PeftConfig {
        r,
        lora_alpha,
        lora_dropout,
        target_modules,
    };
    check_config(&cfg).with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}

/// Reads an adapter directory written by PEFT's `save_pretrained` (or [`save_peft`]).
pub fn load_peft(dir: &Path) -> Result<PeftAdapter> {
    if !dir.is_dir() {
        bail!(
            "adapter directory {} does not exist (or is not a directory)",
            dir.display()
        );
    }
    let cfg_path = dir.join(CONFIG_FILE);
    if !cfg_path.exists() {
        bail!(
            "{} has no {CONFIG_FILE}; is it a PEFT adapter directory (save_pretrained of a \
             PeftModel)?",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("cannot read {}", cfg_path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
    let config = parse_config(&v, &cfg_path)?;
    let base_model_name_or_path = v
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .map(String::from);

    let file: PathBuf = dir.join(WEIGHTS_FILE);
    if !file.exists() {
        let hint = if dir.join("adapter_model.bin").exists() {
            "; it holds only adapter_model.bin — save it again with safe_serialization=True"
        } else {
            ""
        };
        bail!("{} has no {WEIGHTS_FILE}{hint}", dir.display());
    }
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", file.display()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = crate::hf::to_f32(&view, &file, &name)?;
        tensors.insert(
            name.clone(),
            PeftTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(PeftAdapter {
        config,
        base_model_name_or_path,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PeftConfig {
        PeftConfig {
            r: 2,
            lora_alpha: 4.0,
            lora_dropout: 0.1,
            target_modules: vec!["q_proj".into(), "down_proj".into()],
        }
    }

    fn write_one(dir: &Path) -> (Vec<String>, Vec<Vec<f32>>) {
        let names = vec![
            tensor_name(0, "q_proj", false),
            tensor_name(0, "down_proj", true),
        ];
        let shapes = vec![vec![2, 3], vec![3, 2]];
        let tensors = vec![vec![1.0, -2.0, 3.5, 0.25, 5.0, 6.0], vec![0.5; 6]];
        save_peft(dir, &cfg(), &names, &shapes, &tensors, Some("base/dir")).unwrap();
        (names, tensors)
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (names, tensors) = write_one(dir.path());
        assert_eq!(
            names[0],
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(
            names[1],
            "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
        );
        let a = load_peft(dir.path()).unwrap();
        let mut want = cfg();
        want.target_modules.sort();
        assert_eq!(a.config, want);
        assert_eq!(a.base_model_name_or_path.as_deref(), Some("base/dir"));
        for (n, t) in names.iter().zip(&tensors) {
            assert_eq!(&a.tensors[n].data, t);
        }
        assert_eq!(a.tensors[&names[0]].shape, vec![2, 3]);
    }

    fn edit(dir: &Path, f: impl FnOnce(&mut Value)) -> String {
        let p = dir.join(CONFIG_FILE);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        format!("{:#}", load_peft(dir).unwrap_err())
    }

    #[test]
    fn unsupported_options_name_the_field_and_the_fix() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("peft_type", json!("IA3"), "only LoRA"),
            ("use_dora", json!(true), "use_dora=False"),
            ("use_rslora", json!(true), "use_rslora=False"),
            ("bias", json!("all"), "bias=\"none\""),
            ("fan_in_fan_out", json!(true), "fan_in_fan_out"),
            ("rank_pattern", json!({"q_proj": 4}), "rank_pattern"),
            ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
            ("layers_to_transform", json!([0]), "layers_to_transform"),
            ("target_modules", json!(["q_proj", "lm_head"]), "`lm_head`"),
            ("target_modules", json!(".*proj"), "list the module names"),
            ("r", json!(0), "rank"),
            ("lora_dropout", json!(1.5), "lora_dropout"),
        ];
        for (field, value, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            write_one(dir.path());
            let e = edit(dir.path(), |v| v[field] = value.clone());
            assert!(e.contains(CONFIG_FILE), "{field}: {e}");
            assert!(e.contains(want), "{field}={value}: {e}");
        }
    }

    #[test]
    fn missing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", load_peft(&dir.path().join("nope")).unwrap_err());
        assert!(e.contains("does not exist"), "{e}");
        let e = format!("{:#}", load_peft(dir.path()).unwrap_err());
        assert!(e.contains(CONFIG_FILE), "{e}");
        write_one(dir.path());
        std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
        let e = format!("{:#}", load_peft(dir.path()).unwrap_err());
        assert!(e.contains(WEIGHTS_FILE), "{e}");
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"garbage").unwrap();
        let e = format!("{:#}", load_peft(dir.path()).unwrap_err());
        assert!(e.contains("not a valid safetensors"), "{e}");
    }
}
