use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use tinyllama_plan::{gpus, report, GradDtype, ModelSpec, PlanRequest};

fn quantity(s: &str) -> std::result::Result<f64, String> {
    tinyllama_plan::parse_quantity(s)
}

fn count(s: &str) -> std::result::Result<u64, String> {
    let v = tinyllama_plan::parse_quantity(s)?;
    if v < 0.0 || v.fract() != 0.0 || v > u64::MAX as f64 {
        return Err(format!("expected a non-negative whole number, got `{s}`"));
    }
    Ok(v as u64)
}

#[derive(Args)]
pub struct PlanArgs {
    /// Compute budget in FLOPs, e.g. 5.76e23 (default: none; alternative to --gpus/--hours).
    #[arg(long, value_name = "FLOPS", value_parser = quantity, allow_negative_numbers = true)]
    pub compute: Option<f64>,
    /// Number of GPUs, data-parallel (default: none; memory assumes 1).
    #[arg(long, value_name = "N", value_parser = count, allow_negative_numbers = true)]
    pub gpus: Option<u64>,
    /// GPU type from the catalogue, e.g. A100-40GB, H100-SXM (default: none; see --list-gpus).
    #[arg(long, value_name = "T")]
    pub gpu_type: Option<String>,
    /// Wall-clock budget in hours on --gpus × --gpu-type (default: none).
    #[arg(long, value_name = "H", allow_negative_numbers = true)]
    pub hours: Option<f64>,
    /// Model FLOPs utilisation, a fraction of the bf16 dense peak (default: 0.40 unless
    /// --tokens-per-sec-per-gpu is given).
    #[arg(long, value_name = "M", allow_negative_numbers = true)]
    pub mfu: Option<f64>,
    /// Measured training throughput per GPU; implies the MFU (default: none, use --mfu).
    #[arg(long, value_name = "R", value_parser = quantity, allow_negative_numbers = true)]
    pub tokens_per_sec_per_gpu: Option<f64>,
    /// Price in $ per GPU-hour (default: the catalogue's indicative price for --gpu-type).
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    pub price: Option<f64>,
    /// Add or replace a catalogue GPU: NAME:TFLOPS:GB[:PRICE], repeatable (default: none).
    #[arg(long, value_name = "SPEC")]
    pub gpu_spec: Vec<String>,
    /// Model size as a bare parameter count, e.g. 1.1B (default: none; no activations then).
    #[arg(long, value_name = "N", value_parser = quantity, allow_negative_numbers = true, conflicts_with_all = ["preset", "model"])]
    pub params: Option<f64>,
    /// A named model preset, e.g. tinyllama-1.1b (default: none; `tinyllama info` lists them).
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    pub preset: Option<String>,
    /// A Hugging Face model directory; only config.json is read (default: none).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Training tokens, e.g. 3T (default: none; derived from a budget when a model is given).
    #[arg(long, value_name = "D", value_parser = quantity, allow_negative_numbers = true)]
    pub tokens: Option<f64>,
    /// Sequence length for attention FLOPs and activations (default: the model's context, or
    /// 2048 with --params).
    #[arg(long, value_name = "S", value_parser = count, allow_negative_numbers = true)]
    pub seq_len: Option<u64>,
    /// Sequences per GPU per step (default: 1).
    #[arg(long, value_name = "B", default_value = "1", value_parser = count, allow_negative_numbers = true, hide_default_value = true)]
    pub micro_batch: u64,
    /// Sequences per optimizer step over all GPUs, for the communication section's step time
    /// (default: none).
    #[arg(long, value_name = "B", value_parser = count, allow_negative_numbers = true)]
    pub global_batch: Option<u64>,
    /// Intra-node bandwidth per GPU in GB/s, one direction (default: the catalogue's NVLink or
    /// PCIe figure).
    #[arg(long, value_name = "GBS", allow_negative_numbers = true)]
    pub link_gbs: Option<f64>,
    /// Inter-node bandwidth per GPU in GB/s (default: one InfiniBand NIC per GPU: 25 for A100,
    /// 50 for H100/H200).
    #[arg(long, value_name = "GBS", allow_negative_numbers = true)]
    pub network_gbs: Option<f64>,
    /// GPUs per node (default: 8).
    #[arg(long, value_name = "N", value_parser = count, allow_negative_numbers = true)]
    pub gpus_per_node: Option<u64>,
    /// ZeRO stage: 0 plain data parallel, 1 shards optimizer state, 2 also gradients, 3 (FSDP)
    /// also weights (default: 0).
    #[arg(long, value_name = "Z", default_value_t = 0, hide_default_value = true)]
    pub zero_stage: u8,
    /// Plan with activation recomputation (checkpointing) per block (default: off; both are
    /// shown).
    #[arg(long)]
    pub recompute: bool,
    /// Gradient precision: bf16 or f32 (default: bf16).
    #[arg(
        long,
        value_name = "DTYPE",
        default_value = "bf16",
        hide_default_value = true
    )]
    pub grad_dtype: String,
    /// Tokens per fused-loss logits chunk (default: the whole micro-batch, i.e. unchunked).
    #[arg(long, value_name = "TOKENS", value_parser = count, allow_negative_numbers = true)]
    pub loss_chunk: Option<u64>,
    /// Tokens per parameter of the Chinchilla rule of thumb (default: 20).
    #[arg(
        long,
        value_name = "R",
        default_value_t = 20.0,
        allow_negative_numbers = true,
        hide_default_value = true
    )]
    pub tokens_per_param: f64,
    /// List the GPU catalogue (with any --gpu-spec) and exit (default: off).
    #[arg(long)]
    pub list_gpus: bool,
    /// Print the plan as JSON instead of the text report (default: off).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PlanArgs) -> Result<()> {
    let gpu_specs = a
        .gpu_spec
        .iter()
        .map(|s| gpus::parse_spec(s))
        .collect::<Result<Vec<_>>>()?;
    if a.list_gpus {
        return emit(&report::catalogue(&gpus::Catalogue::new(&gpu_specs).gpus));
    }
    let model = match (a.params, &a.preset, &a.model) {
        (Some(params), _, _) => Some(ModelSpec::Params { params }),
        (_, Some(name), _) => Some(ModelSpec::preset(name)?),
        (_, _, Some(dir)) => Some(ModelSpec::from_dir(dir)?),
        _ => None,
    };
    let req = PlanRequest {
        compute: a.compute,
        gpus: a.gpus,
        gpu_type: a.gpu_type,
        hours: a.hours,
        mfu: a.mfu,
        tokens_per_sec_per_gpu: a.tokens_per_sec_per_gpu,
        price: a.price,
        gpu_specs,
        model,
        tokens: a.tokens,
        seq_len: a.seq_len.map(|s| s as usize),
        micro_batch: a.micro_batch,
        zero_stage: a.zero_stage,
        global_batch: a.global_batch,
        link_gbs: a.link_gbs,
        network_gbs: a.network_gbs,
        gpus_per_node: a.gpus_per_node,
        recompute: a.recompute,
        grad_dtype: GradDtype::parse(&a.grad_dtype)?,
        loss_chunk: a.loss_chunk,
        tokens_per_param: a.tokens_per_param,
    };
    let plan = tinyllama_plan::plan(&req)?;
    if a.json {
        emit(&(serde_json::to_string_pretty(&plan)? + "\n"))
    } else {
        emit(&report::render(&plan))
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly instead of panicking.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
