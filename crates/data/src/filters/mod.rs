//! Document filters. Each filter is switchable (`enabled`), each of its rules can be skipped by
//! name (`skip = ["rule", …]`), and a rejected document is counted under exactly one rule name,
//! `<filter>/<rule>`, the first that fails. Filters run in this fixed order (cheap and
//! decisive first, then datatrove's FineWeb order):
//!
//! length → url_blocklist → wordlist → language → gopher_repetition → gopher_quality → c4 →
//! fineweb
//!
//! Only `c4` changes the text (it removes lines); the later filters see the changed text, and
//! the emit stage re-applies it to reproduce exactly the text that was judged.

pub mod c4;
pub mod fineweb;
pub mod gopher;
pub mod language;
pub mod length;
pub mod urlblock;
pub mod wordlist;
pub mod words;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use words::Words;

/// A document as the filters see it: its text plus lazily computed, cached analyses.
pub struct FilterDoc<'a> {
    text: String,
    pub url: Option<&'a str>,
    words: Option<Words>,
    chars: Option<usize>,
    /// Lines removed by line-level rules, by rule name.
    pub lines_removed: Vec<(&'static str, u32)>,
}

impl<'a> FilterDoc<'a> {
    pub fn new(text: String, url: Option<&'a str>) -> Self {
        FilterDoc {
            text,
            url,
            words: None,
            chars: None,
            lines_removed: Vec::new(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }

    /// The text and its words (split on first use).
    pub fn words(&mut self) -> (&str, &mut Words) {
        if self.words.is_none() {
            self.words = Some(words::split_words(&self.text));
        }
        (&self.text, self.words.as_mut().unwrap())
    }

    /// Length in characters, as Python's `len(text)`.
    pub fn char_len(&mut self) -> usize {
        *self.chars.get_or_insert_with(|| self.text.chars().count())
    }

    /// Replaces the text and drops the cached analyses.
    pub fn set_text(&mut self, text: String) {
        self.text = text;
        self.words = None;
        self.chars = None;
    }

    pub fn remove_line(&mut self, rule: &'static str) {
        match self.lines_removed.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => self.lines_removed.push((rule, 1)),
        }
    }
}

pub trait Filter: Send + Sync {
    /// `Some(rule)` rejects the document under `rule` (`filter/rule`).
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str>;
    /// True for filters that change the text of documents they keep.
    fn modifies_text(&self) -> bool {
        false
    }
}

/// Checks a `skip` list against a filter's rule names.
pub(crate) fn check_skip(filter: &str, skip: &[String], rules: &[&str]) -> Result<()> {
    for s in skip {
        if !rules.contains(&s.as_str()) {
            bail!(
                "filters.{filter}.skip: unknown rule {s:?}; the rules are: {}",
                rules.join(", ")
            );
        }
    }
    Ok(())
}

pub(crate) fn on(skip: &[String], rule: &str) -> bool {
    !skip.iter().any(|s| s == rule)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    pub length: length::LengthConfig,
    pub url_blocklist: urlblock::UrlBlocklistConfig,
    pub wordlist: wordlist::WordlistConfig,
    pub language: language::LanguageConfig,
    pub gopher_repetition: gopher::GopherRepetitionConfig,
    pub gopher_quality: gopher::GopherQualityConfig,
    pub c4: c4::C4Config,
    pub fineweb: fineweb::FineWebConfig,
}

impl FiltersConfig {
    /// Every filter with its default thresholds switched on, except those that need
    /// user-supplied lists (url_blocklist, wordlist) and the language filter.
    pub fn all_quality() -> Self {
        let mut f = FiltersConfig::default();
        f.length.enabled = true;
        f.gopher_repetition.enabled = true;
        f.gopher_quality.enabled = true;
        f.c4.enabled = true;
        f.fineweb.enabled = true;
        f
    }

    pub fn validate(&self) -> Result<()> {
        self.length.validate()?;
        self.url_blocklist.validate()?;
        self.wordlist.validate()?;
        self.language.validate()?;
        self.gopher_repetition.validate()?;
        self.gopher_quality.validate()?;
        self.c4.validate()?;
        self.fineweb.validate()?;
        Ok(())
    }

    pub fn any_enabled(&self) -> bool {
        self.length.enabled
            || self.url_blocklist.enabled
            || self.wordlist.enabled
            || self.language.enabled
            || self.gopher_repetition.enabled
            || self.gopher_quality.enabled
            || self.c4.enabled
            || self.fineweb.enabled
    }
}

/// The enabled filters, in order, with their lists loaded.
pub struct FilterChain {
    filters: Vec<Box<dyn Filter>>,
}

impl FilterChain {
    pub fn build(cfg: &FiltersConfig) -> Result<Self> {
        cfg.validate()?;
        let mut filters: Vec<Box<dyn Filter>> = Vec::new();
        if cfg.length.enabled {
            filters.push(Box::new(length::Length::new(&cfg.length)));
        }
        if cfg.url_blocklist.enabled {
            filters.push(Box::new(urlblock::UrlBlocklist::load(&cfg.url_blocklist)?));
        }
        if cfg.wordlist.enabled {
            filters.push(Box::new(wordlist::Wordlist::load(&cfg.wordlist)?));
        }
        if cfg.language.enabled {
            filters.push(Box::new(language::Language::new(&cfg.language)?));
        }
        if cfg.gopher_repetition.enabled {
            filters.push(Box::new(gopher::GopherRepetition::new(
                &cfg.gopher_repetition,
            )));
        }
        if cfg.gopher_quality.enabled {
            filters.push(Box::new(gopher::GopherQuality::new(&cfg.gopher_quality)));
        }
        if cfg.c4.enabled {
            filters.push(Box::new(c4::C4::new(&cfg.c4)));
        }
        if cfg.fineweb.enabled {
            filters.push(Box::new(fineweb::FineWeb::new(&cfg.fineweb)));
        }
        Ok(FilterChain { filters })
    }

    pub fn empty() -> Self {
        FilterChain {
            filters: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs every filter; `Some(rule)` for the first rejection.
    pub fn run(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        self.filters.iter().find_map(|f| f.apply(doc))
    }

    /// Re-applies only the text-changing filters (for documents already judged and kept).
    pub fn transform(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        self.filters
            .iter()
            .filter(|f| f.modifies_text())
            .find_map(|f| f.apply(doc))
    }

    pub fn modifies_text(&self) -> bool {
        self.filters.iter().any(|f| f.modifies_text())
    }
}
