//! Every task file in ../shared/data/eval loads completely, in the layout we expect, with
//! harness-shaped prompts. Skipped with a `SKIPPED:` line when the directory is absent.

use std::path::Path;
use tinyllama_eval::tasks::{find_file, load, Layout, Task};

#[test]
fn shared_eval_files_load_without_skipping_a_row() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/eval");
    if !dir.is_dir() {
        println!("SKIPPED: {} not found", dir.display());
        return;
    }
    let sizes = [
        (Task::Hellaswag, 10042, Layout::SixLine),
        (Task::Openbookqa, 500, Layout::Foundry),
        (Task::Winogrande, 1267, Layout::Foundry),
        (Task::ArcEasy, 2376, Layout::Foundry),
        (Task::ArcChallenge, 1172, Layout::Foundry),
        (Task::Boolq, 3270, Layout::Foundry),
        (Task::Piqa, 1838, Layout::Foundry),
        (Task::Lambada, 5153, Layout::Foundry),
    ];
    for (task, n, layout) in sizes {
        let l = load(task, &find_file(task, &dir).unwrap()).unwrap();
        assert!(l.skipped.is_empty(), "{:?}", l.skipped_report(3));
        assert_eq!(l.items.len(), n, "{}", task.name());
        assert_eq!(l.layouts.get(&layout), Some(&n), "{}", task.name());
        for (line, item) in &l.items {
            let ctx = &item.requests[0].context;
            let what = format!("{}:{line}: {ctx:?}", task.name());
            assert!(!ctx.ends_with(char::is_whitespace), "{what}");
            for r in &item.requests {
                assert!(r.continuation.starts_with(' '), "{what}");
            }
            match task {
                Task::Piqa | Task::ArcEasy | Task::ArcChallenge => {
                    assert!(ctx.starts_with("Question: "), "{what}");
                    assert!(ctx.ends_with("\nAnswer:"), "{what}");
                    assert!(!ctx.contains("\n\nAnswer:"), "{what}");
                }
                Task::Boolq => {
                    assert!(!ctx.starts_with("Passage: "), "{what}");
                    assert!(ctx.ends_with("?\nAnswer:"), "{what}");
                }
                Task::Hellaswag => assert!(!ctx.contains('['), "{what}"),
                _ => {}
            }
        }
    }
}
