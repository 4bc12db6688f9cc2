//! Parquet input without Arrow: the text column (and optional id/url/metadata/exclude columns)
//! read row group by row group, a batch of rows at a time, so memory stays bounded whatever
//! the file size. Columns are addressed by name; nested struct fields by their dotted path.

use super::{FileProblem, InputFile, Payload, RawRecord, ReadLimits, Row};
use crate::config::SourceConfig;
use crate::progress::Progress;
use anyhow::Result;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArrayType, DataType};
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use serde_json::Value;

enum Cell {
    Bytes(Vec<u8>),
    Json(Value),
}

impl Cell {
    fn into_string(self) -> String {
        match self {
            Cell::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            Cell::Json(Value::String(s)) => s,
            Cell::Json(v) => v.to_string(),
        }
    }
    fn into_json(self) -> Value {
        match self {
            Cell::Bytes(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
            Cell::Json(v) => v,
        }
    }
}

/// Reads `n` records of a typed column into cells (None for nulls).
fn read_typed<T: DataType>(
    r: &mut ColumnReaderImpl<T>,
    n: usize,
    max_def: i16,
    conv: impl Fn(&T::T) -> Cell,
) -> parquet::errors::Result<Vec<Option<Cell>>> {
    let mut out = Vec::with_capacity(n);
    let mut defs = Vec::new();
    let mut vals: Vec<T::T> = Vec::new();
    while out.len() < n {
        defs.clear();
        vals.clear();
        let (recs, _, _) = r.read_records(n - out.len(), Some(&mut defs), None, &mut vals)?;
        if recs == 0 {
            break;
        }
        if max_def == 0 {
            out.extend(vals.iter().map(|v| Some(conv(v))));
        } else {
            let mut vi = vals.iter();
            for &d in &defs {
                out.push(if d == max_def {
                    vi.next().map(&conv)
                } else {
                    None
                });
            }
        }
    }
    Ok(out)
}

fn read_column(
    r: &mut ColumnReader,
    n: usize,
    max_def: i16,
) -> parquet::errors::Result<Vec<Option<Cell>>> {
    match r {
        ColumnReader::ByteArrayColumnReader(r) => {
            read_typed::<ByteArrayType>(r, n, max_def, |v| Cell::Bytes(v.data().to_vec()))
        }
        ColumnReader::Int32ColumnReader(r) => {
            read_typed(r, n, max_def, |v| Cell::Json((*v).into()))
        }
        ColumnReader::Int64ColumnReader(r) => {
            read_typed(r, n, max_def, |v| Cell::Json((*v).into()))
        }
        ColumnReader::BoolColumnReader(r) => read_typed(r, n, max_def, |v| Cell::Json((*v).into())),
        ColumnReader::FloatColumnReader(r) => {
            read_typed(r, n, max_def, |v| Cell::Json((*v as f64).into()))
        }
        ColumnReader::DoubleColumnReader(r) => {
            read_typed(r, n, max_def, |v| Cell::Json((*v).into()))
        }
        _ => Err(parquet::errors::ParquetError::General(
            "unsupported column type (supported: string/binary, int32, int64, bool, float, double)"
                .into(),
        )),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Text,
    Id,
    Url,
    Meta(usize),
    Exclude(usize),
}

pub fn read_parquet(
    file: &InputFile,
    src: &SourceConfig,
    limits: ReadLimits,
    progress: &Progress,
    sink: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
) -> Result<Vec<FileProblem>> {
    let mut problems = Vec::new();
    let unreadable = |detail: String| FileProblem {
        reason: "input/unreadable_file",
        line: 0,
        detail,
    };
    let f = match std::fs::File::open(&file.path) {
        Ok(f) => f,
        Err(e) => return Ok(vec![unreadable(e.to_string())]),
    };
    let reader = match SerializedFileReader::new(f) {
        Ok(r) => r,
        Err(e) => {
            return Ok(vec![unreadable(format!(
                "not a readable parquet file ({e}); it may be truncated"
            ))])
        }
    };
    progress.inc(file.size / 64); // the footer; row groups report their own sizes below
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let total_rows: u64 = meta.file_metadata().num_rows().max(0) as u64;
    let find = |name: &str| -> Option<usize> {
        schema
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
    };
    // (column index, role, max definition level)
    let mut cols: Vec<(usize, Role, i16)> = Vec::new();
    let mut want = |name: &str, role: Role| -> Result<bool, FileProblem> {
        match find(name) {
            Some(i) => {
                let c = schema.column(i);
                if c.max_rep_level() > 0 {
                    return Err(FileProblem {
                        reason: "input/unsupported_column",
                        line: 0,
                        detail: format!(
                            "column {name:?} is a list (repeated); only scalar columns are supported"
                        ),
                    });
                }
                cols.push((i, role, c.max_def_level()));
                Ok(true)
            }
            None => Ok(false),
        }
    };
    let column_names = || {
        schema
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut fail_all = |reason: &'static str, p: FileProblem| -> Result<Vec<FileProblem>> {
        sink(vec![RawRecord {
            line: 1,
            payload: Payload::Lost {
                reason,
                count: total_rows,
            },
        }])?;
        Ok(vec![p])
    };
    match want(&src.text_field, Role::Text) {
        Ok(true) => {}
        Ok(false) => {
            let p = FileProblem {
                reason: "input/missing_text_field",
                line: 0,
                detail: format!(
                    "no column {:?} (columns: {}); set text_field in the source config",
                    src.text_field,
                    column_names()
                ),
            };
            return fail_all("input/missing_text_field", p);
        }
        Err(p) => return fail_all("input/unsupported_column", p),
    }
    let mut optional: Vec<(&str, Role)> = Vec::new();
    if let Some(f) = &src.id_field {
        optional.push((f, Role::Id));
    }
    if let Some(f) = &src.url_field {
        optional.push((f, Role::Url));
    }
    for (i, f) in src.meta_fields.iter().enumerate() {
        optional.push((f, Role::Meta(i)));
    }
    for (i, ex) in src.exclude.iter().enumerate() {
        optional.push((&ex.field, Role::Exclude(i)));
    }
    for (name, role) in optional {
        if let Err(p) = want(name, role) {
            return fail_all("input/unsupported_column", p);
        }
    }

    let batch = limits.batch_docs.clamp(1, 1024);
    let mut emitted = 0u64;
    'groups: for g in 0..meta.num_row_groups() {
        let rg_meta = meta.row_group(g);
        let rows = rg_meta.num_rows().max(0) as usize;
        let rg = match reader.get_row_group(g) {
            Ok(rg) => rg,
            Err(e) => {
                problems.push(FileProblem {
                    reason: "input/corrupt_parquet",
                    line: emitted + 1,
                    detail: format!("row group {g}: {e}"),
                });
                break 'groups;
            }
        };
        let mut readers = Vec::with_capacity(cols.len());
        for &(ci, _, _) in &cols {
            match rg.get_column_reader(ci) {
                Ok(r) => readers.push(r),
                Err(e) => {
                    problems.push(FileProblem {
                        reason: "input/corrupt_parquet",
                        line: emitted + 1,
                        detail: format!("row group {g}: {e}"),
                    });
                    break 'groups;
                }
            }
        }
        let mut done = 0usize;
        while done < rows {
            let n = batch.min(rows - done);
            let mut columns: Vec<Vec<Option<Cell>>> = Vec::with_capacity(cols.len());
            for (r, &(_, _, max_def)) in readers.iter_mut().zip(&cols) {
                match read_column(r, n, max_def) {
                    Ok(c) if c.len() == n => columns.push(c),
                    Ok(c) => {
                        problems.push(FileProblem {
                            reason: "input/corrupt_parquet",
                            line: emitted + 1,
                            detail: format!(
                                "row group {g}: column ended after {} of {n} rows",
                                c.len()
                            ),
                        });
                        break 'groups;
                    }
                    Err(e) => {
                        problems.push(FileProblem {
                            reason: "input/corrupt_parquet",
                            line: emitted + 1,
                            detail: format!("row group {g}: {e}"),
                        });
                        break 'groups;
                    }
                }
            }
            let mut out = Vec::with_capacity(n);
            let mut iters: Vec<_> = columns.into_iter().map(|c| c.into_iter()).collect();
            for k in 0..n {
                let mut row = Row::default();
                let mut text_bytes = 0usize;
                for (it, &(_, role, _)) in iters.iter_mut().zip(&cols) {
                    let cell = it.next().flatten();
                    match (role, cell) {
                        (Role::Text, Some(c)) => {
                            let b = match c {
                                Cell::Bytes(b) => b,
                                Cell::Json(v) => v.to_string().into_bytes(),
                            };
                            text_bytes = b.len();
                            row.text = Some(b);
                        }
                        (Role::Id, Some(c)) => row.id = Some(c.into_string()),
                        (Role::Url, Some(c)) => row.url = Some(c.into_string()),
                        (Role::Meta(i), Some(c)) => {
                            row.meta.insert(src.meta_fields[i].clone(), c.into_json());
                        }
                        (Role::Exclude(i), Some(c)) => {
                            let s = c.into_string();
                            if src.exclude[i].values.contains(&s) {
                                row.excluded = true;
                            }
                        }
                        (_, None) => {}
                    }
                }
                let line = emitted + k as u64 + 1;
                out.push(if text_bytes > limits.max_record_bytes {
                    RawRecord {
                        line,
                        payload: Payload::Bad {
                            reason: "input/record_too_large",
                            bytes: text_bytes as u64,
                            detail: "text exceeds ingest.max_record_mb".into(),
                        },
                    }
                } else {
                    RawRecord {
                        line,
                        payload: Payload::Row(Box::new(row)),
                    }
                });
            }
            emitted += n as u64;
            done += n;
            sink(out)?;
        }
        progress.inc(rg_meta.compressed_size().max(0) as u64);
    }
    if emitted < total_rows {
        sink(vec![RawRecord {
            line: emitted + 1,
            payload: Payload::Lost {
                reason: "input/unreadable_rows",
                count: total_rows - emitted,
            },
        }])?;
    }
    Ok(problems)
}
