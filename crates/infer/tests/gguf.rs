//! GGUF export read back with our own reader: metadata, vocabulary, the rotary row
//! permutation and every tensor, for each export type.

use std::path::Path;
use tinyllama_infer::gguf::format::{GgufFile, TensorType, Value};
use tinyllama_infer::gguf::llama::{import, permute_rotary_rows, unpermute_rotary_rows};
use tinyllama_infer::gguf::{export_dir, vocab};
use tinyllama_infer::quant::{dequantize, quantize_q4_0, quantize_q8_0};
use tinyllama_infer::testutil::{random_weights, write_model_dir};
use tinyllama_model::{presets, HostWeights};

fn model(dir: &Path, tied: bool) -> HostWeights {
    let mut cfg = presets::get("micro-1m").unwrap();
    cfg.vocab_size = 96;
    cfg.tie_embeddings = tied;
    let w = random_weights(&cfg, 3, 1.0);
    let tc = r#"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>", "chat_template": "{{ messages }}"}"#;
    write_model_dir(&w, dir, Some(tc)).unwrap();
    w
}

#[test]
fn rotary_permutation_interleaves_halves_and_inverts() {
    // One head of dimension 4 with 1 column: rows (a0 a1 | b0 b1) become (a0 b0 a1 b1).
    let w = [0.0, 1.0, 10.0, 11.0];
    assert_eq!(permute_rotary_rows(&w, 1, 1), vec![0.0, 10.0, 1.0, 11.0]);
    let w: Vec<f32> = (0..48).map(|x| x as f32).collect();
    assert_eq!(
        unpermute_rotary_rows(&permute_rotary_rows(&w, 3, 2), 3, 2),
        w
    );
}

#[test]
fn export_then_read_back_for_every_type() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let dir = tmp.path().join(format!("m{tied}"));
        let w = model(&dir, tied);
        let c = &w.config;
        for ty in [
            TensorType::F32,
            TensorType::F16,
            TensorType::Bf16,
            TensorType::Q8_0,
            TensorType::Q4_0,
        ] {
            let out = tmp.path().join(format!("m-{}-{tied}.gguf", ty.name()));
            let rep = export_dir(&dir, &out, ty).unwrap();
            assert!(rep.kept_f32.is_empty());
            let f = GgufFile::read(&out).unwrap();
            assert_eq!(f.version, 3);
            let u = |k: &str| f.get(k).and_then(|v| v.as_u64()).unwrap() as usize;
            assert_eq!(
                f.get("general.architecture"),
                Some(&Value::Str("llama".into()))
            );
            assert_eq!(u("llama.block_count"), c.n_layers);
            assert_eq!(u("llama.embedding_length"), c.dim);
            assert_eq!(u("llama.attention.head_count_kv"), c.n_kv_heads);
            assert_eq!(u("llama.rope.dimension_count"), c.head_dim());
            assert_eq!(u("llama.context_length"), c.max_seq_len);
            assert_eq!(f.get("llama.rope.freq_base"), Some(&Value::F32(10000.0)));
            assert_eq!(
                f.get("tokenizer.ggml.model"),
                Some(&Value::Str("llama".into()))
            );
            assert_eq!(
                f.get("tokenizer.chat_template"),
                Some(&Value::Str("{{ messages }}".into()))
            );
            assert_eq!(u("tokenizer.ggml.padding_token_id"), 0);
            assert_eq!(f.tensor("output.weight").is_none(), tied);
            assert_eq!(
                f.tensor("blk.1.ffn_down.weight").unwrap().dims,
                vec![c.ffn_dim as u64, c.dim as u64]
            );
            assert_eq!(
                f.tensor("blk.0.attn_norm.weight").unwrap().ty,
                TensorType::F32
            );
            assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty, ty);
            // Every tensor starts aligned.
            assert!(f.tensors.iter().all(|t| t.offset % 32 == 0));

            let (back, v) = import(&out).unwrap();
            assert_eq!(&back.config, c);
            assert_eq!(v.tokens[1], "<s>");
            assert_eq!(v.types[1], vocab::CONTROL);
            assert_eq!(v.types[0], vocab::UNKNOWN);
            for ((s, a), b) in w.specs.iter().zip(&w.tensors).zip(&back.tensors) {
                let want: Vec<f32> = match (ty, s.shape.len()) {
                    (TensorType::F32, _) | (_, 1) => a.clone(),
                    (TensorType::F16, _) => {
                        a.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
                    }
                    (TensorType::Bf16, _) => a
                        .iter()
                        .map(|x| half::bf16::from_f32(*x).to_f32())
                        .collect(),
                    (TensorType::Q8_0, _) => dequantize(&quantize_q8_0(a, s.shape[0], s.shape[1])),
                    (TensorType::Q4_0, _) => dequantize(&quantize_q4_0(a, s.shape[0], s.shape[1])),
                };
                assert_eq!(&want, b, "{} as {}", s.name, ty.name());
            }
        }
    }
}

#[test]
fn vocabulary_scores_follow_merge_order() {
    let tj = serde_json::json!({
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true,
            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "a": 4, "b": 5, "ab": 6, "abb": 7, "bb": 8},
            "merges": ["a b", ["ab", "b"], "b b"]},
        "added_tokens": [{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}]}
    });
    let v = vocab::Vocab::from_json(&tj, &serde_json::Value::Null, 10, 1, 2).unwrap();
    assert_eq!(v.tokens[9], "[PAD9]");
    assert_eq!(v.types, vec![2, 3, 3, 6, 1, 1, 1, 1, 1, 5]);
    assert_eq!(&v.scores[6..9], &[0.0, -1.0, -2.0]);
    assert!(v.scores[4] < -2.0 && v.scores[5] < v.scores[4]);
    assert!(v.add_space_prefix && v.add_bos && !v.add_eos);
    let byte_level = serde_json::json!({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}});
    let e = vocab::Vocab::from_json(&byte_level, &serde_json::Value::Null, 10, 1, 2)
        .err()
        .unwrap();
    assert!(e.to_string().contains("byte-level"));
}

#[test]
fn corrupt_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model(&dir, false);
    let out = tmp.path().join("m.gguf");
    export_dir(&dir, &out, TensorType::Q8_0).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let e = format!(
        "{:#}",
        GgufFile::parse(bytes[..bytes.len() / 2].to_vec())
            .err()
            .unwrap()
    );
    assert!(e.contains("past the end of the file"), "{e}");
    let e = format!(
        "{:#}",
        GgufFile::parse(bytes[..100].to_vec()).err().unwrap()
    );
    assert!(e.contains("truncated"), "{e}");
    let e = format!(
        "{:#}",
        GgufFile::parse(b"GGML\x03\0\0\0".to_vec()).err().unwrap()
    );
    assert!(e.contains("bad magic"), "{e}");
}

#[test]
fn tinystories_vocabulary_exports() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/models/tinystories-llama"
    ));
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "SKIPPED: {} not found (the shared reference data is absent)",
            dir.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ts.gguf");
    export_dir(dir, &out, TensorType::F32).unwrap();
    let (w, v) = import(&out).unwrap();
    let orig = tinyllama_model::hf::load_dir(dir).unwrap();
    assert_eq!(w.tensors, orig.tensors);
    assert_eq!(v.tokens.len(), 2048);
    assert_eq!((v.bos, v.eos, v.unk), (1, 2, Some(0)));
    assert!(v.add_space_prefix);
    // Byte tokens are typed as such, and merged tokens score above single characters.
    assert!(v.types.contains(&vocab::BYTE) || !v.tokens.iter().any(|t| t.starts_with("<0x")));
    let e = v.tokens.iter().position(|t| t == "e\u{2581}").unwrap();
    let single = v.tokens.iter().position(|t| t == "e").unwrap();
    assert!(v.scores[e] > v.scores[single]);
}

/// What llama.cpp decodes from is the GGUF file; decoding the file's weights must give exactly
/// the logits of quantising the Hugging Face weights at load time, the embedding included
/// (llama.cpp reads `token_embd` rows in the file's format).
#[test]
fn decoding_the_exported_weights_equals_quantising_at_load() {
    use tinyllama_infer::model::{DecodeModel, SeqInput};
    use tinyllama_infer::quant::WeightFormat;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hf");
    let mut cfg = presets::get("micro-1m").unwrap();
    cfg.vocab_size = 96;
    cfg.tie_embeddings = true;
    let w = random_weights(&cfg, 5, 1.0);
    let tc = r#"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>"}"#;
    write_model_dir(&w, &src, Some(tc)).unwrap();
    for (ty, f) in [
        (TensorType::Bf16, WeightFormat::Bf16),
        (TensorType::Q8_0, WeightFormat::Q8_0),
        (TensorType::Q4_0, WeightFormat::Q4_0),
    ] {
        let out = tmp.path().join(format!("m-{}.gguf", ty.name()));
        export_dir(&src, &out, ty).unwrap();
        let (from_file, _) = import(&out).unwrap();
        let logits = |m: DecodeModel| {
            let mut st = m.new_state();
            m.forward(&mut [SeqInput {
                state: &mut st,
                tokens: &[1, 17, 42, 5, 88, 23],
                logits: 6,
            }])
            .unwrap()
        };
        let a = logits(DecodeModel::from_host(w.clone(), f).unwrap());
        let b = logits(DecodeModel::from_host(from_file, f).unwrap());
        assert_eq!(a, b, "{}", ty.name());
    }
}
