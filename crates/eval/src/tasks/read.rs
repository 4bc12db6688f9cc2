//! Reading task files: whole-file text (bzip2-compressed when the name ends in `.bz2`), JSON
//! lines with their line numbers, and typed field access whose errors name the field, so that a
//! malformed row is reported as `file:line: what is wrong` and skipped by count.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// One JSON object row.
pub type Row = Map<String, Value>;

/// The file's text, decompressed if its name ends in `.bz2`.
pub fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open task file {}", path.display()))?;
    let mut text = String::new();
    let name = path.to_string_lossy();
    if name.ends_with(".bz2") {
        bzip2::read::BzDecoder::new(file)
            .read_to_string(&mut text)
            .with_context(|| {
                format!(
                    "{}: not a bzip2 file of UTF-8 text (decompress it by hand or rename it without .bz2)",
                    path.display()
                )
            })?;
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    }
    Ok(text)
}

/// Non-blank lines of JSON-lines text as (1-based line number, object or the reason it is not one).
pub fn json_rows(
    text: &str,
) -> impl Iterator<Item = (usize, Result<Map<String, Value>, String>)> + '_ {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let row = match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err("not a JSON object".to_string()),
                Err(e) => Err(format!("invalid JSON ({e})")),
            };
            (i + 1, row)
        })
}

/// Typed access to a row's fields; every error names the field and what was expected.
pub trait Fields {
    fn str_field(&self, key: &str) -> Result<&str, String>;
    fn strings(&self, key: &str) -> Result<Vec<String>, String>;
    fn index(&self, key: &str, n: usize) -> Result<usize, String>;
    fn object(&self, key: &str) -> Result<&Map<String, Value>, String>;
}

impl Fields for Map<String, Value> {
    fn str_field(&self, key: &str) -> Result<&str, String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(format!(
                "field `{key}` should be a string, found {}",
                kind(v)
            )),
            None => Err(format!("field `{key}` is missing")),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        let Some(v) = self.get(key) else {
            return Err(format!("field `{key}` is missing"));
        };
        let Value::Array(a) = v else {
            return Err(format!(
                "field `{key}` should be a list of strings, found {}",
                kind(v)
            ));
        };
        a.iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "field `{key}` should hold strings only, found {}",
                    kind(other)
                )),
            })
            .collect()
    }

    /// An answer index below `n`, given as a number or a string of digits (HF rows store
    /// labels both ways).
    fn index(&self, key: &str, n: usize) -> Result<usize, String> {
        let i = match self.get(key) {
            Some(Value::Number(x)) => x.as_i64(),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(Value::Bool(b)) => Some(*b as i64),
            Some(v) => {
                return Err(format!(
                    "field `{key}` should be an answer index, found {}",
                    kind(v)
                ))
            }
            None => return Err(format!("field `{key}` is missing")),
        };
        match i {
            Some(i) if i >= 0 && (i as usize) < n => Ok(i as usize),
            _ => Err(format!(
                "field `{key}` = {} is not an answer index in 0..{n} (an unlabelled test split?)",
                self[key]
            )),
        }
    }

    fn object(&self, key: &str) -> Result<&Map<String, Value>, String> {
        match self.get(key) {
            Some(Value::Object(m)) => Ok(m),
            Some(v) => Err(format!(
                "field `{key}` should be an object, found {}",
                kind(v)
            )),
            None => Err(format!("field `{key}` is missing")),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_line_numbers_and_reasons() {
        let rows: Vec<_> = json_rows("{\"a\": 1}\n\n[1]\n{oops\n").collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, 1);
        assert!(rows[0].1.is_ok());
        assert_eq!(rows[1].0, 3);
        assert_eq!(rows[1].1.as_ref().unwrap_err(), "not a JSON object");
        assert_eq!(rows[2].0, 4);
        assert!(rows[2].1.as_ref().unwrap_err().starts_with("invalid JSON"));
    }

    #[test]
    fn field_errors_name_the_field() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"s": 3, "l": ["a", 2], "g": "2", "h": -1}"#).unwrap();
        assert!(m.str_field("s").unwrap_err().contains("`s`"));
        assert!(m.str_field("x").unwrap_err().contains("missing"));
        assert!(m.strings("l").unwrap_err().contains("strings only"));
        assert_eq!(m.index("g", 4), Ok(2));
        assert!(m.index("g", 2).is_err());
        assert!(m.index("h", 2).unwrap_err().contains("test split"));
    }
}
