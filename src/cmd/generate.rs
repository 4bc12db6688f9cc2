use super::infer_opts::{speed_report, ModelOpts, SamplingOpts};
use anyhow::Result;
use clap::Args;
use std::io::Write;
use tinyllama_infer::generate::{generate_batch, generate_text};
use tinyllama_infer::GenParams;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// Text to continue (BOS is prepended). Repeat to generate for several prompts as one batch.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    /// Stop when the text contains this string (repeatable; the string is not printed).
    #[arg(long)]
    pub stop: Vec<String>,
    /// With --draft-model: also generate without the draft and report the speedup.
    #[arg(long)]
    pub compare_plain: bool,
    /// Report prompt and generation speed on stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object per prompt (prompt ids, generated ids, text, finish reason)
    /// instead of streaming text, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if a.max_new_tokens == 0 {
        anyhow::bail!("--max-new-tokens must be at least 1");
    }
    let mut loaded = a.model.load()?;
    let (runner, tok) = (&loaded.runner, &loaded.tokenizer);
    let params = GenParams {
        max_tokens: a.max_new_tokens,
        sampling: a.sampling.params()?,
        seed: a.sampling.seed,
        stop_ids: vec![tok.eos_id],
    };
    let prompts = a
        .prompt
        .iter()
        .map(|p| tok.encode_with_bos(p))
        .collect::<Result<Vec<_>>>()?;
    if a.verbose {
        let m = &runner.target;
        eprintln!(
            "{} ({} weights, {:.1} MiB, {} kernels, {} threads){}",
            loaded.name,
            m.format.name(),
            m.weight_bytes() as f64 / (1 << 20) as f64,
            tinyllama_infer::simd::describe(tinyllama_infer::simd::active()),
            rayon::current_num_threads(),
            runner
                .draft
                .as_ref()
                .map(|d| format!(
                    "; draft {} with k = {}",
                    a.model.draft_model.as_ref().unwrap().display(),
                    d.k
                ))
                .unwrap_or_default()
        );
    }
    if a.json {
        let outs = generate_batch(runner, &prompts, &vec![params; prompts.len()])?;
        for (p, o) in prompts.iter().zip(&outs) {
            let mut ts = tinyllama_infer::text::TextStream::new(p);
            let mut text = ts.push(tok, &o.tokens)?;
            text.push_str(&ts.flush(tok)?);
            if let Some(at) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(at);
            }
            println!(
                "{}",
                serde_json::json!({
                    "prompt_ids": p,
                    "ids": o.tokens,
                    "text": text,
                    "finish": o.finish.describe(),
                })
            );
        }
        return Ok(());
    }
    if prompts.len() > 1 {
        // Several prompts: decoded together, printed when all are done.
        let t0 = std::time::Instant::now();
        let outs = generate_batch(runner, &prompts, &vec![params; prompts.len()])?;
        let secs = t0.elapsed().as_secs_f64();
        let mut total = 0;
        for (i, o) in outs.iter().enumerate() {
            let mut ts = tinyllama_infer::text::TextStream::new(&prompts[i]);
            let mut text = ts.push(tok, &o.tokens)?;
            text.push_str(&ts.flush(tok)?);
            if let Some(at) = a.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(at);
            }
            println!("[{i}] {}{}", a.prompt[i], text);
            total += o.tokens.len();
        }
        if a.verbose {
            eprintln!(
                "{} prompts, {total} tokens generated in {secs:.3}s ({:.1} tok/s overall)",
                outs.len(),
                total as f64 / secs
            );
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let res = generate_text(runner, tok, &prompts[0], params.clone(), &a.stop, |s| {
        // A closed pipe (e.g. `| head`) ends generation quietly.
        out.write_all(s.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    })?;
    let _ = writeln!(out);
    if a.verbose {
        eprintln!("{}", speed_report(&res.output));
    }
    if a.compare_plain && runner.draft.is_some() {
        loaded.runner.draft = None;
        let base = generate_text(
            &loaded.runner,
            &loaded.tokenizer,
            &prompts[0],
            params,
            &a.stop,
            |_| true,
        )?;
        let t_spec = res.output.prefill_time + res.output.decode_time;
        let t_plain = base.output.prefill_time + base.output.decode_time;
        eprintln!(
            "without the draft: {} tokens in {:.3}s; speculative decoding speedup {:.2}x{}",
            base.output.tokens.len(),
            t_plain.as_secs_f64(),
            (t_plain.as_secs_f64() / base.output.tokens.len().max(1) as f64)
                / (t_spec.as_secs_f64() / res.output.tokens.len().max(1) as f64),
            if base.output.tokens == res.output.tokens {
                " (identical output)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
