//! The C4 line and document rules (Raffel et al. 2020), with datatrove's defaults. Line rules
//! remove lines from a kept document; document rules reject it. Sentences are counted by
//! terminal punctuation followed by whitespace rather than with NLTK's Punkt model.

use super::words::split_lines;
use super::{check_skip, on, Filter, FilterDoc};
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub const RULES: &[&str] = &[
    // line rules
    "too_long_word",
    "citations",
    "no_terminal_punct",
    "too_few_words",
    "javascript",
    "policy",
    // document rules
    "lorem_ipsum",
    "curly_bracket",
    "too_few_sentences",
    "empty",
];

/// Cookie and policy boilerplate named in the C4 paper.
const POLICY: &[&str] = &[
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C4Config {
    pub enabled: bool,
    pub min_num_sentences: usize,
    pub min_words_per_line: usize,
    pub max_word_length: usize,
    pub skip: Vec<String>,
}

impl Default for C4Config {
    fn default() -> Self {
        C4Config {
            enabled: false,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            skip: Vec::new(),
        }
    }
}

impl C4Config {
    pub fn validate(&self) -> Result<()> {
        check_skip("c4", &self.skip, RULES)
    }
}

pub struct C4 {
    c: C4Config,
    rule: [bool; 10],
}

impl C4 {
    pub fn new(c: &C4Config) -> Self {
        let mut rule = [true; 10];
        for (i, r) in RULES.iter().enumerate() {
            rule[i] = on(&c.skip, r);
        }
        C4 { c: c.clone(), rule }
    }
}

/// Removes `[12]`, `[]`, `[edit]` and `[citation needed]`.
fn remove_citations(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('[') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
        let skip = if after[digits..].starts_with(']') {
            Some(digits + 1)
        } else if after.starts_with("edit]") {
            Some(5)
        } else if after.starts_with("citation needed]") {
            Some(16)
        } else {
            None
        };
        match skip {
            Some(n) => rest = &after[n..],
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.into()
}

/// Sentences in a line: runs of `.`, `!`, `?` followed by whitespace end a sentence, and
/// the line's remainder is one more.
pub fn count_sentences(line: &str) -> usize {
    let b = line.trim().as_bytes();
    if b.is_empty() {
        return 0;
    }
    let mut n = 1;
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'.' | b'!' | b'?') {
            let mut j = i + 1;
            while j < b.len() && matches!(b[j], b'.' | b'!' | b'?' | b'"' | b'\'') {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_whitespace() {
                n += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    n
}

fn ends_with_terminal(line: &str) -> bool {
    line.ends_with(['.', '?', '!', '"', '\'']) && !line.ends_with("...")
}

impl Filter for C4 {
    fn modifies_text(&self) -> bool {
        true
    }

    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let c = &self.c;
        let r = &self.rule;
        let mut kept = String::with_capacity(doc.text().len());
        let mut sentences = 0usize;
        let mut removed: Vec<&'static str> = Vec::new();
        for raw in split_lines(doc.text()) {
            let line = raw.trim();
            let mut n_words = 0usize;
            let mut long_word = false;
            for w in line.split_whitespace() {
                n_words += 1;
                if w.len() > c.max_word_length && w.chars().count() > c.max_word_length {
                    long_word = true;
                }
            }
            if r[0] && long_word {
                removed.push("c4/too_long_word");
                continue;
            }
            let line = if r[1] {
                remove_citations(line)
            } else {
                line.into()
            };
            if r[2] && !ends_with_terminal(&line) {
                removed.push("c4/no_terminal_punct");
                continue;
            }
            if r[3] && n_words < c.min_words_per_line {
                removed.push("c4/too_few_words");
                continue;
            }
            let lower = line.to_lowercase();
            if r[6] && lower.contains("lorem ipsum") {
                return Some("c4/lorem_ipsum");
            }
            if r[4] && lower.contains("javascript") {
                removed.push("c4/javascript");
                continue;
            }
            if r[7] && line.contains('{') {
                return Some("c4/curly_bracket");
            }
            if r[5] && POLICY.iter().any(|p| lower.contains(p)) {
                removed.push("c4/policy");
                continue;
            }
            if r[8] {
                sentences += count_sentences(&line);
            }
            if !kept.is_empty() {
                kept.push('\n');
            }
            kept.push_str(&line);
        }
        if r[8] && sentences < c.min_num_sentences {
            return Some("c4/too_few_sentences");
        }
        let kept = kept.trim();
        if kept.is_empty() {
            if r[9] {
                return Some("c4/empty");
            }
            // Keeping an empty document would only add an EOS; keep the original instead.
            return None;
        }
        for rule in removed.iter().copied() {
            doc.remove_line(rule);
        }
        if kept != doc.text() {
            let kept = kept.to_string();
            doc.set_text(kept);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str) -> (Option<&'static str>, String, Vec<(&'static str, u32)>) {
        let f = C4::new(&C4Config::default());
        let mut d = FilterDoc::new(t.to_string(), None);
        let r = f.apply(&mut d);
        let removed = d.lines_removed.clone();
        (r, d.into_text(), removed)
    }

    #[test]
    fn line_and_document_rules() {
        let good = "The first line is a sentence. It has two.\n\
                    Menu\n\
                    Hi there.\n\
                    Second line talks about boats and water.\n\
                    This site uses cookies to improve things.\n\
                    Third line is fine too[12]. And more here.\n\
                    Enable JavaScript to see this page now.";
        let (r, text, removed) = run(good);
        assert_eq!(r, None);
        assert_eq!(
            text,
            "The first line is a sentence. It has two.\n\
             Second line talks about boats and water.\n\
             Third line is fine too. And more here."
        );
        for rule in [
            "c4/too_few_words",
            "c4/no_terminal_punct",
            "c4/policy",
            "c4/javascript",
        ] {
            assert!(removed.contains(&(rule, 1)), "{rule}: {removed:?}");
        }
        assert_eq!(
            run("Lorem ipsum dolor sit amet. More text here.").0,
            Some("c4/lorem_ipsum")
        );
        assert_eq!(
            run("function f() { return 1; } is code.\nA second sentence is here.").0,
            Some("c4/curly_bracket")
        );
        assert_eq!(
            run("One sentence only here.").0,
            Some("c4/too_few_sentences")
        );
    }

    #[test]
    fn sentences_and_citations() {
        assert_eq!(count_sentences("One. Two! Three? Four"), 4);
        assert_eq!(count_sentences("Version 3.5 is out."), 1);
        assert_eq!(
            remove_citations("a[1] b[edit] c[citation needed] d[x]"),
            "a b c d[x]"
        );
    }
}
