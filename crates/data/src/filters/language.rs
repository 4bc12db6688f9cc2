//! Optional language filter using whatlang's trigram detector on the start of each document.

use super::{Filter, FilterDoc};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    pub enabled: bool,
    /// ISO 639-3 codes to keep (`eng`, `fra`, `deu`, …).
    pub languages: Vec<String>,
    /// whatlang's confidence, 0..1.
    pub min_confidence: f64,
    /// Characters examined from the start of each document.
    pub sample_chars: usize,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig {
            enabled: false,
            languages: vec!["eng".into()],
            min_confidence: 0.5,
            sample_chars: 2000,
        }
    }
}

impl LanguageConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.languages.is_empty() {
            bail!("filters.language.languages is empty: list ISO 639-3 codes such as \"eng\"");
        }
        for l in &self.languages {
            if whatlang::Lang::from_code(l).is_none() {
                bail!("filters.language.languages: {l:?} is not an ISO 639-3 code whatlang knows (e.g. \"eng\", \"fra\", \"cmn\")");
            }
        }
        Ok(())
    }
}

pub struct Language {
    langs: Vec<whatlang::Lang>,
    min_confidence: f64,
    sample_chars: usize,
}

impl Language {
    pub fn new(c: &LanguageConfig) -> Result<Self> {
        c.validate()?;
        Ok(Language {
            langs: c
                .languages
                .iter()
                .filter_map(whatlang::Lang::from_code)
                .collect(),
            min_confidence: c.min_confidence,
            sample_chars: c.sample_chars.max(1),
        })
    }
}

impl Filter for Language {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        let t = doc.text();
        let end = t
            .char_indices()
            .nth(self.sample_chars)
            .map_or(t.len(), |(i, _)| i);
        let Some(info) = whatlang::detect(&t[..end]) else {
            return Some("language/undetected");
        };
        if !self.langs.contains(&info.lang()) {
            return Some("language/not_allowed");
        }
        if info.confidence() < self.min_confidence {
            return Some("language/low_confidence");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn keeps_english() {
        let f = Language::new(&LanguageConfig {
            enabled: true,
            ..Default::default()
        })
        .unwrap();
        let en = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence near the barn.";
        let de = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer vom alten Holzzaun neben der Scheune zusieht.";
        assert_eq!(f.apply(&mut FilterDoc::new(en.into(), None)), None);
        assert_eq!(
            f.apply(&mut FilterDoc::new(de.into(), None)),
            Some("language/not_allowed")
        );
    }
}
