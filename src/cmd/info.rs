use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use tinyllama_model::{hf, presets, ModelConfig};

#[derive(Args)]
pub struct InfoArgs {
    /// Hugging Face model directory (config.json + safetensors).
    #[arg(long, conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// A named preset instead of a directory (see `--list-presets`).
    #[arg(long)]
    pub preset: Option<String>,
    /// List the model presets and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// Show the CUDA libraries found (driver, NVRTC, cuBLASLt, NCCL, headers) and the GPUs.
    #[arg(long)]
    pub devices: bool,
}

#[cfg(not(feature = "cuda"))]
fn devices() -> Result<()> {
    println!("cpu              {} threads", rayon::current_num_threads());
    println!("cuda             built without CUDA support (rebuild with `cargo build --release --features cuda`)");
    print_mpi();
    Ok(())
}

#[cfg(feature = "cuda")]
fn devices() -> Result<()> {
    use tinyllama_cuda::discover::{self, LIBS};
    println!("cpu              {} threads", rayon::current_num_threads());
    let libs = discover::libraries();
    println!(
        "CUDA libraries (loaded at run time; searched {})",
        libs.searched()
    );
    for spec in LIBS {
        match libs.get(&spec) {
            Some(f) => {
                let extra = if spec.stem == "cuda" {
                    libs.driver_version
                        .map(|(a, b)| format!(", driver supports CUDA {a}.{b}"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                println!(
                    "  {:<10} {} ({}{extra})",
                    spec.what,
                    f.path.display(),
                    f.origin
                );
            }
            None => println!("  {:<10} not found", spec.what),
        }
    }
    match &libs.include {
        Some(d) => println!(
            "  {:<10} {} (cuda_bf16.h for NVRTC)",
            "headers",
            d.display()
        ),
        None => println!("  {:<10} not found (NVRTC needs cuda_bf16.h)", "headers"),
    }
    if let Ok(nv) = tinyllama_cuda::nvrtc::Nvrtc::load() {
        println!("  NVRTC version {}.{}", nv.version.0, nv.version.1);
    }
    if libs.nccl.is_some() {
        match tinyllama_cuda::nccl::Nccl::load(None) {
            Ok(n) => println!("  NCCL version {} (multi-GPU data parallel)", n.version),
            Err(e) => println!("  NCCL found but not usable: {e:#}"),
        }
    }
    print_mpi();
    println!("kernel cache     {}", tinyllama_cuda::cache_dir().display());
    match tinyllama_cuda::driver::list_devices() {
        Ok(devs) if devs.is_empty() => println!("GPUs             none visible"),
        Ok(devs) => {
            for d in devs {
                println!(
                    "cuda:{:<11} {} · compute capability {}.{} · {} SMs · {:.1} GiB{}",
                    d.ordinal,
                    d.name,
                    d.compute_capability.0,
                    d.compute_capability.1,
                    d.sm_count,
                    d.total_memory as f64 / (1u64 << 30) as f64,
                    if d.compute_capability.0 >= 8 {
                        ""
                    } else {
                        " (too old: bf16 kernels need 8.0+)"
                    }
                );
            }
        }
        Err(e) => println!("GPUs             none usable: {e:#}"),
    }
    Ok(())
}

fn gib(bytes: f64) -> String {
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.devices {
        return devices();
    }
    if a.list_presets || (a.model.is_none() && a.preset.is_none()) {
        println!("{:<16} {:>14}  description", "preset", "parameters");
        for p in presets::all() {
            println!("{:<16} {:>14}  {}", p.name, p.config.num_params(), p.about);
        }
        if a.model.is_none() && a.preset.is_none() && !a.list_presets {
            println!("\n(pass --model DIR or --preset NAME for one model's details)");
        }
        return Ok(());
    }
    let (cfg, dtype, source): (ModelConfig, String, String) = if let Some(dir) = &a.model {
        let cfg = ModelConfig::from_hf_json(&dir.join("config.json"))?;
        let files = hf::weight_files(dir)?;
        let dtype = hf::stored_dtype(&files[0])?;
        (cfg, dtype, dir.display().to_string())
    } else {
        let name = a.preset.unwrap();
        (
            presets::get(&name)?,
            "f32 (initialised)".into(),
            format!("preset {name}"),
        )
    };
    let n = cfg.num_params() as f64;
    println!("model            {source}");
    println!(
        "parameters       {} ({:.1}M; non-embedding {:.1}M)",
        cfg.num_params(),
        n / 1e6,
        cfg.num_non_embedding_params() as f64 / 1e6
    );
    println!("stored dtype     {dtype}");
    println!("vocab            {}", cfg.vocab_size);
    println!("dim / layers     {} / {}", cfg.dim, cfg.n_layers);
    println!(
        "heads / kv heads {} / {} (head dim {})",
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim()
    );
    println!("ffn dim          {}", cfg.ffn_dim);
    println!("context          {}", cfg.max_seq_len);
    println!("rope theta / eps {} / {:e}", cfg.rope_theta, cfg.norm_eps);
    println!("tied embeddings  {}", cfg.tie_embeddings);
    println!("bos / eos        {} / {}", cfg.bos_id, cfg.eos_id);
    let kv_per_token = 2.0 * (cfg.n_layers * cfg.kv_dim()) as f64;
    println!(
        "memory           weights f32 {}, bf16 {}; KV cache f32 {} per 1k tokens; training (f32 weights+grads+AdamW) {}",
        gib(4.0 * n),
        gib(2.0 * n),
        gib(4.0 * kv_per_token * 1024.0),
        gib(16.0 * n)
    );
    println!(
        "train FLOPs/token {:.3e} at context {}",
        cfg.train_flops_per_token(cfg.max_seq_len),
        cfg.max_seq_len
    );
    Ok(())
}

/// Whether this binary can run as one of several processes.
fn print_mpi() {
    println!(
        "MPI              {}",
        if cfg!(feature = "mpi") {
            "built in (`mpirun -np N tinyllama pretrain …`)"
        } else {
            "not built in (rebuild with `--features mpi` for several processes)"
        }
    );
}
