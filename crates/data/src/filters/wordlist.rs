//! Offensive-word rule: word lists in the LDNOOBW format (one word or phrase per line), matched
//! whole-word and case-insensitively with one Aho-Corasick automaton. Lines starting with `#`
//! are comments. The project ships no real list; users supply theirs.

use super::{Filter, FilterDoc};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WordlistConfig {
    pub enabled: bool,
    /// List files, one entry per line.
    pub files: Vec<PathBuf>,
    /// Reject when a document has more than this many matches (0: any match rejects).
    pub max_matches: usize,
    /// Only match at word boundaries ("ass" does not match "class"). Turn off for scripts
    /// written without spaces.
    pub whole_word: bool,
}

impl Default for WordlistConfig {
    fn default() -> Self {
        WordlistConfig {
            enabled: false,
            files: Vec::new(),
            max_matches: 0,
            whole_word: true,
        }
    }
}

impl WordlistConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled && self.files.is_empty() {
            bail!("filters.wordlist is enabled but lists no files: set files = [\"path/to/list.txt\"]");
        }
        Ok(())
    }
}

pub struct Wordlist {
    ac: AhoCorasick,
    /// All patterns are ASCII, so ASCII case folding on the original text is exact enough and
    /// avoids lowercasing every document.
    ascii: bool,
    max_matches: usize,
    whole_word: bool,
}

/// Reads a list file: trimmed, lowercased, blank lines and `#` comments skipped.
pub fn read_list(path: &std::path::Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read word list {} (filters.wordlist.files)",
            path.display()
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 (byte {}); save the list as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.to_lowercase())
        .collect())
}

impl Wordlist {
    pub fn load(c: &WordlistConfig) -> Result<Self> {
        let mut words = Vec::new();
        for f in &c.files {
            words.extend(read_list(f)?);
        }
        if words.is_empty() {
            bail!(
                "filters.wordlist: the lists {:?} contain no entries",
                c.files
            );
        }
        Self::from_words(&words, c.max_matches, c.whole_word)
    }

    pub fn from_words(words: &[String], max_matches: usize, whole_word: bool) -> Result<Self> {
        let ascii = words.iter().all(|w| w.is_ascii());
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(ascii)
            .build(words)
            .context("building the word-list automaton")?;
        Ok(Wordlist {
            ac,
            ascii,
            max_matches,
            whole_word,
        })
    }

    /// Whole-word matches in `text`, stopping once `limit` is exceeded.
    fn count(&self, text: &str, limit: usize) -> usize {
        let mut n = 0;
        for m in self.ac.find_overlapping_iter(text) {
            if self.whole_word {
                let before = text[..m.start()].chars().next_back();
                let after = text[m.end()..].chars().next();
                if before.is_some_and(char::is_alphanumeric)
                    || after.is_some_and(char::is_alphanumeric)
                {
                    continue;
                }
            }
            n += 1;
            if n > limit {
                break;
            }
        }
        n
    }
}

impl Filter for Wordlist {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let n = if self.ascii {
            self.count(doc.text(), self.max_matches)
        } else {
            self.count(&doc.text().to_lowercase(), self.max_matches)
        };
        (n > self.max_matches).then_some("wordlist/match")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn whole_word_case_insensitive() {
        // Invented tokens stand in for a real list.
        let w = Wordlist::from_words(&["zorblax".into(), "flerb wozzle".into()], 0, true).unwrap();
        let run = |t: &str| w.apply(&mut FilterDoc::new(t.into(), None));
        assert_eq!(run("a ZORBLAX here"), Some("wordlist/match"));
        assert_eq!(run("the Flerb Wozzle."), Some("wordlist/match"));
        assert_eq!(run("zorblaxes and prezorblax"), None);
        assert_eq!(run("clean text"), None);
        let two = Wordlist::from_words(&["zorblax".into()], 1, true).unwrap();
        assert_eq!(two.apply(&mut FilterDoc::new("zorblax".into(), None)), None);
        assert_eq!(
            two.apply(&mut FilterDoc::new("zorblax, zorblax".into(), None)),
            Some("wordlist/match")
        );
        let uni = Wordlist::from_words(&["ñandúx".into()], 0, true).unwrap();
        assert_eq!(
            uni.apply(&mut FilterDoc::new("Un ÑANDÚX.".into(), None)),
            Some("wordlist/match")
        );
    }
}
