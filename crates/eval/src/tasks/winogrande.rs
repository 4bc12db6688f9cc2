//! WinoGrande, scored the harness's "partial" way: one context per option, the sentence up to
//! the blank with the option filled in (`sentence[:blank] + option`), and the shared rest of
//! the sentence after the blank, stripped, as the continuation (`" " + rest`). Only the
//! continuation is scored, so the options compete on how well they predict the same words.
//!
//! Layouts: HF rows `sentence` (with one `_`), `option1`, `option2`, `answer` (`"1"`/`"2"`);
//! llm-foundry rows `context_options` (the filled-in prefixes), `continuation`, `gold`, which
//! are the same strings already split.

use super::read::Fields;
use super::{Item, Layout, Request};
use serde_json::{Map, Value};

fn item(contexts: Vec<String>, rest: &str, gold: usize) -> Item {
    Item {
        choice_chars: contexts.iter().map(|c| c.chars().count()).collect(),
        requests: contexts
            .into_iter()
            .map(|context| Request {
                context,
                continuation: format!(" {rest}"),
            })
            .collect(),
        gold,
    }
}

pub fn row(row: &Map<String, Value>) -> Result<(Item, Layout), String> {
    if row.contains_key("sentence") {
        let s = row.str_field("sentence")?;
        let blank = s
            .find('_')
            .ok_or("field `sentence` has no `_` blank to fill")?;
        let options = [row.str_field("option1")?, row.str_field("option2")?];
        // `answer` is "1" or "2"; shift it to an index.
        let gold = match row.index("answer", 3)? {
            0 => return Err("field `answer` should be \"1\" or \"2\", found 0".into()),
            g => g - 1,
        };
        let contexts = options
            .iter()
            .map(|o| format!("{}{o}", &s[..blank]))
            .collect();
        return Ok((
            item(contexts, s[blank + 1..].trim(), gold),
            Layout::HuggingFace,
        ));
    }
    if row.contains_key("context_options") {
        let contexts = row.strings("context_options")?;
        if contexts.len() < 2 {
            return Err("field `context_options` needs at least 2 options".into());
        }
        let rest = row.str_field("continuation")?;
        let gold = row.index("gold", contexts.len())?;
        return Ok((item(contexts, rest.trim(), gold), Layout::Foundry));
    }
    Err("neither a Hugging Face WinoGrande row (sentence, option1, option2, answer) nor an llm-foundry row (context_options, continuation, gold)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_and_only_the_rest_is_scored() {
        let hf: Map<String, Value> = serde_json::from_str(
            r#"{"sentence": "Ann gave Bo a gift because _ was kind.", "option1": "Ann", "option2": "Bo", "answer": "1"}"#,
        )
        .unwrap();
        let lf: Map<String, Value> = serde_json::from_str(
            r#"{"context_options": ["Ann gave Bo a gift because Ann", "Ann gave Bo a gift because Bo"], "continuation": "was kind.", "gold": 0}"#,
        )
        .unwrap();
        let (a, _) = row(&hf).unwrap();
        let (b, _) = row(&lf).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.requests[1].context, "Ann gave Bo a gift because Bo");
        assert_eq!(a.requests[1].continuation, " was kind.");
        let bad: Map<String, Value> = serde_json::from_str(
            r#"{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}"#,
        )
        .unwrap();
        assert!(row(&bad).unwrap_err().contains("blank"));
        let test_split: Map<String, Value> = serde_json::from_str(
            r#"{"sentence": "_ x", "option1": "a", "option2": "b", "answer": ""}"#,
        )
        .unwrap();
        assert!(row(&test_split).is_err());
    }
}
