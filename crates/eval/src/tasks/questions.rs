//! Question-and-choices tasks: PIQA, ARC (Easy and Challenge), OpenBookQA and BoolQ. Each row
//! becomes one context and one continuation per choice, `" " + choice` (the harness's default
//! target delimiter), so the prompts below end without a trailing space.
//!
//! Two row layouts are read, told apart per row by their fields:
//! - Hugging Face dataset rows (the fields named beside each loader);
//! - llm-foundry's `{"query", "choices", "gold"}` rows, whose `query` is already formatted in
//!   llm-foundry's own way. Where that formatting differs from the harness prompt, the
//!   original fields are recovered from it and the harness prompt is rebuilt (noted per task).

use super::read::{Fields, Row};
use super::{Item, Layout};

type Parsed = Result<(Item, Layout), String>;

/// llm-foundry's multiple-choice row: the query, at least two choices and the gold index.
fn foundry(row: &Row) -> Result<(&str, Vec<String>, usize), String> {
    let query = row.str_field("query")?;
    let choices = row.strings("choices")?;
    if choices.len() < 2 {
        return Err(format!(
            "field `choices` has {} entries; a multiple-choice row needs at least 2",
            choices.len()
        ));
    }
    let gold = row.index("gold", choices.len())?;
    Ok((query, choices, gold))
}

/// `Question: {q}\nAnswer:` from an llm-foundry query that already starts with `Question: `
/// (and, for PIQA, ends with a newline that the harness prompt does not have).
fn question_prompt(query: &str) -> String {
    let q = query.strip_suffix('\n').unwrap_or(query);
    if q.starts_with("Question:") {
        format!("{q}\nAnswer:")
    } else {
        format!("Question: {q}\nAnswer:")
    }
}

/// HF `{"text": [...], "label": [...]}` choices and the position of `answerKey` among the labels.
fn lettered_choices(row: &Row) -> Result<(Vec<String>, usize), String> {
    let choices = row.object("choices")?;
    let text = choices
        .strings("text")
        .map_err(|e| format!("in `choices`: {e}"))?;
    let labels = choices
        .strings("label")
        .map_err(|e| format!("in `choices`: {e}"))?;
    if text.len() != labels.len() || text.len() < 2 {
        return Err(format!(
            "`choices` has {} texts and {} labels; it needs at least 2 of each, paired",
            text.len(),
            labels.len()
        ));
    }
    let key = row.str_field("answerKey")?.trim();
    let gold = labels
        .iter()
        .position(|l| l == key)
        .ok_or_else(|| format!("`answerKey` {key:?} is not one of the labels {labels:?}"))?;
    Ok((text, gold))
}

/// PIQA. Prompt `Question: {goal}\nAnswer:`, choices `sol1`, `sol2`.
/// HF rows: `goal`, `sol1`, `sol2`, `label`. llm-foundry's query is `Question: {goal}\n`: its
/// trailing newline is dropped before `\nAnswer:` is appended.
pub fn piqa(row: &Row) -> Parsed {
    if row.contains_key("goal") {
        let goal = row.str_field("goal")?;
        let sols = vec![
            row.str_field("sol1")?.to_string(),
            row.str_field("sol2")?.to_string(),
        ];
        let gold = row.index("label", 2)?;
        return Ok((
            Item::choices(format!("Question: {goal}\nAnswer:"), sols, gold),
            Layout::HuggingFace,
        ));
    }
    if row.contains_key("query") {
        let (query, choices, gold) = foundry(row)?;
        return Ok((
            Item::choices(question_prompt(query), choices, gold),
            Layout::Foundry,
        ));
    }
    Err("neither a Hugging Face PIQA row (goal, sol1, sol2, label) nor an llm-foundry row (query, choices, gold)".into())
}

/// ARC-Easy and ARC-Challenge. Prompt `Question: {question}\nAnswer:`, choices the answer texts.
/// HF rows: `question`, `choices` {`text`, `label`}, `answerKey` (a letter or a digit).
/// llm-foundry's query is `Question: {question}`; `\nAnswer:` is appended.
pub fn arc(row: &Row) -> Parsed {
    if row.contains_key("question") {
        let q = row.str_field("question")?;
        let (choices, gold) = lettered_choices(row)?;
        return Ok((
            Item::choices(format!("Question: {q}\nAnswer:"), choices, gold),
            Layout::HuggingFace,
        ));
    }
    if row.contains_key("query") {
        let (query, choices, gold) = foundry(row)?;
        return Ok((
            Item::choices(question_prompt(query), choices, gold),
            Layout::Foundry,
        ));
    }
    Err("neither a Hugging Face ARC row (question, choices, answerKey) nor an llm-foundry row (query, choices, gold)".into())
}

/// OpenBookQA. Prompt: the question stem itself, no decoration.
/// HF rows: `question_stem`, `choices` {`text`, `label`}, `answerKey`. llm-foundry's query is the
/// stem unchanged.
pub fn openbookqa(row: &Row) -> Parsed {
    if row.contains_key("question_stem") {
        let stem = row.str_field("question_stem")?;
        let (choices, gold) = lettered_choices(row)?;
        return Ok((
            Item::choices(stem.to_string(), choices, gold),
            Layout::HuggingFace,
        ));
    }
    if row.contains_key("query") {
        let (query, choices, gold) = foundry(row)?;
        return Ok((
            Item::choices(query.to_string(), choices, gold),
            Layout::Foundry,
        ));
    }
    Err("neither a Hugging Face OpenBookQA row (question_stem, choices, answerKey) nor an llm-foundry row (query, choices, gold)".into())
}

/// BoolQ (SuperGLUE). Prompt `{passage}\nQuestion: {question}?\nAnswer:`, choices `no`, `yes`.
/// HF rows: `passage`, `question`, and `answer` (true/false, google/boolq) or `label` (0/1,
/// super_glue). llm-foundry's query is `Passage: {passage}\nQuestion: {question}?`: the
/// `Passage: ` prefix, which the harness prompt does not have, is removed.
pub fn boolq(row: &Row) -> Parsed {
    if row.contains_key("passage") {
        let passage = row.str_field("passage")?;
        let question = row.str_field("question")?;
        let key = if row.contains_key("answer") {
            "answer"
        } else {
            "label"
        };
        let gold = row.index(key, 2)?;
        let choices = vec!["no".to_string(), "yes".to_string()];
        return Ok((
            Item::choices(
                format!("{passage}\nQuestion: {question}?\nAnswer:"),
                choices,
                gold,
            ),
            Layout::HuggingFace,
        ));
    }
    if row.contains_key("query") {
        let (query, choices, gold) = foundry(row)?;
        let body = query.strip_prefix("Passage: ").unwrap_or(query);
        return Ok((
            Item::choices(format!("{body}\nAnswer:"), choices, gold),
            Layout::Foundry,
        ));
    }
    Err("neither a Hugging Face BoolQ row (passage, question, answer) nor an llm-foundry row (query, choices, gold)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(s: &str) -> Row {
        serde_json::from_str(s).unwrap()
    }

    fn conts(it: &Item) -> Vec<&str> {
        it.requests
            .iter()
            .map(|r| r.continuation.as_str())
            .collect()
    }

    #[test]
    fn piqa_layouts_give_the_same_prompt() {
        let (hf, l1) = piqa(&row(
            r#"{"goal": "Keep bread fresh", "sol1": "seal the bag", "sol2": "toast the bag", "label": 0}"#,
        ))
        .unwrap();
        let (lf, l2) = piqa(&row(
            r#"{"query": "Question: Keep bread fresh\n", "choices": ["seal the bag", "toast the bag"], "gold": 0}"#,
        ))
        .unwrap();
        assert_eq!((l1, l2), (Layout::HuggingFace, Layout::Foundry));
        assert_eq!(
            hf.requests[0].context,
            "Question: Keep bread fresh\nAnswer:"
        );
        assert_eq!(hf, lf);
        assert_eq!(conts(&hf), [" seal the bag", " toast the bag"]);
        assert_eq!(hf.choice_chars, [12, 13]);
    }

    #[test]
    fn arc_reads_letter_and_digit_keys() {
        let (it, _) = arc(&row(
            r#"{"question": "Which is a gas?", "choices": {"text": ["rock", "steam", "ice"], "label": ["1", "2", "3"]}, "answerKey": "2"}"#,
        ))
        .unwrap();
        assert_eq!(it.gold, 1);
        assert_eq!(it.requests[2].context, "Question: Which is a gas?\nAnswer:");
        let (lf, _) = arc(&row(
            r#"{"query": "Question: Which is a gas?", "choices": ["rock", "steam", "ice"], "gold": 1}"#,
        ))
        .unwrap();
        assert_eq!(it, lf);
        let bad = arc(&row(
            r#"{"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"}"#,
        ));
        assert!(bad.unwrap_err().contains("answerKey"));
    }

    #[test]
    fn openbookqa_prompt_is_the_stem() {
        let (it, _) = openbookqa(&row(
            r#"{"question_stem": "Frogs are", "choices": {"text": ["amphibians", "birds"], "label": ["A", "B"]}, "answerKey": "A"}"#,
        ))
        .unwrap();
        assert_eq!(it.requests[0].context, "Frogs are");
        assert_eq!(conts(&it), [" amphibians", " birds"]);
    }

    #[test]
    fn boolq_layouts_give_the_same_prompt() {
        let (hf, _) = boolq(&row(
            r#"{"passage": "Cats purr.", "question": "do cats purr", "answer": true}"#,
        ))
        .unwrap();
        let (sg, _) = boolq(&row(
            r#"{"passage": "Cats purr.", "question": "do cats purr", "label": 1}"#,
        ))
        .unwrap();
        let (lf, _) = boolq(&row(
            r#"{"query": "Passage: Cats purr.\nQuestion: do cats purr?", "choices": ["no", "yes"], "gold": 1}"#,
        ))
        .unwrap();
        assert_eq!(
            hf.requests[0].context,
            "Cats purr.\nQuestion: do cats purr?\nAnswer:"
        );
        assert_eq!(hf.gold, 1);
        assert_eq!(hf, sg);
        assert_eq!(hf, lf);
        assert_eq!(conts(&hf), [" no", " yes"]);
    }

    #[test]
    fn unknown_rows_say_which_layouts_are_expected() {
        let e = piqa(&row(r#"{"foo": 1}"#)).unwrap_err();
        assert!(e.contains("goal") && e.contains("query"), "{e}");
        let e = piqa(&row(r#"{"query": "q", "choices": ["a"], "gold": 0}"#)).unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
    }
}
