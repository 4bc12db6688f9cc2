//! Minimum and maximum document length in characters.

use super::{check_skip, on, Filter, FilterDoc};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

pub const RULES: &[&str] = &["too_short", "too_long"];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LengthConfig {
    pub enabled: bool,
    pub min_chars: usize,
    pub max_chars: usize,
    pub skip: Vec<String>,
}

impl Default for LengthConfig {
    fn default() -> Self {
        LengthConfig {
            enabled: false,
            min_chars: 1,
            max_chars: 1_000_000,
            skip: Vec::new(),
        }
    }
}

impl LengthConfig {
    pub fn validate(&self) -> Result<()> {
        check_skip("length", &self.skip, RULES)?;
        if self.min_chars > self.max_chars {
            bail!(
                "filters.length: min_chars {} is above max_chars {}",
                self.min_chars,
                self.max_chars
            );
        }
        Ok(())
    }
}

pub struct Length {
    min: Option<usize>,
    max: Option<usize>,
}

impl Length {
    pub fn new(c: &LengthConfig) -> Self {
        Length {
            min: on(&c.skip, "too_short").then_some(c.min_chars),
            max: on(&c.skip, "too_long").then_some(c.max_chars),
        }
    }
}

impl Filter for Length {
    fn apply(&self, doc: &mut FilterDoc) -> Option<&'static str> {
        // Byte length bounds the character count from above, which settles most documents
        // without counting.
        let bytes = doc.text().len();
        if let Some(min) = self.min {
            if bytes < min || doc.char_len() < min {
                return Some("length/too_short");
            }
        }
        if let Some(max) = self.max {
            if bytes > max && doc.char_len() > max {
                return Some("length/too_long");
            }
        }
        None
    }
}
