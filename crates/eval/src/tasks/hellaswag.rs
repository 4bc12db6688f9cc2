//! HellaSwag. Prompt `preprocess(activity_label + ": " + ctx_a + " " + capitalize(ctx_b))`,
//! choices `preprocess(ending)`, where `preprocess` strips the text, turns ` [title]` into
//! `. `, deletes every `[...]` span (WikiHow's step markers) and collapses double spaces, and
//! `capitalize` upper-cases the first character and lower-cases the rest (Python's
//! `str.capitalize`), as the harness does.
//!
//! Layouts:
//! - HF rows: `activity_label`, `ctx_a`, `ctx_b`, `endings`, `label` — exact harness prompts.
//! - llm-foundry rows `{"query", "choices", "gold"}` and the 6-line text records of
//!   `hellaswag_val_full.txt` (context, gold index, four endings). Their context is
//!   `activity_label: ctx_a ctx_b` with `ctx_b` not capitalised and the boundary between
//!   `ctx_a` and `ctx_b` lost. We restore the capital where the boundary can be inferred: for
//!   ActivityNet items `ctx_b` is the text after the last sentence end, and is capitalised
//!   when it starts in lower case. An item is WikiHow (left alone) when its row says so
//!   (`source_id`/`source` starting with `wikihow`), or, without a source, when its body starts
//!   with `How to` *and* the context ends in sentence punctuation: ActivityNet contexts can
//!   start with "How to" too (validation item 2566, "Cleaning windows: How to clean your rv
//!   windows … spray. you") but end in the unfinished `ctx_b` fragment, which the harness
//!   capitalises. This matches the harness prompt whenever `ctx_a` ends a sentence, which
//!   ActivityNet contexts do; use the HF layout where exact agreement matters. `preprocess` is applied on top (it is idempotent
//!   on the already-cleaned text and removes the few bracket spans left in it).

use super::read::Fields;
use super::{Item, Layout, Problem};
use serde_json::{Map, Value};

/// The harness's HellaSwag text cleaning (see the module docs).
pub fn preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    remove_brackets(&text).replace("  ", " ")
}

/// Deletes each `[` … first following `]` span that does not cross a line break (the regex
/// `\[.*?\]`); an unmatched `[` is kept.
fn remove_brackets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(']');
        let newline = after.find('\n');
        match close {
            Some(c) if newline.is_none_or(|n| n > c) => rest = &after[c + 1..],
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Python's `str.capitalize` (first character upper-cased, the rest lower-cased).
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// Where an item comes from, when its row says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    WikiHow,
    ActivityNet,
    Unknown,
}

fn source_of(row: &Map<String, Value>) -> Source {
    let s = ["source_id", "source"]
        .iter()
        .find_map(|k| row.get(*k).and_then(Value::as_str))
        .unwrap_or("")
        .to_ascii_lowercase();
    if s.starts_with("wikihow") {
        Source::WikiHow
    } else if s.starts_with("activitynet") {
        Source::ActivityNet
    } else {
        Source::Unknown
    }
}

/// Restores the capital of `ctx_b` in an `activity_label: ctx_a ctx_b` context (see module docs).
fn recapitalize(context: &str, source: Source) -> String {
    let Some((label, body)) = context.split_once(": ") else {
        return context.to_string();
    };
    let ends_sentence = body
        .trim_end()
        .trim_end_matches(['"', '\'', ')'])
        .ends_with(['.', '?', '!']);
    let wikihow = match source {
        Source::WikiHow => true,
        Source::ActivityNet => false,
        Source::Unknown => body.starts_with("How to ") && ends_sentence,
    };
    if wikihow {
        return context.to_string();
    }
    let end = [". ", "? ", "! "]
        .iter()
        .filter_map(|p| body.rfind(p).map(|i| i + p.len()))
        .max();
    match end {
        Some(i) if body[i..].starts_with(|c: char| c.is_lowercase()) => {
            format!("{label}: {}{}", &body[..i], capitalize(&body[i..]))
        }
        _ => context.to_string(),
    }
}

fn item(context: &str, endings: &[String], gold: usize) -> Item {
    Item::choices(
        preprocess(context),
        endings.iter().map(|e| preprocess(e)).collect(),
        gold,
    )
}

/// One JSON row (HF or llm-foundry layout).
pub fn row(row: &Map<String, Value>) -> Result<(Item, Layout), String> {
    if row.contains_key("ctx_a") {
        let label = row.str_field("activity_label")?;
        let ctx = format!(
            "{label}: {} {}",
            row.str_field("ctx_a")?,
            capitalize(row.str_field("ctx_b")?)
        );
        let endings = row.strings("endings")?;
        if endings.len() < 2 {
            return Err("field `endings` needs at least 2 endings".into());
        }
        let gold = row.index("label", endings.len())?;
        return Ok((item(&ctx, &endings, gold), Layout::HuggingFace));
    }
    if row.contains_key("query") {
        let query = row.str_field("query")?;
        let choices = row.strings("choices")?;
        if choices.len() < 2 {
            return Err("field `choices` needs at least 2 endings".into());
        }
        let gold = row.index("gold", choices.len())?;
        let ctx = recapitalize(query, source_of(row));
        return Ok((item(&ctx, &choices, gold), Layout::Foundry));
    }
    Err("neither a Hugging Face HellaSwag row (activity_label, ctx_a, ctx_b, endings, label) nor an llm-foundry row (query, choices, gold)".into())
}

/// The 6-line text layout: context, gold index (0–3), four endings per record.
pub fn six_line(text: &str) -> (Vec<(usize, Item)>, Vec<Problem>) {
    let lines: Vec<&str> = text.lines().collect();
    // A final empty line is the file's terminator, not a short record.
    let n = lines.len() - lines.iter().rev().take_while(|l| l.is_empty()).count();
    let (mut items, mut problems) = (vec![], vec![]);
    for start in (0..n).step_by(6) {
        let line = start + 1;
        if start + 6 > n {
            problems.push(Problem {
                line,
                message: format!(
                    "the last record has {} lines; each needs 6 (context, gold index, 4 endings)",
                    n - start
                ),
            });
            break;
        }
        let rec = &lines[start..start + 6];
        match rec[1].trim().parse::<usize>() {
            Ok(g) if g < 4 => {
                let endings: Vec<String> = rec[2..].iter().map(|s| s.to_string()).collect();
                items.push((
                    line,
                    item(&recapitalize(rec[0], Source::Unknown), &endings, g),
                ));
            }
            _ => problems.push(Problem {
                line: line + 1,
                message: format!(
                    "expected the gold index 0-3 on the record's second line, found {:?}",
                    rec[1]
                ),
            }),
        }
    }
    (items, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_matches_the_harness_rules() {
        assert_eq!(
            preprocess(" Home: [header] How to x [title] Do y. [step] Then z.  "),
            "Home: How to x. Do y. Then z."
        );
        assert_eq!(preprocess("a [b\n] c"), "a [b\n] c");
        assert_eq!(preprocess("a [unclosed"), "a [unclosed");
        assert_eq!(preprocess("three   spaces"), "three  spaces");
    }

    #[test]
    fn capitalize_is_pythons() {
        assert_eq!(capitalize("the Man"), "The man");
        assert_eq!(capitalize(""), "");
        assert_eq!(capitalize("\" power"), "\" power");
    }

    #[test]
    fn hf_and_text_layouts_agree_on_activitynet_items() {
        let hf: Map<String, Value> = serde_json::from_str(
            r#"{"activity_label": "Rowing", "ctx_a": "Two people sit in a boat.", "ctx_b": "they",
                "endings": ["row away.", "eat [x] soup."], "label": "0"}"#,
        )
        .unwrap();
        let (a, _) = row(&hf).unwrap();
        assert_eq!(
            a.requests[0].context,
            "Rowing: Two people sit in a boat. They"
        );
        assert_eq!(a.requests[1].continuation, " eat soup.");
        let text = "Rowing: Two people sit in a boat. they\n0\nrow away.\neat [x] soup.\nc\nd\n";
        let (items, problems) = six_line(text);
        assert!(problems.is_empty());
        assert_eq!(items[0].1.requests[0].context, a.requests[0].context);
        // WikiHow items are left alone.
        assert_eq!(
            recapitalize("Health: How to rest. lie down.", Source::Unknown),
            "Health: How to rest. lie down."
        );
        assert_eq!(
            recapitalize("Health: How to rest. lie down", Source::WikiHow),
            "Health: How to rest. lie down"
        );
    }

    /// Validation item 2566 is ActivityNet although its context starts with "How to"; the
    /// harness capitalises its `ctx_b` ("you" → "You"), whether or not the row gives a source.
    #[test]
    fn activitynet_item_2566_starting_with_how_to_is_capitalised() {
        let ctx_a = "How to clean your rv windows. A man is seen speaking to the camera and leads into him spraying down a window with a hose. The man then wipes down the window while still speaking and using a spray.";
        let hf: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "activity_label": "Cleaning windows", "ctx_a": ctx_a, "ctx_b": "you",
            "source_id": "activitynet~v_abc", "endings": ["a", "b", "c", "d"], "label": "0"
        }))
        .unwrap();
        let (want, _) = row(&hf).unwrap();
        assert!(want.requests[0].context.ends_with("spray. You"));
        let query = format!("Cleaning windows: {ctx_a} you");
        for source in [None, Some("activitynet~v_abc")] {
            let mut foundry =
                serde_json::json!({"query": query, "choices": ["a", "b", "c", "d"], "gold": 0});
            if let Some(s) = source {
                foundry["source_id"] = s.into();
            }
            let (got, _) = row(foundry.as_object().unwrap()).unwrap();
            assert_eq!(
                got.requests[0].context, want.requests[0].context,
                "{source:?}"
            );
        }
        let text = format!("{query}\n0\na\nb\nc\nd\n");
        let (items, _) = six_line(&text);
        assert_eq!(items[0].1.requests[0].context, want.requests[0].context);
        // A row that says WikiHow is left alone even without final punctuation.
        let wiki = serde_json::json!({"query": query, "choices": ["a", "b"], "gold": 0, "source_id": "wikihow~123"});
        let (w, _) = row(wiki.as_object().unwrap()).unwrap();
        assert!(w.requests[0].context.ends_with("spray. you"));
    }

    #[test]
    fn six_line_reports_bad_records_by_line() {
        let text = "c1\n1\na\nb\nc\nd\nc2\nx\na\nb\nc\nd\nc3\n0\n";
        let (items, problems) = six_line(text);
        assert_eq!(items.len(), 1);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].line, 8);
        assert!(problems[0].message.contains("gold index"));
        assert_eq!(problems[1].line, 13);
        assert!(problems[1].message.contains("2 lines"));
    }
}
