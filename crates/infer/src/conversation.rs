//! A multi-turn conversation and how it is fitted into the model's context: the system message
//! always stays, the oldest user/assistant exchanges go first.

use crate::chat_template::{ChatTemplate, Message};
use anyhow::{bail, Result};
use tinyllama_model::tokenizer::Tokenizer;

/// Token ids of a rendered chat prompt: the template's text tokenized with special tokens
/// recognised, with BOS in front when the tokenizer config asks for it and the template did
/// not already put it there.
pub fn encode_prompt(tok: &Tokenizer, tmpl: &ChatTemplate, text: &str) -> Result<Vec<u32>> {
    let ids = tok.encode(text)?;
    if tmpl.add_bos && ids.first() != Some(&tok.bos_id) {
        let mut v = Vec::with_capacity(ids.len() + 1);
        v.push(tok.bos_id);
        v.extend(ids);
        return Ok(v);
    }
    Ok(ids)
}

#[derive(Clone, Debug, Default)]
pub struct Conversation {
    pub system: Option<String>,
    /// User and assistant messages, oldest first.
    pub turns: Vec<Message>,
}

/// The prompt for the next reply.
#[derive(Clone, Debug)]
pub struct FittedPrompt {
    pub ids: Vec<u32>,
    /// Messages dropped from the history to make room (0 when everything fitted).
    pub dropped: usize,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Self {
        Conversation {
            system,
            turns: vec![],
        }
    }

    pub fn messages(&self) -> Vec<Message> {
        let mut m = Vec::with_capacity(self.turns.len() + 1);
        if let Some(s) = &self.system {
            m.push(Message::new("system", s));
        }
        m.extend(self.turns.iter().cloned());
        m
    }

    pub fn reset(&mut self) {
        self.turns.clear();
    }

    /// Renders the conversation for the assistant's next reply and drops the oldest turns
    /// until the prompt leaves at least `reserve` of the `context` tokens free. `count` turns
    /// a message list into prompt ids (render + tokenize), so the policy is testable without a
    /// model. Fails when even the newest message alone does not fit.
    pub fn fit(
        &mut self,
        context: usize,
        reserve: usize,
        mut count: impl FnMut(&[Message]) -> Result<Vec<u32>>,
    ) -> Result<FittedPrompt> {
        let budget = context.saturating_sub(reserve);
        let mut dropped = 0;
        loop {
            let ids = count(&self.messages())?;
            if ids.len() <= budget {
                return Ok(FittedPrompt { ids, dropped });
            }
            // Keep the newest message (the one being answered); drop from the front, a whole
            // exchange at a time so the history still alternates user/assistant.
            if self.turns.len() <= 1 {
                bail!(
                    "the prompt needs {} tokens but only {budget} of the model's {context}-token context are available \
                     (the rest is kept for the reply); shorten the message{}",
                    ids.len(),
                    if self.system.is_some() { " or the system prompt" } else { "" }
                );
            }
            let n = if self.turns.len() >= 3 && self.turns[0].role == "user" {
                2
            } else {
                1
            };
            self.turns.drain(..n);
            dropped += n;
        }
    }

    /// [`Conversation::fit`] with a real template and tokenizer.
    pub fn fit_prompt(
        &mut self,
        tmpl: &ChatTemplate,
        tok: &Tokenizer,
        context: usize,
        reserve: usize,
    ) -> Result<FittedPrompt> {
        self.fit(context, reserve, |m| {
            encode_prompt(tok, tmpl, &tmpl.render(m, true)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One "token" per character of the rendered Zephyr text.
    fn chars(m: &[Message]) -> Result<Vec<u32>> {
        Ok(ChatTemplate::zephyr()
            .render(m, true)?
            .chars()
            .map(|c| c as u32)
            .collect())
    }

    #[test]
    fn trims_oldest_exchanges_keeping_system() {
        let mut c = Conversation::new(Some("S".into()));
        for i in 0..5 {
            c.turns.push(Message::new("user", &format!("question {i}")));
            c.turns
                .push(Message::new("assistant", &format!("answer {i}")));
        }
        c.turns.push(Message::new("user", "last"));
        let full = chars(&c.messages()).unwrap().len();
        // Everything fits.
        let f = c.fit(full + 10, 10, chars).unwrap();
        assert_eq!((f.ids.len(), f.dropped), (full, 0));
        // Room for the system, the last two exchanges and the new question only.
        let mut keep = Conversation::new(Some("S".into()));
        keep.turns = c.turns[6..].to_vec();
        let want = chars(&keep.messages()).unwrap();
        let f = c.fit(want.len() + 5, 5, chars).unwrap();
        assert_eq!(f.dropped, 6);
        assert_eq!(f.ids, want);
        assert_eq!(c.turns[0], Message::new("user", "question 3"));
        assert_eq!(c.system.as_deref(), Some("S"));
        // Not even the last message fits: a clear error, history keeps the message.
        let e = c.fit(20, 5, chars).unwrap_err().to_string();
        assert!(
            e.contains("shorten the message or the system prompt"),
            "{e}"
        );
        assert_eq!(c.turns.last().unwrap().content, "last");
    }
}
