//! `tinyllama selftest`: the CUDA backend against the CPU backend, or (`--compile-only`) just
//! compiling every kernel with NVRTC, which needs no GPU.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SelftestArgs {
    /// Device to test: cuda, cuda:N, or cuda:emu (the kernels compiled for the CPU and emulated;
    /// needs a C++ compiler; slow).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Only compile every kernel to PTX with NVRTC (no GPU needed) and report errors.
    #[arg(long)]
    pub compile_only: bool,
    /// Architectures for --compile-only, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
    pub arch: Vec<String>,
    /// With --compile-only: also compile to machine code (CUBIN) and report each kernel's
    /// registers and spills as ptxas sees them.
    #[arg(long, requires = "compile_only")]
    pub cubin: bool,
    /// Smaller shapes (quick; what the emulator runs in tests).
    #[arg(long)]
    pub quick: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(not(feature = "cuda"))]
pub fn run(_a: SelftestArgs) -> Result<()> {
    anyhow::bail!(
        "this binary was built without CUDA support; rebuild with `cargo build --release --features cuda` (no CUDA toolkit is needed to build)"
    )
}

#[cfg(feature = "cuda")]
pub fn run(a: SelftestArgs) -> Result<()> {
    use anyhow::{bail, Context};
    use tinyllama_cuda::{nvrtc, selftest};
    if a.compile_only {
        let nv = nvrtc::Nvrtc::load()?;
        let ccs = a
            .arch
            .iter()
            .map(|s| nvrtc::parse_arch(s))
            .collect::<Result<Vec<_>>>()?;
        let mut targets: Vec<nvrtc::Target> = ccs.iter().map(|&c| nvrtc::Target::Ptx(c)).collect();
        if a.cubin {
            targets.extend(ccs.iter().map(|&c| nvrtc::Target::Cubin(c)));
        }
        let rows = nvrtc::compile_all(&nv, &targets);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!(
                "NVRTC {}.{} (headers {}), {} modules × {} targets",
                nv.version.0,
                nv.version.1,
                nv.include.display(),
                tinyllama_cuda::kernels::MODULES.len(),
                targets.len()
            );
            println!(
                "{:<12} {:<11} {:>8} {:>10}  result",
                "module", "target", "kernels", "bytes"
            );
            for r in &rows {
                println!(
                    "{:<12} {:<11} {:>8} {:>10}  {}",
                    r.module,
                    r.target,
                    r.kernels,
                    r.bytes,
                    if r.ok { "ok" } else { "FAILED" }
                );
            }
            let res: Vec<_> = rows
                .iter()
                .flat_map(|r| r.resources.iter().map(move |k| (&r.target, k)))
                .collect();
            if !res.is_empty() {
                println!("\nptxas resources per kernel");
                println!(
                    "{:<18} {:<8} {:>9} {:>12} {:>12}",
                    "kernel", "target", "registers", "spill bytes", "stack bytes"
                );
                for (t, k) in res {
                    println!(
                        "{:<18} {:<8} {:>9} {:>12} {:>12}",
                        k.kernel, t, k.registers, k.spill_bytes, k.stack_bytes
                    );
                }
            }
        }
        let failed: Vec<_> = rows.iter().filter(|r| !r.ok).collect();
        for r in &failed {
            eprintln!("---- {} for {} ----\n{}", r.module, r.target, r.log);
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} kernel compilations failed",
                failed.len(),
                rows.len()
            );
        }
        return Ok(());
    }
    let backend = match tinyllama_cuda::parse_device(&a.device)? {
        Some(n) => tinyllama_cuda::gpu_backend(n)
            .with_context(|| format!("cannot run the self-test on `{}`", a.device))?,
        None => tinyllama_cuda::emulator_backend()?,
    };
    use tinyllama_engine::Backend;
    eprintln!("self-test of {} against the CPU backend", backend.name());
    let checks = selftest::run(
        &backend,
        &selftest::Options {
            quick: a.quick,
            seed: a.seed,
        },
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", selftest::table(&checks));
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}
