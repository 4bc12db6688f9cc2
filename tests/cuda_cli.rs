//! The CUDA commands end to end, on a machine with or without a GPU and with or without the
//! `cuda` feature: one clear line when CUDA cannot be used, and (CUDA builds) the self-test on
//! the kernel emulator.

use std::process::Command;

fn tinyllama(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .output()
        .expect("run tinyllama");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this machine looks like it has an NVIDIA driver (the usual install locations).
fn has_driver() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
        "/usr/lib/wsl/lib/libcuda.so.1",
        "/usr/local/cuda/compat/libcuda.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

#[test]
fn info_devices_reports_cuda_support() {
    let (ok, out, err) = tinyllama(&["info", "--devices"]);
    assert!(ok, "{err}");
    assert!(out.contains("cpu"), "{out}");
    if cfg!(feature = "cuda") {
        for lib in [
            "CUDA driver",
            "NVRTC",
            "cuBLASLt",
            "NCCL",
            "headers",
            "kernel cache",
        ] {
            assert!(out.contains(lib), "missing {lib}: {out}");
        }
    } else {
        assert!(out.contains("built without CUDA support"), "{out}");
    }
}

#[test]
fn cuda_commands_without_a_usable_gpu_fail_with_one_clear_line() {
    if cfg!(feature = "cuda") && has_driver() {
        return; // a GPU machine: the self-test there is the real check
    }
    for args in [
        vec!["selftest"],
        vec![
            "bench",
            "train",
            "--device",
            "cuda",
            "--preset",
            "test-tiny",
            "--seq",
            "8",
            "--micro-batch",
            "1",
        ],
    ] {
        let (ok, _, err) = tinyllama(&args);
        assert!(!ok, "{args:?} should fail here");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        if cfg!(feature = "cuda") {
            assert!(lines[0].contains("no NVIDIA driver"), "{err}");
        } else {
            assert!(lines[0].contains("built without CUDA support"), "{err}");
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn selftest_passes_on_the_kernel_emulator() {
    let (ok, out, err) = tinyllama(&["selftest", "--device", "cuda:emu", "--quick"]);
    if !ok && err.contains("C++ compiler") {
        eprintln!("skipping: {err}");
        return;
    }
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("27 checks, 27 passed, 0 failed"), "{out}");
    assert!(out.contains("flash attention fwd+bwd"), "{out}");
}
