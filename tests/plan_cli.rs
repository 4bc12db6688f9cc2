//! `tinyllama plan` end to end: the TinyLlama run as JSON, and a user mistake as one line.

use std::process::Command;

fn tinyllama(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyllama"))
        .args(args)
        .output()
        .expect("run tinyllama")
}

#[test]
fn plan_prints_json_for_the_tinyllama_run() {
    let out = tinyllama(&[
        "plan",
        "--preset",
        "tinyllama-1.1b",
        "--tokens",
        "3T",
        "--gpus",
        "16",
        "--gpu-type",
        "A100-40G",
        "--tokens-per-sec-per-gpu",
        "24000",
        "--micro-batch",
        "8",
        "--zero-stage",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let days = v["training"]["wall_clock_days"].as_f64().unwrap();
    assert!(
        (days - 3e12 / (16.0 * 24_000.0) / 86_400.0).abs() < 1e-9,
        "{days}"
    );
    assert_eq!(v["memory"]["without_recompute"]["fits"], true);
}

#[test]
fn plan_rejects_compute_with_gpus_in_one_line() {
    let out = tinyllama(&["plan", "--compute", "1e21", "--gpus", "8"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --compute"), "{err}");
    let out = tinyllama(&["plan", "--compute", "1e21", "--gpu-type", "B200"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown GPU type `B200`") && err.contains("H100-SXM"),
        "{err}"
    );
}
