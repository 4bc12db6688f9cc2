//! The CUDA backend on the kernel emulator (the kernel sources compiled for the CPU), checked
//! against the CPU backend: every op, then a training step. Needs a C++ compiler; skipped with a
//! message when there is none.

use tinyllama_cuda::selftest::{self, Options};

fn check(reverse: bool, seed: u64) {
    let be = match tinyllama_cuda::emulator_backend_ordered(reverse) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipping: the kernel emulator is unavailable: {e:#}");
            return;
        }
    };
    let checks = selftest::run(&be, &Options { quick: true, seed });
    let table = selftest::table(&checks);
    eprintln!("{table}");
    assert!(checks.iter().all(|c| c.pass), "{table}");
}

#[test]
fn every_kernel_and_a_training_step_match_the_cpu_backend_on_the_emulator() {
    check(false, 7);
}

/// The same with the threads between barriers run last-to-first: a kernel that reads shared
/// data another thread writes without a barrier in between fails in one of the two orders.
#[test]
fn results_do_not_depend_on_the_order_threads_run_between_barriers() {
    check(true, 8);
}
