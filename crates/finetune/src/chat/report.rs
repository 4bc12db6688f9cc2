//! What happened to the data: lines read, conversations kept, truncated or dropped, and every
//! malformed line counted by reason with the first place it occurred.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Why a line (or a whole file) could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// The line is not JSON (or not UTF-8).
    BadJson,
    /// A JSON object, but not one of the formats we read.
    UnrecognisedShape,
    /// A known format with a field of the wrong type (e.g. `content` a number).
    BadField,
    /// A role other than system/user/assistant (ShareGPT: system/human/gpt).
    UnknownRole,
    /// An assistant reply (or a chosen/rejected response) that is empty.
    EmptyAssistant,
    /// A conversation without any assistant reply: nothing to learn from.
    NoAssistant,
    /// A preference pair whose prompt does not end with a user turn.
    PromptNotUser,
    /// A preference pair in SFT data, or a plain conversation in preference data.
    WrongKind,
    /// The chat template refused the conversation (e.g. roles do not alternate).
    TemplateError,
    /// A file with no data lines.
    EmptyFile,
}

impl Malformed {
    /// A few words for tables and messages.
    pub fn describe(self) -> &'static str {
        match self {
            Malformed::BadJson => "bad JSON",
            Malformed::UnrecognisedShape => "unrecognised shape",
            Malformed::BadField => "bad field",
            Malformed::UnknownRole => "unknown role",
            Malformed::EmptyAssistant => "empty assistant turn",
            Malformed::NoAssistant => "no assistant turn",
            Malformed::PromptNotUser => "prompt not ending with a user turn",
            Malformed::WrongKind => "wrong kind of record",
            Malformed::TemplateError => "chat template error",
            Malformed::EmptyFile => "empty file",
        }
    }

    /// What the user can do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Malformed::BadJson => {
                "write one JSON object per line (JSONL); a JSON array file converts with \
                 `jq -c '.[]' data.json > data.jsonl`"
            }
            Malformed::UnrecognisedShape => {
                "use one of the formats: {\"messages\":[{\"role\",\"content\"}]} (OpenAI), \
                 {\"conversations\":[{\"from\",\"value\"}]} (ShareGPT), \
                 {\"instruction\",\"input\",\"output\"} (Alpaca), or for DPO \
                 {\"prompt\",\"chosen\",\"rejected\"}"
            }
            Malformed::BadField => {
                "give each field the type its format expects (text as JSON strings)"
            }
            Malformed::UnknownRole => {
                "use the roles system, user and assistant (ShareGPT: system, human, gpt)"
            }
            Malformed::EmptyAssistant => "remove the line or fill in the reply",
            Malformed::NoAssistant => "add the assistant's reply or remove the line",
            Malformed::PromptNotUser => "end the prompt with the user turn the responses answer",
            Malformed::WrongKind => {
                "SFT reads conversations and DPO reads prompt/chosen/rejected pairs; pass the \
                 file to the matching mode"
            }
            Malformed::TemplateError => {
                "make the conversation fit the chat template (most templates want user and \
                 assistant turns to alternate, with an optional system message first)"
            }
            Malformed::EmptyFile => "remove the file from the list or fill it",
        }
    }
}

/// How often a reason occurred and where first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MalformedCount {
    pub count: usize,
    /// `path:line` of the first occurrence (just `path` for an empty file).
    pub first: String,
    /// What was wrong with the first occurrence.
    pub detail: String,
}

/// A summary of a chat data set as it was read and turned into training material.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// "conversations" (SFT) or "preference pairs" (DPO).
    pub unit: String,
    pub files: Vec<String>,
    /// Non-blank lines read (blank lines are skipped and not counted).
    pub lines_read: usize,
    /// Records per format (openai, sharegpt, alpaca, preference), as recognised.
    pub formats: BTreeMap<String, usize>,
    /// Conversations (or pairs) that made it into the data, truncated ones included.
    pub conversations_kept: usize,
    /// Kept after dropping leading turns to fit `seq_len`.
    pub truncated: usize,
    /// Dropped because even the last exchange does not fit (or `overflow = drop`).
    pub dropped_too_long: usize,
    pub malformed: BTreeMap<Malformed, MalformedCount>,
    /// Positions that carry a loss target.
    pub target_tokens: usize,
    /// Tokens of the kept conversations (both responses of a pair).
    pub total_tokens: usize,
    /// Training rows built (0 for preference data before `pair_rows`).
    pub rows: usize,
    pub seq_len: usize,
}

impl DataReport {
    pub fn new(unit: &str, seq_len: usize) -> Self {
        DataReport {
            unit: unit.into(),
            seq_len,
            ..Default::default()
        }
    }

    /// Counts one malformed record; the first occurrence's place and detail are kept.
    pub fn record(&mut self, reason: Malformed, origin: &str, detail: impl Into<String>) {
        self.malformed
            .entry(reason)
            .and_modify(|c| c.count += 1)
            .or_insert_with(|| MalformedCount {
                count: 1,
                first: origin.to_string(),
                detail: detail.into(),
            });
    }

    pub fn malformed_total(&self) -> usize {
        self.malformed.values().map(|c| c.count).sum()
    }

    /// The reason with the highest count (ties: the first in declaration order).
    pub fn most_common(&self) -> Option<(Malformed, &MalformedCount)> {
        let mut best: Option<(Malformed, &MalformedCount)> = None;
        for (r, c) in &self.malformed {
            if best.is_none_or(|(_, b)| c.count > b.count) {
                best = Some((*r, c));
            }
        }
        best
    }

    /// The error for a data set where nothing usable remains: names the files, the most
    /// common reason with its first place, and the fix.
    pub fn nothing_usable(&self) -> anyhow::Error {
        let files = self.files.join(", ");
        if let Some((reason, c)) = self.most_common() {
            anyhow::anyhow!(
                "no usable {} in {files}: {} of {} lines are malformed, most often {} ({}x, first at {}: {}); fix: {}{}",
                self.unit,
                self.malformed_total(),
                self.lines_read,
                reason.describe(),
                c.count,
                c.first,
                c.detail,
                reason.fix(),
                if self.dropped_too_long > 0 {
                    format!(
                        "; besides, {} were too long for seq_len {}",
                        self.dropped_too_long, self.seq_len
                    )
                } else {
                    String::new()
                }
            )
        } else if self.dropped_too_long > 0 {
            anyhow::anyhow!(
                "no usable {} in {files}: all {} are longer than seq_len {} tokens even with \
                 only the last exchange kept; raise seq_len or use shorter conversations",
                self.unit,
                self.dropped_too_long,
                self.seq_len
            )
        } else {
            anyhow::anyhow!(
                "no usable {} in {files}: no data lines; pass JSONL files with one record per line",
                self.unit
            )
        }
    }
}

impl fmt::Display for DataReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chat data: {} file{}, {} lines read",
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            self.lines_read
        )?;
        if !self.formats.is_empty() {
            let list: Vec<String> = self
                .formats
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  {:<12} {}", "formats", list.join(", "))?;
        }
        writeln!(
            f,
            "  {:<12} {} {} ({} truncated to fit seq_len {})",
            "kept", self.conversations_kept, self.unit, self.truncated, self.seq_len
        )?;
        writeln!(f, "  {:<12} {} too long", "dropped", self.dropped_too_long)?;
        writeln!(f, "  {:<12} {}", "malformed", self.malformed_total())?;
        for (r, c) in &self.malformed {
            writeln!(
                f,
                "    {:<34} {:>6}  first at {} ({})",
                r.describe(),
                c.count,
                c.first,
                c.detail
            )?;
        }
        let pct = if self.total_tokens > 0 {
            100.0 * self.target_tokens as f64 / self.total_tokens as f64
        } else {
            0.0
        };
        write!(
            f,
            "  {:<12} {} ({} targets, {pct:.1}%)",
            "tokens", self.total_tokens, self.target_tokens
        )?;
        if self.rows > 0 {
            write!(
                f,
                "\n  {:<12} {} of {} positions",
                "rows", self.rows, self.seq_len
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_keep_the_first_place() {
        let mut r = DataReport::new("conversations", 64);
        r.files = vec!["a.jsonl".into()];
        r.lines_read = 5;
        r.record(Malformed::UnknownRole, "a.jsonl:2", "role `bot`");
        r.record(Malformed::BadJson, "a.jsonl:3", "expected value");
        r.record(Malformed::UnknownRole, "a.jsonl:5", "role `tool`");
        assert_eq!(r.malformed_total(), 3);
        let (reason, c) = r.most_common().unwrap();
        assert_eq!(reason, Malformed::UnknownRole);
        assert_eq!((c.count, c.first.as_str()), (2, "a.jsonl:2"));
        assert_eq!(c.detail, "role `bot`");
        let e = r.nothing_usable().to_string();
        assert!(e.contains("a.jsonl"), "{e}");
        assert!(e.contains("unknown role (2x, first at a.jsonl:2"), "{e}");
        assert!(
            e.contains("fix: use the roles system, user and assistant"),
            "{e}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["malformed"]["unknown_role"]["count"], 2);
        assert_eq!(json["malformed"]["bad_json"]["first"], "a.jsonl:3");
        let table = r.to_string();
        assert!(table.contains("unknown role"), "{table}");
        assert!(table.contains("first at a.jsonl:3"), "{table}");
    }

    #[test]
    fn nothing_usable_without_malformed_lines() {
        let mut r = DataReport::new("conversations", 16);
        r.files = vec!["b.jsonl".into()];
        r.dropped_too_long = 4;
        let e = r.nothing_usable().to_string();
        assert!(e.contains("longer than seq_len 16"), "{e}");
        let r = DataReport::new("preference pairs", 16);
        assert!(r.nothing_usable().to_string().contains("no data lines"));
    }
}
