//! `tinyllama chat`: an interactive terminal chat. The prompt format comes from the model's
//! chat template (Zephyr when it has none); the history is trimmed to the context window.

use super::infer_opts::{speed_report, ModelOpts, SamplingOpts};
use anyhow::Result;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use tinyllama_infer::conversation::Conversation;
use tinyllama_infer::generate::generate_text;
use tinyllama_infer::{GenParams, Message};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// System prompt (change it during the chat with /system TEXT).
    #[arg(long)]
    pub system: Option<String>,
    /// Longest reply in tokens; this much of the context is kept free for it.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    /// Extra stop strings besides the template's end-of-turn marker (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Report speed after each reply on stderr.
    #[arg(long)]
    pub verbose: bool,
}

const HELP: &str =
    "commands: /reset (forget the conversation), /system TEXT (set the system prompt; \
/system alone clears it), /exit (or Ctrl-D)";

pub fn run(a: ChatArgs) -> Result<()> {
    if a.max_new_tokens == 0 {
        anyhow::bail!("--max-new-tokens must be at least 1");
    }
    let loaded = a.model.load()?;
    let (runner, tok, tmpl) = (&loaded.runner, &loaded.tokenizer, &loaded.template);
    let sampling = a.sampling.params()?;
    let mut stops = tmpl.stop_strings();
    stops.extend(a.stop.iter().cloned());
    let ctx = runner.context();
    // Keep room for the reply, but never more than half the context.
    let reserve = a.max_new_tokens.min(ctx / 2).max(1);
    let interactive = std::io::stdin().is_terminal();
    let mut conv = Conversation::new(a.system.clone());
    let stdout = std::io::stdout();
    if interactive {
        eprintln!(
            "chatting with {} ({}; prompt format: {}). {HELP}",
            loaded.name,
            runner.target.format.name(),
            tmpl.origin
        );
    }
    let mut turn = 0u64;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            let mut o = stdout.lock();
            let _ = write!(o, "\n> ");
            let _ = o.flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let msg = line.trim_end_matches(['\r', '\n']);
        if msg.trim().is_empty() {
            continue;
        }
        match msg.trim() {
            "/exit" | "/quit" => break,
            "/reset" => {
                conv.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            _ => {}
        }
        if let Some(rest) = msg.trim().strip_prefix("/system") {
            if rest.is_empty() || rest.starts_with(' ') {
                let s = rest.trim();
                conv.system = (!s.is_empty()).then(|| s.to_string());
                eprintln!(
                    "(system prompt {})",
                    if s.is_empty() { "cleared" } else { "set" }
                );
                continue;
            }
        }
        if msg.starts_with('/') && !msg.starts_with("//") {
            eprintln!(
                "unknown command `{msg}`; {HELP} (start a message with // to send a literal /)"
            );
            continue;
        }
        let text = msg
            .strip_prefix('/')
            .filter(|_| msg.starts_with("//"))
            .unwrap_or(msg);
        conv.turns.push(Message::new("user", text));
        let fitted = match conv.fit_prompt(tmpl, tok, ctx, reserve) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e:#}");
                conv.turns.pop();
                continue;
            }
        };
        if fitted.dropped > 0 {
            eprintln!(
                "(dropped the {} oldest messages to fit the {ctx}-token context)",
                fitted.dropped
            );
        }
        let params = GenParams {
            max_tokens: a.max_new_tokens.min(ctx - fitted.ids.len()),
            sampling: sampling.clone(),
            seed: a.sampling.seed.wrapping_add(turn),
            stop_ids: vec![tok.eos_id],
        };
        turn += 1;
        let mut o = stdout.lock();
        let res = generate_text(runner, tok, &fitted.ids, params, &stops, |s| {
            o.write_all(s.as_bytes()).and_then(|_| o.flush()).is_ok()
        })?;
        let _ = writeln!(o);
        drop(o);
        conv.turns
            .push(Message::new("assistant", res.text.trim_start()));
        if a.verbose {
            eprintln!("{}", speed_report(&res.output));
        }
    }
    Ok(())
}
