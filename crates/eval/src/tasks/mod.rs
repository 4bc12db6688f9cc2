//! The zero-shot tasks TinyLlama reports (HellaSwag, OpenBookQA, WinoGrande, ARC-Easy,
//! ARC-Challenge, BoolQ, PIQA) plus LAMBADA: where their files are, how each row becomes
//! (context, continuation) requests with the lm-evaluation-harness prompt, and which metrics
//! the harness reports for each. Prompts are documented beside each loader.

pub mod hellaswag;
pub mod lambada;
pub mod questions;
pub mod read;
pub mod winogrande;

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Hellaswag,
    Openbookqa,
    Winogrande,
    ArcEasy,
    ArcChallenge,
    Boolq,
    Piqa,
    Lambada,
}

impl Task {
    /// In TinyLlama's table order, LAMBADA last.
    pub const ALL: [Task; 8] = [
        Task::Hellaswag,
        Task::Openbookqa,
        Task::Winogrande,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Boolq,
        Task::Piqa,
        Task::Lambada,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Hellaswag => "hellaswag",
            Task::Openbookqa => "openbookqa",
            Task::Winogrande => "winogrande",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Boolq => "boolq",
            Task::Piqa => "piqa",
            Task::Lambada => "lambada",
        }
    }

    /// `all` or a comma-separated list of names (`lambada_openai` is accepted for `lambada`).
    pub fn parse_list(s: &str) -> Result<Vec<Task>> {
        if s.trim() == "all" {
            return Ok(Task::ALL.to_vec());
        }
        let mut out = vec![];
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let t = match name {
                "lambada_openai" => Task::Lambada,
                "openbook_qa" => Task::Openbookqa,
                _ => match Task::ALL.iter().find(|t| t.name() == name) {
                    Some(&t) => t,
                    None => bail!(
                        "unknown task `{name}`; choose from {} (comma-separated) or `all`",
                        Task::ALL.map(|t| t.name()).join(", ")
                    ),
                },
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            bail!("no tasks given; pass e.g. --tasks piqa,arc_easy or --tasks all");
        }
        Ok(out)
    }

    /// File names looked for in the data directory, first found wins: the llm-foundry names
    /// of `../shared/data/eval`, then plain HF-style names.
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            Task::Hellaswag => &[
                "hellaswag.jsonl",
                "hellaswag_validation.jsonl",
                "hellaswag_val_full.txt.bz2",
                "hellaswag_val_full.txt",
            ],
            Task::Openbookqa => &[
                "openbookqa.jsonl",
                "openbook_qa.jsonl",
                "openbookqa_test.jsonl",
            ],
            Task::Winogrande => &["winogrande.jsonl", "winogrande_validation.jsonl"],
            Task::ArcEasy => &["arc_easy.jsonl", "arc_easy_test.jsonl"],
            Task::ArcChallenge => &["arc_challenge.jsonl", "arc_challenge_test.jsonl"],
            Task::Boolq => &["boolq.jsonl", "boolq_validation.jsonl"],
            Task::Piqa => &["piqa.jsonl", "piqa_validation.jsonl"],
            Task::Lambada => &[
                "lambada_openai.jsonl",
                "lambada.jsonl",
                "lambada_test.jsonl",
            ],
        }
    }

    /// Whether the harness reports `acc_norm` (WinoGrande and BoolQ report `acc` only).
    pub fn has_acc_norm(self) -> bool {
        !matches!(self, Task::Winogrande | Task::Boolq | Task::Lambada)
    }

    /// The metric TinyLlama's table shows: `acc_norm` where reported, else `acc`.
    pub fn headline(self) -> &'static str {
        if self.has_acc_norm() {
            "acc_norm"
        } else {
            "acc"
        }
    }

    /// One JSON row of this task, in either layout.
    pub fn parse_row(self, row: &read::Row) -> Result<(Item, Layout), String> {
        match self {
            Task::Hellaswag => hellaswag::row(row),
            Task::Openbookqa => questions::openbookqa(row),
            Task::Winogrande => winogrande::row(row),
            Task::ArcEasy | Task::ArcChallenge => questions::arc(row),
            Task::Boolq => questions::boolq(row),
            Task::Piqa => questions::piqa(row),
            Task::Lambada => lambada::row(row),
        }
    }
}

/// One (context, continuation) pair whose log-likelihood is wanted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub context: String,
    pub continuation: String,
}

/// One question: a request per choice, the gold choice, and each choice's length in
/// characters (what `acc_norm` divides by, the harness's `len(choice)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    pub requests: Vec<Request>,
    pub gold: usize,
    pub choice_chars: Vec<usize>,
}

impl Item {
    /// A shared context with continuations `" " + choice`.
    pub fn choices(context: String, choices: Vec<String>, gold: usize) -> Item {
        Item {
            choice_chars: choices.iter().map(|c| c.chars().count()).collect(),
            requests: choices
                .into_iter()
                .map(|c| Request {
                    context: context.clone(),
                    continuation: format!(" {c}"),
                })
                .collect(),
            gold,
        }
    }
}

/// Which row layout an item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Layout {
    #[serde(rename = "huggingface")]
    HuggingFace,
    #[serde(rename = "llm-foundry")]
    Foundry,
    #[serde(rename = "hellaswag-6-line")]
    SixLine,
}

/// A row that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// A task file's usable items (with their 1-based line numbers) and what was skipped.
#[derive(Debug, Serialize)]
pub struct Loaded {
    pub task: Task,
    pub path: PathBuf,
    pub items: Vec<(usize, Item)>,
    pub skipped: Vec<Problem>,
    pub layouts: BTreeMap<Layout, usize>,
}

impl Loaded {
    /// `file:line: message` for the first `n` skipped rows.
    pub fn skipped_report(&self, n: usize) -> Vec<String> {
        self.skipped
            .iter()
            .take(n)
            .map(|p| format!("{}:{}: {}", self.path.display(), p.line, p.message))
            .collect()
    }
}

/// The task's file in `dir` (the first of [`Task::file_names`] that exists).
pub fn find_file(task: Task, dir: &Path) -> Result<PathBuf> {
    for name in task.file_names() {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no {} data in {}: looked for {}; put the file there, or name it with --file {}=PATH",
        task.name(),
        dir.display(),
        task.file_names().join(", "),
        task.name()
    )
}

/// Reads every row of a task file. Malformed rows are collected with their line numbers, not
/// fatal; a file with no usable row is an error that shows the first problems.
pub fn load(task: Task, path: &Path) -> Result<Loaded> {
    let text = read::read_text(path)?;
    let mut loaded = Loaded {
        task,
        path: path.to_path_buf(),
        items: vec![],
        skipped: vec![],
        layouts: BTreeMap::new(),
    };
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if task == Task::Hellaswag && !first.trim_start().starts_with('{') {
        let (items, problems) = hellaswag::six_line(&text);
        loaded.layouts.insert(Layout::SixLine, items.len());
        loaded.items = items;
        loaded.skipped = problems;
    } else {
        for (line, row) in read::json_rows(&text) {
            match row.and_then(|r| task.parse_row(&r)) {
                Ok((item, layout)) => {
                    *loaded.layouts.entry(layout).or_default() += 1;
                    loaded.items.push((line, item));
                }
                Err(message) => loaded.skipped.push(Problem { line, message }),
            }
        }
    }
    if loaded.items.is_empty() {
        let why = if loaded.skipped.is_empty() {
            "the file is empty".to_string()
        } else {
            loaded.skipped_report(3).join("\n  ")
        };
        bail!(
            "{}: no usable {} rows ({} skipped):\n  {why}",
            path.display(),
            task.name(),
            loaded.skipped.len()
        );
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lists_parse() {
        assert_eq!(Task::parse_list("all").unwrap().len(), 8);
        assert_eq!(
            Task::parse_list("piqa, lambada_openai,piqa").unwrap(),
            [Task::Piqa, Task::Lambada]
        );
        let e = Task::parse_list("piqa,mmlu").unwrap_err().to_string();
        assert!(e.contains("mmlu") && e.contains("arc_easy"), "{e}");
    }

    #[test]
    fn malformed_rows_are_counted_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("piqa.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}"#,
                "\n{broken\n",
                r#"{"goal": "g", "sol1": "a", "label": 1}"#,
                "\n"
            ),
        )
        .unwrap();
        assert_eq!(find_file(Task::Piqa, dir.path()).unwrap(), p);
        let l = load(Task::Piqa, &p).unwrap();
        assert_eq!(l.items.len(), 1);
        assert_eq!(l.skipped.len(), 2);
        let r = l.skipped_report(5);
        assert!(
            r[0].ends_with(":2: invalid JSON (key must be a string at line 1 column 2)"),
            "{}",
            r[0]
        );
        assert!(r[1].contains(":3: field `sol2` is missing"), "{}", r[1]);
        std::fs::write(&p, "{}\n").unwrap();
        let e = load(Task::Piqa, &p).unwrap_err().to_string();
        assert!(e.contains("no usable piqa rows"), "{e}");
        let e = find_file(Task::Boolq, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("boolq.jsonl") && e.contains("--file boolq=PATH"),
            "{e}"
        );
    }
}
