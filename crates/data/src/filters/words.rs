//! Word splitting shared by the Gopher and FineWeb rules. datatrove uses NLTK's Treebank
//! tokenizer for English; we approximate it without a model: split on whitespace, then split
//! leading and trailing punctuation runs off into their own tokens ("end." → "end", ".").
//! Lengths are counted in characters (code points), as Python's `len` does.

use crate::hashing::hash_bytes;
use unicode_categories::UnicodeCategories;

/// Punctuation or symbol, the set datatrove's "non-symbol word" rule excludes.
#[inline]
pub fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        c.is_punctuation() || c.is_symbol()
    }
}

#[derive(Default, Debug)]
pub struct Words {
    /// Byte spans in the text.
    pub spans: Vec<(u32, u32)>,
    /// Length of each word in characters.
    pub chars: Vec<u32>,
    /// The word contains a character that is not punctuation.
    pub non_symbol: Vec<bool>,
    /// The word contains an alphabetic character.
    pub alpha: Vec<bool>,
    hashes: Vec<u64>,
}

impl Words {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn word<'t>(&self, text: &'t str, i: usize) -> &'t str {
        let (a, b) = self.spans[i];
        &text[a as usize..b as usize]
    }

    /// Computes the per-word hashes (once); read them with [`Words::hashes`].
    pub fn ensure_hashes(&mut self, text: &str) {
        if self.hashes.len() != self.spans.len() {
            self.hashes = self
                .spans
                .iter()
                .map(|&(a, b)| hash_bytes(&text.as_bytes()[a as usize..b as usize]))
                .collect();
        }
    }

    /// Per-word hashes; empty until [`Words::ensure_hashes`].
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    fn push(&mut self, start: usize, end: usize, chars: u32, non_symbol: bool, alpha: bool) {
        self.spans.push((start as u32, end as u32));
        self.chars.push(chars);
        self.non_symbol.push(non_symbol);
        self.alpha.push(alpha);
    }
}

pub fn split_words(text: &str) -> Words {
    let mut w = Words::default();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Skip whitespace.
        let c = text[i..].chars().next().unwrap();
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        // The whitespace-delimited token starting at i.
        let start = i;
        let mut end = i;
        for (off, ch) in text[i..].char_indices() {
            if ch.is_whitespace() {
                break;
            }
            end = i + off + ch.len_utf8();
        }
        split_token(text, start, end, &mut w);
        i = end;
    }
    w
}

fn split_token(text: &str, start: usize, end: usize, w: &mut Words) {
    let tok = &text[start..end];
    // Leading punctuation run.
    let mut lead_end = 0;
    let mut lead_chars = 0u32;
    for (off, ch) in tok.char_indices() {
        if !is_punct(ch) {
            break;
        }
        lead_end = off + ch.len_utf8();
        lead_chars += 1;
    }
    if lead_end == tok.len() {
        // All punctuation: one symbol token.
        w.push(start, end, lead_chars, false, false);
        return;
    }
    // Trailing punctuation run.
    let mut trail_start = tok.len();
    let mut trail_chars = 0u32;
    for (off, ch) in tok.char_indices().rev() {
        if !is_punct(ch) {
            break;
        }
        trail_start = off;
        trail_chars += 1;
    }
    if lead_end > 0 {
        w.push(start, start + lead_end, lead_chars, false, false);
    }
    let core = &tok[lead_end..trail_start];
    let mut chars = 0u32;
    let mut alpha = false;
    for ch in core.chars() {
        chars += 1;
        alpha |= ch.is_alphabetic();
    }
    w.push(start + lead_end, start + trail_start, chars, true, alpha);
    if trail_start < tok.len() {
        w.push(start + trail_start, end, trail_chars, false, false);
    }
}

/// Python's `str.splitlines()` for the separators that occur in practice (`\n`, `\r\n`, `\r`),
/// without the trailing empty line.
pub fn split_lines(text: &str) -> SplitLines<'_> {
    SplitLines { rest: text }
}

pub struct SplitLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for SplitLines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest.as_bytes();
        match memchr::memchr2(b'\n', b'\r', b) {
            None => {
                let l = self.rest;
                self.rest = "";
                Some(l)
            }
            Some(i) => {
                let l = &self.rest[..i];
                let skip = if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = &self.rest[i + skip..];
                Some(l)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn splits_punctuation_off() {
        let t = "Hello, world... (it's) 3.5 ¿qué? —";
        let w = split_words(t);
        let got: Vec<&str> = (0..w.len()).map(|i| w.word(t, i)).collect();
        assert_eq!(
            got,
            vec!["Hello", ",", "world", "...", "(", "it's", ")", "3.5", "¿", "qué", "?", "—"]
        );
        assert_eq!(w.chars[9], 3);
        assert!(!w.non_symbol[1] && w.non_symbol[0] && w.alpha[0] && !w.alpha[7]);
    }
    #[test]
    fn lines_like_python() {
        let v: Vec<&str> = split_lines("a\r\nb\n\nc\rd\n").collect();
        assert_eq!(v, vec!["a", "b", "", "c", "d"]);
    }
}
