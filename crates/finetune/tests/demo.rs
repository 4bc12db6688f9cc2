//! The fine-tuning demo end to end on a smaller setting than `tinyllama finetune`'s default
//! (fewer dialogues and pairs; the pre-training demo at its default size, because the facts it
//! learns are what the held-out questions ask): SFT must teach the model to answer held-out
//! questions in the chat format, and DPO must learn its preferences without undoing that.

use tinyllama_finetune::demo::{self, DemoOptions};

#[test]
fn finetune_demo_raises_held_out_answer_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = DemoOptions::new(dir.path().join("ft"), dir.path().join("pre"));
    o.quiet = true;
    o.dialogues = 2000;
    o.pairs = 600;
    o.eval_limit = 120;
    let s = demo::run(&o).unwrap();
    println!("{}", demo::describe(&s));
    let facts = |a: &demo::Accuracy| a.facts_generated.0 as f64 / a.facts_generated.1.max(1) as f64;
    // Before SFT the model has never seen the chat format: it does not answer in it.
    assert!(facts(&s.before) < 0.1, "{:?}", s.before);
    // After SFT it answers held-out fact questions (never asked in any dialogue) correctly.
    assert!(
        facts(&s.after_sft) >= facts(&s.before) + 0.3,
        "after SFT {:?} vs before {:?}",
        s.after_sft,
        s.before
    );
    assert!(s.after_sft.facts_choice.0 >= s.before.facts_choice.0);
    // DPO learned to prefer the right answers on its own held-out pairs, and the chat model
    // it leaves still answers far above where SFT started.
    let recs = tinyllama_train::metrics::MetricsWriter::read_all(&s.dpo.run_dir);
    let v = recs
        .last()
        .unwrap()
        .val_dpo
        .expect("DPO validation pairs were scored");
    assert!(v.accuracy > 0.5 && v.margin > 0.0, "{v:?}");
    assert!(
        facts(&s.after_dpo) >= facts(&s.before) + 0.3,
        "after DPO {:?}",
        s.after_dpo
    );
    assert!(s.model_dir.join("tokenizer_config.json").exists());
}
