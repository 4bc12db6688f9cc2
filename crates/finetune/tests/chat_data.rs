//! The chat data layer against transformers (fixtures from scripts/make_chat_fixtures.py) and
//! end to end on JSONL files: formats, malformed lines, truncation, packing, preferences and
//! the validation split.

use std::path::{Path, PathBuf};
use tinyllama_finetune::chat::*;
use tinyllama_infer::conversation::encode_prompt;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("masks.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tokenizer() -> Tokenizer {
    let path = fixture_dir().join("tokenizer.json");
    let inner = tokenizers::Tokenizer::from_file(&path).unwrap();
    let bos = inner.token_to_id("<s>").unwrap();
    let eos = inner.token_to_id("</s>").unwrap();
    Tokenizer::load(&path, bos, eos).unwrap()
}

fn messages(v: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn mask(v: &serde_json::Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() == 1)
        .collect()
}

fn template(f: &serde_json::Value, name: &str) -> ChatTemplate {
    ChatTemplate::from_jinja(f["templates"][name].as_str().unwrap(), "<s>", "</s>").unwrap()
}

/// One template's cases.
/// A fixture case: conversation, input_ids, assistant_masks (None without generation blocks).
type Case = (Vec<Message>, Vec<u32>, Option<Vec<bool>>);

fn cases(f: &serde_json::Value, name: &str) -> Vec<Case> {
    f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["template"] == name)
        .map(|c| {
            let conv = messages(&f["conversations"][c["conversation"].as_u64().unwrap() as usize]);
            let m = c.get("assistant_masks").map(mask);
            (conv, ids(&c["input_ids"]), m)
        })
        .collect()
}

#[test]
fn generation_block_masks_match_transformers() {
    let f = fixture();
    let tok = tokenizer();
    for name in ["zephyr_gen", "chatml_gen"] {
        let t = template(&f, name);
        assert!(t.has_generation_blocks());
        let cs = cases(&f, name);
        assert_eq!(cs.len(), 6);
        for (i, (conv, want_ids, want_mask)) in cs.into_iter().enumerate() {
            let r = render(&t, &tok, &conv).unwrap();
            assert_eq!(r.tokens, want_ids, "{name} conversation {i}: ids");
            assert_eq!(
                r.assistant,
                want_mask.unwrap(),
                "{name} conversation {i}: mask"
            );
            // Same ids as the chat path (`encode_prompt` on the plain render).
            let text = t.render(&conv, false).unwrap();
            assert_eq!(encode_prompt(&tok, &t, &text).unwrap(), r.tokens);
        }
    }
}

#[test]
fn prefix_rule_on_zephyr_equals_the_generation_tag_masks() {
    let f = fixture();
    let tok = tokenizer();
    let plain = template(&f, "zephyr_plain");
    assert!(!plain.has_generation_blocks());
    let gen = cases(&f, "zephyr_gen");
    // The built-in Zephyr format renders no BOS; with add_bos it is put in front, which gives
    // the ids of the fixture template (which starts with `{{ bos_token }}`).
    let builtin = ChatTemplate::zephyr();
    for (i, ((conv, want_ids, _), (_, _, gen_mask))) in
        cases(&f, "zephyr_plain").into_iter().zip(gen).enumerate()
    {
        let gen_mask = gen_mask.unwrap();
        for (what, t) in [("template", &plain), ("built-in", &builtin)] {
            let r = render(t, &tok, &conv).unwrap();
            assert_eq!(r.tokens, want_ids, "{what} conversation {i}: ids");
            assert_eq!(r.assistant, gen_mask, "{what} conversation {i}: mask");
        }
    }
}

#[test]
fn prefix_rule_on_chatml_leaves_out_only_trailing_whitespace() {
    // The ChatML fixture's generation block also holds the newline after `<|im_end|>`; the
    // prefix rule stops before it. Everything else agrees.
    let f = fixture();
    let tok = tokenizer();
    let plain = template(&f, "chatml_plain");
    for ((conv, want_ids, _), (_, _, gen_mask)) in cases(&f, "chatml_plain")
        .into_iter()
        .zip(cases(&f, "chatml_gen"))
    {
        let r = render(&plain, &tok, &conv).unwrap();
        assert_eq!(r.tokens, want_ids);
        for (k, (&ours, &theirs)) in r.assistant.iter().zip(gen_mask.unwrap().iter()).enumerate() {
            if ours != theirs {
                assert!(theirs, "token {k} marked by the prefix rule only");
                let piece = tok.inner().decode(&[r.tokens[k]], false).unwrap();
                assert!(piece.trim().is_empty(), "token {k} {piece:?}");
            }
        }
        let im_end = tok.inner().token_to_id("<|im_end|>").unwrap();
        for (k, &t) in r.tokens.iter().enumerate() {
            if t == im_end && k > 0 && r.assistant[k - 1] {
                assert!(r.assistant[k], "the <|im_end|> closing a reply is marked");
            }
        }
    }
}

#[test]
fn generation_prompts_render_without_markers() {
    let f = fixture();
    for p in f["generation_prompts"].as_array().unwrap() {
        let t = template(&f, p["template"].as_str().unwrap());
        let conv = messages(&f["conversations"][p["conversation"].as_u64().unwrap() as usize]);
        let text = t.render(&conv[..conv.len() - 1], true).unwrap();
        assert_eq!(text, p["text"].as_str().unwrap());
    }
    for c in f["cases"].as_array().unwrap() {
        let t = template(&f, c["template"].as_str().unwrap());
        let conv = messages(&f["conversations"][c["conversation"].as_u64().unwrap() as usize]);
        assert_eq!(t.render(&conv, false).unwrap(), c["text"].as_str().unwrap());
    }
    // The committed tokenizer_config.json loads with its generation-block template.
    let t = ChatTemplate::load(&fixture_dir()).unwrap();
    assert!(t.has_generation_blocks());
    assert_eq!(
        (t.bos_token.as_str(), t.eos_token.as_str()),
        ("<s>", "</s>")
    );
}

fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn opts(seq_len: usize) -> ChatOptions {
    ChatOptions {
        seq_len,
        ..Default::default()
    }
}

const OPENAI: &str = r#"{"messages":[{"role":"system","content":"Be kind."},{"role":"user","content":"Hello, who are you?"},{"role":"assistant","content":"I am the robot."},{"role":"user","content":"What happens next?"},{"role":"assistant","content":"The baker repairs the broken clock."}]}"#;
const SHAREGPT: &str = r#"{"conversations":[{"from":"human","value":"Can you help me?"},{"from":"gpt","value":"Yes, with great care."}]}"#;
const ALPACA: &str =
    r#"{"instruction":"Count the apples.","input":"seven apples","output":"There are seven."}"#;

/// Checks the row invariants: targets are the next input where both are inside the row, and
/// each target position is a masked token of the same conversation.
fn check_rows(rows: &[Row], seq_len: usize) {
    for r in rows {
        assert_eq!((r.inputs.len(), r.targets.len()), (seq_len, seq_len));
        for j in 0..seq_len - 1 {
            if r.targets[j] >= 0 {
                assert_eq!(r.targets[j] as u32, r.inputs[j + 1], "position {j}");
            }
        }
    }
}

#[test]
fn files_in_every_format_with_malformed_lines_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.jsonl",
        &[
            OPENAI,
            "",
            "{not json",
            SHAREGPT,
            r#"{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}"#,
            r#"{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"  "}]}"#,
            r#"{"messages":[{"role":"user","content":"only a question"}]}"#,
            r#"{"text":"raw","source":"web"}"#,
            ALPACA,
            r#"{"prompt":"Q","chosen":"a","rejected":"b"}"#,
            "{not json either",
        ],
    );
    let b = write(dir.path(), "b.jsonl", &[]);
    std::fs::write(&b, "\n  \n").unwrap();
    let tok = tokenizer();
    let t = ChatTemplate::zephyr();
    let data = load_sft(&[a.clone(), b.clone()], &t, &tok, &opts(128)).unwrap();
    let r = &data.report;
    assert_eq!(r.lines_read, 10);
    assert_eq!(r.conversations_kept, 3);
    assert_eq!(r.formats["openai"], 1);
    assert_eq!(r.formats["sharegpt"], 1);
    assert_eq!(r.formats["alpaca"], 1);
    let at = |m: Malformed| {
        let c = &r.malformed[&m];
        (c.count, c.first.clone())
    };
    let a_ = a.display().to_string();
    assert_eq!(at(Malformed::BadJson), (2, format!("{a_}:3")));
    assert_eq!(at(Malformed::UnknownRole), (1, format!("{a_}:5")));
    assert_eq!(at(Malformed::EmptyAssistant), (1, format!("{a_}:6")));
    assert_eq!(at(Malformed::NoAssistant), (1, format!("{a_}:7")));
    assert_eq!(at(Malformed::UnrecognisedShape), (1, format!("{a_}:8")));
    assert!(r.malformed[&Malformed::UnrecognisedShape]
        .detail
        .contains("`source`"));
    assert_eq!(at(Malformed::WrongKind), (1, format!("{a_}:10")));
    assert_eq!(at(Malformed::EmptyFile), (1, b.display().to_string()));
    assert_eq!(r.malformed_total(), 8);
    // One row per conversation, targets only on replies.
    assert_eq!(data.rows.len(), 3);
    check_rows(&data.rows, 128);
    assert_eq!(r.rows, 3);
    assert_eq!(
        r.target_tokens,
        data.rows.iter().map(Row::target_count).sum::<usize>()
    );
    assert!(r.target_tokens > 0 && r.target_tokens < r.total_tokens);
    // The last target of each row is the EOS closing the last reply.
    for row in &data.rows {
        let last = row.targets.iter().rposition(|&t| t >= 0).unwrap();
        assert_eq!(row.targets[last] as u32, tok.eos_id);
    }
    // Report: JSON and table.
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["malformed"]["bad_json"]["count"], 2);
    assert_eq!(json["conversations_kept"], 3);
    let table = r.to_string();
    assert!(table.contains("no assistant turn"), "{table}");
    assert!(table.contains(&format!("first at {a_}:7")), "{table}");

    // train_on = all: more targets, same rows.
    let all = load_sft(
        &[a],
        &t,
        &tok,
        &ChatOptions {
            train_on: TrainOn::All,
            ..opts(128)
        },
    )
    .unwrap();
    assert!(all.report.target_tokens > r.target_tokens);
    for row in &all.rows {
        let n = row.inputs.iter().rposition(|&x| x != PAD_INPUT_ID).unwrap();
        assert!(row.targets[..n].iter().all(|&t| t >= 0));
    }
}

#[test]
fn nothing_usable_names_file_reason_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "bad.jsonl",
        &[
            r#"{"messages":[{"role":"bot","content":"x"}]}"#,
            r#"{"messages":[{"role":"tool","content":"x"}]}"#,
            "[1]",
        ],
    );
    let e = load_sft(&[a], &ChatTemplate::zephyr(), &tokenizer(), &opts(64))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl"), "{e}");
    assert!(e.contains("unknown role (2x, first at"), "{e}");
    assert!(e.contains("bad.jsonl:1"), "{e}");
    assert!(
        e.contains("fix: use the roles system, user and assistant"),
        "{e}"
    );
    let empty = write(dir.path(), "empty.jsonl", &[]);
    std::fs::write(&empty, "").unwrap();
    let e = load_sft(&[empty], &ChatTemplate::zephyr(), &tokenizer(), &opts(64))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty file"), "{e}");
    let e = load_sft(
        &[dir.path().join("missing.jsonl")],
        &ChatTemplate::zephyr(),
        &tokenizer(),
        &opts(64),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("missing.jsonl"), "{e:#}");
}

#[test]
fn truncation_and_drop_are_counted() {
    let tok = tokenizer();
    let t = ChatTemplate::zephyr();
    let long = messages(&serde_json::json!([
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "The robot carries seven apples before lunch. What happens next?"},
        {"role": "assistant", "content": "The baker repairs the broken clock at dawn, again and again."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Done."}
    ]));
    let short = vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello."),
    ];
    let full = render(&t, &tok, &long).unwrap().len();
    let last = render(
        &t,
        &tok,
        &[long[0].clone(), long[3].clone(), long[4].clone()],
    )
    .unwrap();
    // Fits only without the first exchange.
    let seq_len = last.len() - 1 + 2;
    assert!(full > seq_len + 1);
    let convs = vec![long.clone(), short.clone()];
    let d = sft_rows_from_conversations(&convs, &t, &tok, &opts(seq_len)).unwrap();
    assert_eq!(
        (
            d.report.conversations_kept,
            d.report.truncated,
            d.report.dropped_too_long
        ),
        (2, 1, 0)
    );
    // The truncated row is exactly system + last exchange.
    assert_eq!(
        &d.rows[0].inputs[..last.len() - 1],
        &last.tokens[..last.len() - 1]
    );
    check_rows(&d.rows, seq_len);
    // overflow = drop.
    let d = sft_rows_from_conversations(
        &convs,
        &t,
        &tok,
        &ChatOptions {
            overflow: Overflow::Drop,
            ..opts(seq_len)
        },
    )
    .unwrap();
    assert_eq!(
        (
            d.report.conversations_kept,
            d.report.truncated,
            d.report.dropped_too_long
        ),
        (1, 0, 1)
    );
    // Even the last exchange too long: dropped, and with nothing left an error.
    let e = sft_rows_from_conversations(&convs[..1], &t, &tok, &opts(4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("longer than seq_len 4"), "{e}");
}

#[test]
fn packing_keeps_every_target_and_never_crosses_conversations() {
    let tok = tokenizer();
    let f = fixture();
    let t = template(&f, "chatml_gen");
    let convs: Vec<Vec<Message>> = f["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(messages)
        .collect();
    let seq_len = 160;
    let unpacked = sft_rows_from_conversations(&convs, &t, &tok, &opts(seq_len)).unwrap();
    let packed = sft_rows_from_conversations(
        &convs,
        &t,
        &tok,
        &ChatOptions {
            pack: true,
            ..opts(seq_len)
        },
    )
    .unwrap();
    assert!(packed.rows.len() < unpacked.rows.len());
    assert_eq!(packed.report.target_tokens, unpacked.report.target_tokens);
    check_rows(&packed.rows, seq_len);
    // Rebuild the expected targets from the conversations: the packed rows hold the
    // conversations back to back; a conversation's first token (BOS) is never a target.
    let rendered: Vec<Rendered> = convs.iter().map(|c| render(&t, &tok, c).unwrap()).collect();
    let mut k = 0;
    for row in &packed.rows {
        // The row's stream: as many whole conversations as fit in seq_len + 1 tokens; all but
        // its last token are inputs.
        let mut stream_len = 0;
        let mut n = k;
        while n < rendered.len() && stream_len + rendered[n].len() <= seq_len + 1 {
            stream_len += rendered[n].len();
            n += 1;
        }
        assert!(row.inputs[stream_len - 1..]
            .iter()
            .all(|&x| x == PAD_INPUT_ID));
        let mut pos = 0;
        while k < n {
            let r = &rendered[k];
            for (i, (&id, &m)) in r.tokens.iter().zip(&r.assistant).enumerate() {
                if pos + i < stream_len - 1 {
                    assert_eq!(row.inputs[pos + i], id);
                }
                if pos + i > 0 {
                    let want = if m && i > 0 { id as i32 } else { -1 };
                    assert_eq!(row.targets[pos + i - 1], want, "conv {k} token {i}");
                }
            }
            pos += r.len();
            k += 1;
        }
    }
    assert_eq!(k, rendered.len());
}

#[test]
fn preference_pairs_mask_only_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "prefs.jsonl",
        &[
            r#"{"prompt":"Why is the sky blue?","chosen":"Because of scattering.","rejected":"No idea."}"#,
            r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."},{"role":"user","content":"Count."}],"chosen":[{"role":"assistant","content":"One, two."}],"rejected":[{"role":"assistant","content":"No."}]}"#,
            r#"{"messages":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"}],"chosen":"x","rejected":"y"}"#,
            OPENAI,
        ],
    );
    let tok = tokenizer();
    let f = fixture();
    let t = template(&f, "zephyr_gen");
    let d = load_preferences(std::slice::from_ref(&p), &t, &tok, &opts(96)).unwrap();
    assert_eq!(d.pairs.len(), 2);
    let p_ = p.display().to_string();
    assert_eq!(
        d.report.malformed[&Malformed::PromptNotUser].first,
        format!("{p_}:3")
    );
    assert_eq!(
        d.report.malformed[&Malformed::WrongKind].first,
        format!("{p_}:4")
    );
    let pair = &d.pairs[1];
    assert_eq!(pair.origin, format!("{p_}:2"));
    for (r, reply) in [(&pair.chosen, "One, two."), (&pair.rejected, "No.")] {
        let marked: Vec<u32> = r
            .tokens
            .iter()
            .zip(&r.assistant)
            .filter(|(_, &m)| m)
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(
            tok.inner().decode(&marked, false).unwrap(),
            format!("{reply}</s>")
        );
        // The prompt's earlier assistant turn is context, not marked; the prompt is shared.
        let prompt_len = r.assistant.iter().position(|&m| m).unwrap();
        assert_eq!(&r.tokens[..prompt_len], &pair.chosen.tokens[..prompt_len]);
    }
    let (c, rj) = pair_rows(pair, 96);
    check_rows(&[c.clone(), rj.clone()], 96);
    assert_eq!(
        c.target_count(),
        pair.chosen.assistant.iter().filter(|&&m| m).count()
    );
    assert_eq!(
        rj.target_count(),
        pair.rejected.assistant.iter().filter(|&&m| m).count()
    );
    // Built-in Zephyr (prefix rule) gives the same pairs.
    let z = load_preferences(
        std::slice::from_ref(&p),
        &ChatTemplate::zephyr(),
        &tok,
        &opts(96),
    )
    .unwrap();
    assert_eq!(z.pairs[1].chosen, pair.chosen);
    // A seq_len that needs the prompt's first exchange dropped.
    let short = pair.chosen.len().max(pair.rejected.len()) - 3;
    let d = load_preferences(&[p], &t, &tok, &opts(short)).unwrap();
    assert_eq!(d.report.truncated, 1);
    assert!(d.pairs[1].chosen.len() <= short + 1);
    assert_eq!(
        d.pairs[1].chosen.assistant.iter().filter(|&&m| m).count(),
        pair.chosen.assistant.iter().filter(|&&m| m).count()
    );
}

#[test]
fn validation_split_by_fraction_and_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"messages":[{{"role":"user","content":"question {i}"}},{{"role":"assistant","content":"answer {i}"}}]}}"#
            )
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let a = write(dir.path(), "train.jsonl", &refs);
    let tok = tokenizer();
    let t = ChatTemplate::zephyr();
    let v = Validation::Fraction {
        fraction: 0.25,
        seed: 3,
    };
    let (train, valid) =
        load_sft_with_validation(std::slice::from_ref(&a), &v, &t, &tok, &opts(64)).unwrap();
    let valid = valid.unwrap();
    assert_eq!(train.rows.len() + valid.rows.len(), 60);
    assert!(!valid.rows.is_empty() && valid.rows.len() < 30);
    assert!(valid.report.files[0].contains("held out (seed 3)"));
    // Reversed file order: the same conversations are held out.
    let mut rev = refs.clone();
    rev.reverse();
    let b = write(dir.path(), "rev.jsonl", &rev);
    let (_, valid2) = load_sft_with_validation(&[b], &v, &t, &tok, &opts(64)).unwrap();
    let mut x: Vec<_> = valid.rows.iter().map(|r| r.inputs.clone()).collect();
    let mut y: Vec<_> = valid2
        .unwrap()
        .rows
        .iter()
        .map(|r| r.inputs.clone())
        .collect();
    x.sort();
    y.sort();
    assert_eq!(x, y);
    // From a file.
    let vf = write(dir.path(), "valid.jsonl", &refs[..5]);
    let (_, valid) = load_sft_with_validation(
        std::slice::from_ref(&a),
        &Validation::Files(vec![vf]),
        &t,
        &tok,
        &opts(64),
    )
    .unwrap();
    assert_eq!(valid.unwrap().rows.len(), 5);
    // A bad fraction is refused.
    let bad = Validation::Fraction {
        fraction: 1.5,
        seed: 0,
    };
    assert!(load_sft_with_validation(&[a], &bad, &t, &tok, &opts(64)).is_err());
}
