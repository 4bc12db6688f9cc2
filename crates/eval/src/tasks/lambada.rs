//! LAMBADA (OpenAI's detokenised test set, the harness's `lambada_openai`): the context is the
//! passage up to its last space and the continuation `" " + last word`. Scored by whether
//! greedy decoding reproduces every token of the word (`acc`) and by the perplexity
//! `exp(−mean per-passage log-likelihood of the word)`.
//!
//! Layouts: HF rows `text`; llm-foundry rows `context`, `continuation` (the passage already
//! split, the word without its space).

use super::read::Fields;
use super::{Item, Layout, Request};
use serde_json::{Map, Value};

fn item(context: &str, continuation: String) -> Item {
    Item {
        choice_chars: vec![continuation.trim_start().chars().count()],
        requests: vec![Request {
            context: context.to_string(),
            continuation,
        }],
        gold: 0,
    }
}

pub fn row(row: &Map<String, Value>) -> Result<(Item, Layout), String> {
    if row.contains_key("text") {
        let text = row.str_field("text")?;
        let (context, word) = text
            .rsplit_once(' ')
            .ok_or("field `text` has no space before a last word")?;
        return Ok((item(context, format!(" {word}")), Layout::HuggingFace));
    }
    if row.contains_key("context") {
        let context = row.str_field("context")?;
        let word = row.str_field("continuation")?;
        // The rows split the text at its last space and drop that space, which the harness
        // puts back in front of the word (even when the word itself starts with a line break,
        // as in a few passages).
        let cont = if context.ends_with(' ') {
            word.to_string()
        } else {
            format!(" {word}")
        };
        return Ok((item(context, cont), Layout::Foundry));
    }
    Err(
        "neither a Hugging Face LAMBADA row (text) nor an llm-foundry row (context, continuation)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree() {
        let hf: Map<String, Value> =
            serde_json::from_str(r#"{"text": "He rang the bell twice"}"#).unwrap();
        let lf: Map<String, Value> =
            serde_json::from_str(r#"{"context": "He rang the bell", "continuation": "twice"}"#)
                .unwrap();
        let (a, _) = row(&hf).unwrap();
        assert_eq!(a, row(&lf).unwrap().0);
        assert_eq!(a.requests[0].context, "He rang the bell");
        assert_eq!(a.requests[0].continuation, " twice");
        let hf: Map<String, Value> =
            serde_json::from_str(r#"{"text": "saw the \n\nrecorder"}"#).unwrap();
        let lf: Map<String, Value> =
            serde_json::from_str(r#"{"context": "saw the", "continuation": "\n\nrecorder"}"#)
                .unwrap();
        assert_eq!(row(&hf).unwrap().0, row(&lf).unwrap().0);
        assert_eq!(
            row(&lf).unwrap().0.requests[0].continuation,
            " \n\nrecorder"
        );
        let one_word: Map<String, Value> = serde_json::from_str(r#"{"text": "word"}"#).unwrap();
        assert!(row(&one_word).is_err());
    }
}
