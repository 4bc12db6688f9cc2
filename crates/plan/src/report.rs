//! The plain-text report of a [`Plan`].

use std::fmt::Write;

use crate::compute::RateSource;
use crate::gpus::{Gpu, GIB};
use crate::{BudgetSource, Plan};

/// `1.10B`, `69.3B`, `3.00T`, `920M`: three significant digits with a K/M/B/T/P suffix.
pub fn count(x: f64) -> String {
    let units = [(1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    for (scale, u) in units {
        if x.abs() >= scale {
            return format!("{}{u}", sig3(x / scale));
        }
    }
    sig3(x)
}

fn sig3(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `5.76e23`.
pub fn sci(x: f64) -> String {
    format!("{x:.3e}")
}

/// Bytes as GiB (or MiB below 1 GiB).
pub fn bytes(b: f64) -> String {
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    }
}

/// An integer with thousands separators.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.chars().count() > width {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

fn gpu_line(g: &Gpu) -> String {
    format!(
        "{} ({} TFLOP/s bf16 dense, {} GiB)",
        g.name, g.bf16_tflops, g.memory_gib
    )
}

/// The catalogue as a table.
pub fn catalogue(gpus: &[Gpu]) -> String {
    let mut s = format!(
        "{:<12} {:>16} {:>11} {:>12}  aliases\n",
        "GPU", "bf16 TFLOP/s", "memory", "$/GPU-hour"
    );
    for g in gpus {
        let _ = writeln!(
            s,
            "{:<12} {:>16} {:>7} GiB {:>12}  {}",
            g.name,
            g.bf16_tflops,
            g.memory_gib,
            g.price_per_hour
                .map(|p| format!("{p:.2}"))
                .unwrap_or_else(|| "-".into()),
            g.aliases.join(", ")
        );
    }
    s.push_str(
        "(dense bf16 peaks with f32 accumulation; memory in GiB; prices are rough 2024-25 \
         on-demand rates, override with --price)\n",
    );
    s
}

/// Renders the plan as an aligned report.
pub fn render(p: &Plan) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "tinyllama plan: estimates from first-order formulas, not measurements\n"
    );

    if let Some(m) = &p.model {
        let mut line = format!("{}: {} parameters", m.source, count(m.params));
        if let Some(ne) = m.non_embedding_params {
            let _ = write!(line, " ({} non-embedding)", count(ne));
        }
        let _ = writeln!(w, "{:<12}{line}", "model");
        if let Some(c) = &m.config {
            let _ = writeln!(
                w,
                "{:<12}{} layers, d {}, {}/{} query/KV heads, SwiGLU {}, vocab {}, context {}",
                "",
                c.n_layers,
                c.dim,
                c.n_heads,
                c.n_kv_heads,
                c.ffn_dim,
                c.vocab_size,
                c.max_seq_len
            );
        }
    }
    if let Some(d) = p.tokens {
        let _ = writeln!(w, "{:<12}{} tokens", "data", count(d));
    }
    if let Some(g) = &p.gpu {
        let n = p
            .request
            .gpus
            .map(|n| format!("{n} × "))
            .unwrap_or_default();
        let _ = writeln!(w, "{:<12}{n}{}", "hardware", gpu_line(g));
    }
    if let Some(b) = &p.budget {
        let how = match b.source {
            BudgetSource::Compute => "given (--compute)".to_string(),
            BudgetSource::Hardware => format!(
                "{} GPUs × {} h at the utilisation below",
                p.request.gpus.unwrap_or(1),
                b.hours.unwrap_or(0.0)
            ),
            BudgetSource::Run => "6·N·D of this run".to_string(),
        };
        let _ = writeln!(w, "{:<12}{} FLOPs, {how}", "compute", sci(b.flops));
        if b.source == BudgetSource::Compute {
            if let (Some(h), Some(g)) = (b.gpu_hours, &p.gpu) {
                let mut line = format!(
                    "{} {}-hours at {:.0}% MFU",
                    thousands(h),
                    g.name,
                    p.training
                        .as_ref()
                        .and_then(|t| t.mfu)
                        .or(p.request.mfu)
                        .unwrap_or(crate::DEFAULT_MFU)
                        * 100.0
                );
                if let Some(c) = b.cost_usd {
                    let _ = write!(line, ", ${}", thousands(c));
                }
                let _ = writeln!(w, "{:<12}{line}", "");
            }
        }
    }

    if let Some(c) = &p.chinchilla {
        let _ = writeln!(
            w,
            "\nChinchilla-optimal size for {} FLOPs (C ≈ 6·N·D)",
            sci(c.compute)
        );
        let _ = writeln!(
            w,
            "  {:<34}{:>9}{:>9}{:>14}{:>12}",
            "", "params", "tokens", "tokens/param", "pred. loss"
        );
        let row = |w: &mut String, label: &str, pt: &crate::chinchilla::Point, extra: &str| {
            let _ = writeln!(
                w,
                "  {:<34}{:>9}{:>9}{:>14.1}{:>12.3}{extra}",
                label,
                count(pt.params),
                count(pt.tokens),
                pt.tokens_per_param,
                pt.predicted_loss
            );
        };
        row(
            w,
            &format!("rule: {:.0} tokens/parameter", c.tokens_per_param_rule),
            &c.rule,
            "",
        );
        row(w, "parametric fit L(N,D), minimum", &c.parametric, "");
        if let Some(r) = &c.run {
            row(
                w,
                "this run",
                &r.point,
                &format!("  (+{:.3} vs the fit's optimum at 6ND)", r.excess_loss),
            );
            let line = format!(
                "For {} parameters the rule's optimum is {} tokens (this run trains on {:.1}× \
                 that); the fit's optimum for this size is {} tokens.",
                count(r.point.params),
                count(r.rule_tokens_for_params),
                r.times_rule_tokens,
                count(r.parametric_tokens_for_params)
            );
            let _ = write!(w, "{}", wrap(&line, "  ", 96));
        }
        let _ = writeln!(
            w,
            "  Fit: L(N,D) = {} + {}/N^{} + {}/D^{}; N_opt = G·(C/6)^{:.4}, G = {:.4}",
            c.fit.e, c.fit.a, c.fit.alpha, c.fit.b, c.fit.beta, c.fit.params_exponent, c.fit.g
        );
        let _ = write!(w, "{}", wrap(&c.why_they_differ, "  ", 96));
    }

    if let Some(t) = &p.training {
        let _ = writeln!(w, "\nTraining");
        let f = &t.flops_per_token;
        let attn = match t.seq_len {
            Some(sl) => format!(" + attention {} (seq {sl})", sci(f.attention)),
            None => " (no attention term without an architecture)".into(),
        };
        let _ = writeln!(
            w,
            "  {:<18}{} = 6N {}{attn}",
            "FLOPs/token",
            sci(f.total),
            sci(f.matmul)
        );
        let _ = writeln!(
            w,
            "  {:<18}{} (6ND: {})",
            "total FLOPs",
            sci(t.total_flops),
            sci(t.six_nd)
        );
        if let Some(tp) = t.tokens_per_sec_per_gpu {
            let src = if t.rate_source == Some(RateSource::Throughput) {
                "given"
            } else {
                "from MFU"
            };
            let mut line = format!("{} tokens/s per GPU ({src})", thousands(tp));
            if let Some(all) = t.tokens_per_sec {
                let _ = write!(line, ", {} tokens/s in all", thousands(all));
            }
            let _ = writeln!(w, "  {:<18}{line}", "throughput");
        }
        if let Some(m) = t.mfu {
            let src = match t.rate_source {
                Some(RateSource::Throughput) => "derived from the throughput",
                Some(RateSource::Mfu) => "given",
                _ => "assumed default",
            };
            let _ = writeln!(w, "  {:<18}{:.1}% ({src})", "MFU", m * 100.0);
        }
        if let Some(h) = t.wall_clock_hours {
            let _ = writeln!(
                w,
                "  {:<18}{:.1} days ({} hours)",
                "wall-clock",
                h / 24.0,
                thousands(h)
            );
        }
        if let Some(gh) = t.gpu_hours {
            let _ = writeln!(w, "  {:<18}{}", "GPU-hours", thousands(gh));
        }
        if let (Some(c), Some(pr)) = (t.cost_usd, t.price_per_gpu_hour) {
            let src = if p.request.price.is_some() {
                "--price"
            } else {
                "catalogue default; set --price"
            };
            let _ = writeln!(
                w,
                "  {:<18}${} at ${pr:.2}/GPU-hour ({src})",
                "cost",
                thousands(c)
            );
        }
    }

    if let Some(c) = &p.comm {
        let _ = writeln!(
            w,
            "\nCommunication (data parallel, ZeRO-1: reduce-scatter + all-gather per step)"
        );
        let _ = writeln!(
            w,
            "  {:<18}{} GPUs on {} node{} · link {} GB/s, network {} GB/s per GPU",
            "set-up",
            c.gpus,
            c.nodes,
            if c.nodes == 1 { "" } else { "s" },
            c.interconnect.link_gbs,
            c.interconnect.network_gbs
        );
        let _ = writeln!(
            w,
            "  {:<18}{} per GPU per step, bound by the {} ({} GB/s): {:.3} s",
            "traffic",
            bytes(c.bytes_per_gpu),
            c.bottleneck,
            c.bottleneck_gbs,
            c.comm_s
        );
        if let (Some(cs), Some(a), Some(b)) = (c.compute_s, c.step_no_overlap_s, c.step_overlap_s) {
            let _ = writeln!(w, "  {:<18}{:.3} s compute per step", "step", cs);
            let _ = writeln!(
                w,
                "  {:<18}{:.3} s ({} tokens/s/GPU) without overlap, {:.3} s ({} tokens/s/GPU) with it",
                "",
                a,
                thousands(c.tokens_per_sec_per_gpu_no_overlap.unwrap_or(0.0)),
                b,
                thousands(c.tokens_per_sec_per_gpu_overlap.unwrap_or(0.0))
            );
        }
    }

    if let Some(m) = &p.memory {
        let zero = match m.zero_stage {
            0 => "no sharding (DDP)".to_string(),
            3 => "ZeRO-3 / FSDP".to_string(),
            z => format!("ZeRO-{z}"),
        };
        let grad = match m.grad_dtype {
            crate::GradDtype::Bf16 => "bf16",
            crate::GradDtype::F32 => "f32",
        };
        let _ = writeln!(
            w,
            "\nMemory per GPU: {zero} over {} GPU{}, grads {grad}, micro-batch {} × {} tokens",
            m.data_parallel,
            if m.data_parallel == 1 { "" } else { "s" },
            m.micro_batch,
            m.seq_len
        );
        let div = |stage: u8| {
            if m.zero_stage >= stage && m.data_parallel > 1 {
                format!(" ÷ {}", m.data_parallel)
            } else {
                String::new()
            }
        };
        let b = &m.bytes_per_param;
        let _ = writeln!(
            w,
            "  {:<40}{:>14}",
            format!("weights bf16, {} B/param{}", b.weights, div(3)),
            bytes(m.weights_bytes)
        );
        let _ = writeln!(
            w,
            "  {:<40}{:>14}",
            format!("gradients {grad}, {} B/param{}", b.grads, div(2)),
            bytes(m.grads_bytes)
        );
        let _ = writeln!(
            w,
            "  {:<40}{:>14}",
            format!(
                "f32 master + Adam m, v: {} B/param{}",
                b.master + b.adam_m + b.adam_v,
                div(1)
            ),
            bytes(m.optimizer_bytes)
        );
        if m.zero3_gathered_bytes > 0.0 {
            let _ = writeln!(
                w,
                "  {:<40}{:>14}",
                "ZeRO-3 gathered units + grad in flight",
                bytes(m.zero3_gathered_bytes)
            );
        }
        match (&m.activations, &m.without_recompute, &m.with_recompute) {
            (Some(a), Some(no), Some(re)) => {
                let _ = writeln!(
                    w,
                    "  activations: {:.0} bytes per token per layer (bf16 tensors saved for \
                     backward, flash attention)",
                    a.bytes_per_token_per_layer
                );
                let mark = |r: bool| if r == m.recompute { "*" } else { "" };
                let _ = writeln!(
                    w,
                    "  {:<40}{:>14}  {:>14}",
                    "",
                    format!("no recompute{}", mark(false)),
                    format!("recompute{}", mark(true))
                );
                let line = |w: &mut String, label: &str, x: f64, y: f64| {
                    let _ = writeln!(w, "  {:<40}{:>14}  {:>14}", label, bytes(x), bytes(y));
                };
                line(
                    w,
                    "model states (above)",
                    m.model_states_bytes,
                    m.model_states_bytes,
                );
                line(
                    w,
                    "saved activations (all layers)",
                    a.blocks_bytes,
                    a.blocks_recompute_bytes,
                );
                line(
                    w,
                    "backward working set (1 layer / 2)",
                    a.one_layer_bytes,
                    2.0 * a.one_layer_bytes,
                );
                line(
                    w,
                    &format!("final norm + logits ({} tok chunk)", a.loss_chunk_tokens),
                    a.final_norm_bytes + a.logits_bytes,
                    a.final_norm_bytes + a.logits_bytes,
                );
                line(
                    w,
                    &format!(
                        "CUDA context {} + {:.0}% fragmentation",
                        bytes(m.context_bytes),
                        m.fragmentation * 100.0
                    ),
                    no.allowance_bytes,
                    re.allowance_bytes,
                );
                line(w, "total", no.total_bytes, re.total_bytes);
                if let Some(g) = &p.gpu {
                    let yes = |f: Option<bool>| match f {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    };
                    let _ = writeln!(
                        w,
                        "  {:<40}{:>14}  {:>14}",
                        format!("fits {} ({} GiB)?", g.name, g.memory_gib),
                        yes(no.fits),
                        yes(re.fits)
                    );
                    let mb = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_default();
                    let _ = writeln!(
                        w,
                        "  {:<40}{:>14}  {:>14}",
                        format!("largest micro-batch at {} tokens", m.seq_len),
                        mb(no.max_micro_batch),
                        mb(re.max_micro_batch)
                    );
                }
                let _ = writeln!(
                    w,
                    "  (* the mode planned; --recompute selects recomputation)"
                );
            }
            _ => {
                let _ = writeln!(
                    w,
                    "  {:<40}{:>14}",
                    "model states",
                    bytes(m.model_states_bytes)
                );
                if let (Some(g), Some(fit)) = (&p.gpu, m.model_states_fit) {
                    let _ = writeln!(
                        w,
                        "  {:<40}{:>14}",
                        format!("fits {} before activations?", g.name),
                        if fit { "yes" } else { "NO" }
                    );
                }
            }
        }
    }

    if !p.notes.is_empty() {
        let _ = writeln!(w, "\nNotes");
        for n in &p.notes {
            let body = wrap(n, "    ", 96);
            let _ = write!(w, "  - {}", body.trim_start());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(1_100_048_384.0), "1.10B");
        assert_eq!(count(69.3e9), "69.3B");
        assert_eq!(count(3e12), "3.00T");
        assert_eq!(count(920e6), "920M");
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(bytes(GIB * 1.5), "1.50 GiB");
    }

    #[test]
    fn wrap_keeps_words() {
        let t = wrap("a b c d e f", "  ", 7);
        assert_eq!(t, "  a b c\n  d e f\n");
    }
}
