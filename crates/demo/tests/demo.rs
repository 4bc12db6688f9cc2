//! The embedded demo end to end at its default size and seed: the trained model beats the
//! unigram baseline by a wide margin and answers held-out questions well above chance.

#[test]
fn demo_learns_and_answers_held_out_questions_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tinyllama_demo::DemoOptions { quiet: true, ..tinyllama_demo::DemoOptions::new(dir.path().join("demo")) };
    let s = tinyllama_demo::run(&opts).unwrap();
    println!("{}", tinyllama_demo::describe(&s, &opts.dir));
    assert!(s.val_loss < s.unigram_loss - 1.5, "held-out loss {} vs unigram {}", s.val_loss, s.unigram_loss);
    let chance = s.qa.chance;
    assert!(
        s.qa.overall() > chance + 0.2,
        "held-out QA accuracy {:.3} is not well above chance {chance}",
        s.qa.overall()
    );
    assert!(s.export_dir.as_ref().unwrap().join("tokenizer.json").exists());
    assert!(s.plot.as_ref().unwrap().exists());
}
