//! The CUDA backend on the kernel emulator (the kernel sources compiled for the CPU), checked
//! against the CPU backend: every op, then a training step. Needs a C++ compiler; skipped with a
//! message when there is none.

use tinyllama_cuda::selftest::{self, Options};

fn backend() -> Option<tinyllama_cuda::CudaBackend> {
    match tinyllama_cuda::emulator_backend() {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipping: the kernel emulator is unavailable: {e:#}");
            None
        }
    }
}

#[test]
fn every_kernel_and_a_training_step_match_the_cpu_backend_on_the_emulator() {
    let Some(be) = backend() else { return };
    let checks = selftest::run(
        &be,
        &Options {
            quick: true,
            seed: 7,
        },
    );
    let table = selftest::table(&checks);
    eprintln!("{table}");
    assert!(checks.iter().all(|c| c.pass), "{table}");
}
