//! After a SIGKILL: the temporary files the killed run left (`.NAME.tmp.PID` in `work/` and
//! next to the outputs) are removed by the next run; and a later stage run on inputs that
//! changed since the scan says so, naming the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tinyllama_data::config::{OutputFormat, PipelineConfig, SourceConfig};
use tinyllama_data::pipeline::{run_stage, run_with, RunOptions, Stage};

fn config(dir: &Path) -> PipelineConfig {
    let inp = dir.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    let docs: String = (0..20)
        .map(|i| {
            serde_json::json!({"text": format!("Document {i} is about harbours, ships and the sea in winter.")})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(inp.join("a.jsonl"), docs).unwrap();
    let src = SourceConfig::new("s", &[&inp.display().to_string()]);
    let mut cfg = PipelineConfig::new(dir.join("out"), vec![src]);
    cfg.output.format = OutputFormat::Jsonl;
    cfg.dedup.near = false;
    cfg
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// A PID with no process behind it on this machine.
fn dead_pid() -> u32 {
    (4_000_000..4_100_000)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

fn plant(path: PathBuf, age: Duration) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    path
}

#[test]
fn temporary_files_of_a_killed_run_are_removed_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    run_with(&cfg, &quiet()).unwrap();
    let out = dir.path().join("out");
    let pid = dead_pid();
    let old = Duration::from_secs(600);
    let leftovers = [
        plant(out.join(format!("work/emit/.00000.train.tmp.{pid}")), old),
        plant(out.join(format!("work/scan/.00000.sig.tmp.{pid}")), old),
        plant(out.join(format!("s/.shard-00000.jsonl.zst.tmp.{pid}")), old),
        plant(out.join(format!(".report.json.tmp.{pid}")), old),
    ];
    // Written a moment ago by the killed run: an unsharded run owns it, so it goes too.
    let fresh = plant(
        out.join(format!("work/emit/.00002.train.tmp.{pid}")),
        Duration::ZERO,
    );
    // Kept: a live process's file and a non-temporary name.
    let kept = [
        plant(
            out.join(format!("work/emit/.00001.train.tmp.{}", std::process::id())),
            old,
        ),
        plant(out.join(format!("work/emit/notes.tmp.{pid}")), old),
    ];
    run_with(&cfg, &quiet()).unwrap();
    assert!(!fresh.exists(), "{} was left", fresh.display());
    for p in &leftovers {
        assert!(!p.exists(), "{} was left", p.display());
    }
    for p in &kept {
        assert!(p.exists(), "{} was removed", p.display());
    }
}

#[test]
fn a_shard_removes_only_its_own_fresh_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let work = dir.path().join("out/work/scan");
    let pid = dead_pid();
    // Shard 0 of 2 owns input file 0; file 1's may be in progress on another machine.
    let mine = plant(work.join(format!(".00000.sig.tmp.{pid}")), Duration::ZERO);
    let theirs = plant(work.join(format!(".00001.sig.tmp.{pid}")), Duration::ZERO);
    let opts = RunOptions {
        quiet: true,
        num_shards: 2,
        shard_index: 0,
        ..Default::default()
    };
    run_stage(&cfg, Stage::Scan, &opts).unwrap();
    assert!(!mine.exists());
    assert!(theirs.exists());
}

#[test]
fn changed_inputs_are_named_when_a_later_stage_cannot_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    run_stage(&cfg, Stage::Scan, &quiet()).unwrap();
    run_stage(&cfg, Stage::Merge, &quiet()).unwrap();
    let a = dir.path().join("in/a.jsonl");
    let mut text = std::fs::read_to_string(&a).unwrap();
    text.push_str("{\"text\": \"One more document about lighthouses on the coast.\"}\n");
    std::fs::write(&a, text).unwrap();
    let err = run_stage(&cfg, Stage::Emit, &quiet()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("inputs changed")
            && msg.contains("a.jsonl")
            && msg.contains("run the scan and merge stages again"),
        "{msg}"
    );
    // Before any merge the message says that instead.
    let fresh = tempfile::tempdir().unwrap();
    let cfg2 = config(fresh.path());
    let msg = format!("{:#}", run_stage(&cfg2, Stage::Emit, &quiet()).unwrap_err());
    assert!(msg.contains("has not completed"), "{msg}");
}
