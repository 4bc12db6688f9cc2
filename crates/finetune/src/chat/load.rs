//! Reading JSONL chat files: every non-blank line is parsed; unusable ones are counted in the
//! report by reason with their first `path:line`, never fatal and never silently skipped.

use super::formats::{parse_line, Record};
use super::report::{DataReport, Malformed};
use super::rows::{
    build_preferences, build_sft, ChatOptions, Conversation, PreferenceData, PreferenceRecord,
    SftData,
};
use super::split::{messages_key, split_validation};
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use tinyllama_infer::chat_template::ChatTemplate;
use tinyllama_model::tokenizer::Tokenizer;

/// Where validation data comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Validation {
    #[default]
    None,
    /// Separate files, read like the training files.
    Files(Vec<PathBuf>),
    /// A share of the training data, chosen by a seeded hash of each conversation (pair).
    Fraction { fraction: f64, seed: u64 },
}

/// Calls `each` with every parsed record and its `path:line`; counts the rest in `report`.
pub fn read_records(
    paths: &[PathBuf],
    report: &mut DataReport,
    mut each: impl FnMut(Record, String),
) -> Result<()> {
    if paths.is_empty() {
        bail!("no chat data files given; pass one or more JSONL files");
    }
    for path in paths {
        report.files.push(path.display().to_string());
        read_file(path, report, &mut each)?;
    }
    Ok(())
}

fn read_file(
    path: &Path,
    report: &mut DataReport,
    each: &mut impl FnMut(Record, String),
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot open chat data file {}; check the path",
            path.display()
        )
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut data_lines = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {} after line {line_no}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let origin = format!("{}:{line_no}", path.display());
        let Ok(text) = std::str::from_utf8(&buf) else {
            data_lines += 1;
            report.lines_read += 1;
            report.record(Malformed::BadJson, &origin, "the line is not valid UTF-8");
            continue;
        };
        let text = if line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        data_lines += 1;
        report.lines_read += 1;
        match parse_line(text) {
            Ok(rec) => each(rec, origin),
            Err(p) => report.record(p.reason, &origin, p.detail),
        }
    }
    if data_lines == 0 {
        report.record(
            Malformed::EmptyFile,
            &path.display().to_string(),
            "no data lines",
        );
    }
    Ok(())
}

/// The conversations of SFT files, with the report of the reading (preference pairs in them
/// are counted as the wrong kind).
pub fn read_conversations(
    paths: &[PathBuf],
    seq_len: usize,
) -> Result<(Vec<Conversation>, DataReport)> {
    let mut report = DataReport::new("conversations", seq_len);
    let mut convs = Vec::new();
    let mut formats = std::collections::BTreeMap::new();
    let mut wrong = Vec::new();
    read_records(paths, &mut report, |rec, origin| match rec {
        Record::Conversation { format, messages } => {
            *formats.entry(format.to_string()).or_insert(0) += 1;
            convs.push(Conversation { messages, origin });
        }
        Record::Preference { .. } => wrong.push(origin),
    })?;
    for origin in wrong {
        report.record(
            Malformed::WrongKind,
            &origin,
            "a preference pair (prompt/chosen/rejected) in SFT data",
        );
    }
    report.formats = formats;
    Ok((convs, report))
}

/// The preference records of DPO files, with the report of the reading (plain conversations
/// in them are counted as the wrong kind).
pub fn read_preference_records(
    paths: &[PathBuf],
    seq_len: usize,
) -> Result<(Vec<PreferenceRecord>, DataReport)> {
    let mut report = DataReport::new("preference pairs", seq_len);
    let mut recs = Vec::new();
    let mut wrong = Vec::new();
    read_records(paths, &mut report, |rec, origin| match rec {
        Record::Preference {
            prompt,
            chosen,
            rejected,
        } => recs.push(PreferenceRecord {
            prompt,
            chosen,
            rejected,
            origin,
        }),
        Record::Conversation { format, .. } => wrong.push((origin, format)),
    })?;
    for (origin, format) in wrong {
        report.record(
            Malformed::WrongKind,
            &origin,
            format!("a {format} conversation without `chosen`/`rejected` in preference data"),
        );
    }
    if !recs.is_empty() {
        report.formats.insert("preference".into(), recs.len());
    }
    Ok((recs, report))
}

/// Reads SFT files (OpenAI, ShareGPT or Alpaca JSONL, mixed freely) and builds training rows.
pub fn load_sft(
    paths: &[PathBuf],
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<SftData> {
    let (convs, report) = read_conversations(paths, opts.seq_len)?;
    build_sft(&convs, tmpl, tok, opts, report)
}

/// Reads preference JSONL files and renders the pairs.
pub fn load_preferences(
    paths: &[PathBuf],
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<PreferenceData> {
    let (recs, report) = read_preference_records(paths, opts.seq_len)?;
    build_preferences(&recs, tmpl, tok, opts, report)
}

fn check_fraction(fraction: f64) -> Result<()> {
    if !(fraction > 0.0 && fraction < 1.0) {
        bail!("the validation fraction must be between 0 and 1 (exclusive), got {fraction}");
    }
    Ok(())
}

fn held_out_report(train: &DataReport, n: usize, fraction: f64, seed: u64) -> DataReport {
    let mut r = DataReport::new(&train.unit, train.seq_len);
    r.files = vec![format!(
        "{:.4}% held out (seed {seed}) of {}",
        fraction * 100.0,
        train.files.join(", ")
    )];
    r.lines_read = n;
    r
}

fn empty_share(unit: &str, n: usize, fraction: f64) -> anyhow::Error {
    anyhow::anyhow!(
        "no {unit} fell in the {:.4}% validation share of {n}; raise the validation fraction \
         or pass a validation file",
        fraction * 100.0
    )
}

/// [`load_sft`] plus validation rows from separate files or a held-out share. The split is
/// by conversation, before packing, so no conversation is in both.
pub fn load_sft_with_validation(
    paths: &[PathBuf],
    validation: &Validation,
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<(SftData, Option<SftData>)> {
    match validation {
        Validation::None => Ok((load_sft(paths, tmpl, tok, opts)?, None)),
        Validation::Files(v) => {
            let train = load_sft(paths, tmpl, tok, opts)?;
            let valid = load_sft(v, tmpl, tok, opts).context("validation data")?;
            Ok((train, Some(valid)))
        }
        Validation::Fraction { fraction, seed } => {
            check_fraction(*fraction)?;
            let (convs, report) = read_conversations(paths, opts.seq_len)?;
            let n = convs.len();
            let (train, valid) =
                split_validation(convs, |c| messages_key(&c.messages), *fraction, *seed);
            if valid.is_empty() && n > 0 {
                return Err(empty_share("conversation", n, *fraction));
            }
            let vreport = held_out_report(&report, valid.len(), *fraction, *seed);
            let train = build_sft(&train, tmpl, tok, opts, report)?;
            let valid = build_sft(&valid, tmpl, tok, opts, vreport).context("validation data")?;
            Ok((train, Some(valid)))
        }
    }
}

/// [`load_preferences`] plus validation pairs from separate files or a held-out share.
pub fn load_preferences_with_validation(
    paths: &[PathBuf],
    validation: &Validation,
    tmpl: &ChatTemplate,
    tok: &Tokenizer,
    opts: &ChatOptions,
) -> Result<(PreferenceData, Option<PreferenceData>)> {
    match validation {
        Validation::None => Ok((load_preferences(paths, tmpl, tok, opts)?, None)),
        Validation::Files(v) => {
            let train = load_preferences(paths, tmpl, tok, opts)?;
            let valid = load_preferences(v, tmpl, tok, opts).context("validation data")?;
            Ok((train, Some(valid)))
        }
        Validation::Fraction { fraction, seed } => {
            check_fraction(*fraction)?;
            let data = load_preferences(paths, tmpl, tok, opts)?;
            let n = data.pairs.len();
            let (train, valid) = split_validation(data.pairs, |p| p.key, *fraction, *seed);
            if valid.is_empty() {
                return Err(empty_share("preference pair", n, *fraction));
            }
            let mut vreport = held_out_report(&data.report, valid.len(), *fraction, *seed);
            let mut report = data.report;
            vreport.conversations_kept = valid.len();
            report.conversations_kept = train.len();
            for (r, pairs) in [(&mut report, &train), (&mut vreport, &valid)] {
                r.total_tokens = pairs
                    .iter()
                    .map(|p| p.chosen.len() + p.rejected.len())
                    .sum();
                r.target_tokens = pairs
                    .iter()
                    .flat_map(|p| [&p.chosen, &p.rejected])
                    .map(|x| x.assistant.iter().skip(1).filter(|&&m| m).count())
                    .sum();
            }
            Ok((
                PreferenceData {
                    pairs: train,
                    report,
                },
                Some(PreferenceData {
                    pairs: valid,
                    report: vreport,
                }),
            ))
        }
    }
}
