//! Line-oriented and whole-file inputs (jsonl, text, lines, paragraphs), plain, gzip, zstd, xz
//! or bzip2 — recognised by magic bytes, not by extension, so a mislabelled file still reads.
//! Any other binary file (zip, 7z, an image, ...) is refused as a file problem naming the
//! file, rather than read as one garbage document.

use super::{FileProblem, InputFile, Payload, RawRecord, ReadLimits};
use crate::config::Format;
use crate::progress::Progress;
use anyhow::Result;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

/// Counts bytes read from disk for the progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// Why a file could not be opened as text.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// Binary data of a format we do not read; the message names it and the fix.
    Binary(String),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Compressed or archive formats by their magic bytes.
const UNSUPPORTED: &[(&[u8], &str)] = &[
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x04\x22\x4d\x18", "lz4-compressed"),
    (b"\x1f\x9d", "compress (.Z)-compressed"),
    (b"LZIP", "lzip-compressed"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable"),
];

/// Refuses data that is not text: a known binary format by its magic bytes, or NUL bytes in
/// the first block (no text encoding we read has them). `what` says whether this is the file
/// or what was inside its compression.
fn check_text(head: &[u8], what: &str) -> Result<(), OpenError> {
    if let Some((_, name)) = UNSUPPORTED.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(OpenError::Binary(format!(
            "{what} is {name}, which is not read; extract it to jsonl, text or parquet files (gzip, zstd, xz and bzip2 compression are read)"
        )));
    }
    if head.len() > 262 && &head[257..262] == b"ustar" {
        return Err(OpenError::Binary(format!(
            "{what} is a tar archive, which is not read; extract it first"
        )));
    }
    let block = &head[..head.len().min(8192)];
    if let Some(at) = memchr::memchr(0, block) {
        return Err(OpenError::Binary(format!(
            "{what} looks like binary data of an unknown format (a NUL byte at offset {at}); inputs must be UTF-8 text (jsonl, text), parquet, or those compressed with gzip, zstd, xz or bzip2 (UTF-16 text must be converted to UTF-8)"
        )));
    }
    Ok(())
}

/// Opens `path` and undoes gzip, zstd, xz or bzip2 compression if the first bytes say so;
/// refuses other binary data.
pub fn open_decompressed<'a>(
    path: &std::path::Path,
    progress: &'a Progress,
) -> Result<Box<dyn BufRead + 'a>, OpenError> {
    let f = File::open(path)?;
    let mut raw = BufReader::with_capacity(1 << 20, Counting { inner: f, progress });
    let head = raw.fill_buf()?;
    let wrap = |r: Box<dyn Read + 'a>| -> Box<dyn BufRead + 'a> {
        Box::new(BufReader::with_capacity(1 << 20, r))
    };
    let (mut r, compressed) = if head.starts_with(&[0x1f, 0x8b]) {
        (
            wrap(Box::new(flate2::bufread::MultiGzDecoder::new(raw))),
            true,
        )
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            wrap(Box::new(zstd::stream::read::Decoder::with_buffer(raw)?)),
            true,
        )
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        (
            wrap(Box::new(xz2::bufread::XzDecoder::new_multi_decoder(raw))),
            true,
        )
    } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        (
            wrap(Box::new(bzip2::bufread::MultiBzDecoder::new(raw))),
            true,
        )
    } else {
        check_text(head, "the file")?;
        (Box::new(raw) as Box<dyn BufRead + 'a>, false)
    };
    if compressed {
        // A corrupt stream shows here as an I/O error, reported like any unreadable file.
        check_text(r.fill_buf()?, "the decompressed content")?;
    }
    Ok(r)
}

pub enum Line {
    Eof,
    /// A line is in the buffer (without its `\n` or `\r\n`).
    Ok,
    /// The line exceeded the cap; it was skipped without being held. Carries its length.
    TooLong(u64),
}

/// Reads one line into `buf`, holding at most `cap` bytes. On an I/O error `buf` keeps the
/// partial line so the caller can account for it.
pub fn read_line_capped(r: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<Line> {
    buf.clear();
    let mut total = 0u64;
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        any = true;
        let (chunk, found) = match memchr::memchr(b'\n', avail) {
            Some(i) => (&avail[..i], true),
            None => (avail, false),
        };
        total += chunk.len() as u64;
        if !too_long {
            if buf.len() + chunk.len() > cap {
                too_long = true;
                buf.clear();
                buf.shrink_to(1 << 16);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + found as usize;
        r.consume(used);
        if found {
            break;
        }
    }
    if !any {
        return Ok(Line::Eof);
    }
    if too_long {
        return Ok(Line::TooLong(total));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Ok)
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_whitespace())
}

struct Batcher<'s> {
    batch: Vec<RawRecord>,
    bytes: usize,
    limits: ReadLimits,
    sink: &'s mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
}

impl Batcher<'_> {
    fn push(&mut self, line: u64, payload: Payload) -> Result<()> {
        self.bytes += match &payload {
            Payload::Json(b) | Payload::Text(b) => b.len(),
            _ => 0,
        };
        self.batch.push(RawRecord { line, payload });
        if self.batch.len() >= self.limits.batch_docs || self.bytes >= self.limits.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.bytes = 0;
        if !self.batch.is_empty() {
            (self.sink)(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }
}

fn stream_problem(line: u64, e: &io::Error) -> FileProblem {
    FileProblem {
        reason: "input/truncated_or_corrupt_stream",
        line,
        detail: format!("{e} (the rest of the file is unreadable; re-download or re-compress it)"),
    }
}

pub fn read_lines_format(
    file: &InputFile,
    format: Format,
    limits: ReadLimits,
    progress: &Progress,
    sink: &mut dyn FnMut(Vec<RawRecord>) -> Result<()>,
) -> Result<Vec<FileProblem>> {
    let mut problems = Vec::new();
    let mut r = match open_decompressed(&file.path, progress) {
        Ok(r) => r,
        Err(OpenError::Io(e)) => {
            problems.push(FileProblem {
                reason: "input/unreadable_file",
                line: 0,
                detail: e.to_string(),
            });
            return Ok(problems);
        }
        Err(OpenError::Binary(detail)) => {
            problems.push(FileProblem {
                reason: "input/unsupported_binary_file",
                line: 0,
                detail,
            });
            return Ok(problems);
        }
    };
    let mut b = Batcher {
        batch: Vec::new(),
        bytes: 0,
        limits,
        sink,
    };
    let cap = limits.max_record_bytes;
    if format == Format::Text {
        // The whole file is one document.
        let mut buf = Vec::new();
        let res = (&mut r).take(cap as u64 + 1).read_to_end(&mut buf);
        match res {
            Err(e) => {
                b.push(
                    1,
                    Payload::Bad {
                        reason: "input/truncated_record",
                        bytes: buf.len() as u64,
                        detail: e.to_string(),
                    },
                )?;
                problems.push(stream_problem(1, &e));
            }
            Ok(_) if buf.len() > cap => {
                let mut rest = 0u64;
                let drained = io::copy(&mut r, &mut io::sink());
                if let Ok(n) = drained {
                    rest = n;
                }
                b.push(
                    1,
                    Payload::Bad {
                        reason: "input/record_too_large",
                        bytes: buf.len() as u64 + rest,
                        detail: format!("file exceeds ingest.max_record_mb ({cap} bytes)"),
                    },
                )?;
                if let Err(e) = drained {
                    problems.push(stream_problem(1, &e));
                }
            }
            Ok(_) => b.push(1, Payload::Text(buf))?,
        }
        b.flush()?;
        return Ok(problems);
    }

    let mut buf = Vec::new();
    let mut line = 0u64;
    // Paragraph mode accumulates lines until a blank one.
    let mut para: Vec<u8> = Vec::new();
    let mut para_start = 0u64;
    let mut para_too_long = 0u64;
    loop {
        line += 1;
        let res = read_line_capped(&mut *r, &mut buf, cap);
        match res {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong(n)) => {
                if format == Format::Paragraphs {
                    if para_start == 0 {
                        para_start = line;
                    }
                    para.clear();
                    para_too_long += n;
                    continue;
                }
                b.push(
                    line,
                    Payload::Bad {
                        reason: "input/record_too_large",
                        bytes: n,
                        detail: format!("line exceeds ingest.max_record_mb ({cap} bytes)"),
                    },
                )?
            }
            Ok(Line::Ok) => match format {
                Format::Jsonl | Format::Auto => {
                    if is_blank(&buf) {
                        b.push(line, Payload::Blank)?;
                    } else {
                        b.push(line, Payload::Json(std::mem::take(&mut buf)))?;
                    }
                }
                Format::Lines => {
                    if !is_blank(&buf) {
                        b.push(line, Payload::Text(std::mem::take(&mut buf)))?;
                    }
                }
                Format::Paragraphs => {
                    if is_blank(&buf) {
                        flush_paragraph(
                            &mut b,
                            &mut para,
                            &mut para_start,
                            &mut para_too_long,
                            cap,
                        )?;
                    } else {
                        if para_start == 0 {
                            para_start = line;
                        }
                        if para_too_long > 0 || para.len() + buf.len() + 1 > cap {
                            para_too_long += (para.len() + buf.len() + 1) as u64;
                            para.clear();
                        } else {
                            if !para.is_empty() {
                                para.push(b'\n');
                            }
                            para.extend_from_slice(&buf);
                        }
                    }
                }
                Format::Text | Format::Parquet => unreachable!(),
            },
            Err(e) => {
                if format == Format::Paragraphs {
                    para.extend_from_slice(&buf);
                    buf = std::mem::take(&mut para);
                    if para_start != 0 {
                        line = para_start;
                    }
                }
                if !buf.is_empty() {
                    b.push(
                        line,
                        Payload::Bad {
                            reason: "input/truncated_record",
                            bytes: buf.len() as u64,
                            detail: e.to_string(),
                        },
                    )?;
                }
                problems.push(stream_problem(line, &e));
                para_start = 0;
                break;
            }
        }
    }
    if format == Format::Paragraphs && para_start != 0 {
        flush_paragraph(&mut b, &mut para, &mut para_start, &mut para_too_long, cap)?;
    }
    b.flush()?;
    Ok(problems)
}

fn flush_paragraph(
    b: &mut Batcher,
    para: &mut Vec<u8>,
    start: &mut u64,
    too_long: &mut u64,
    cap: usize,
) -> Result<()> {
    if *start == 0 {
        return Ok(());
    }
    if *too_long > 0 {
        b.push(
            *start,
            Payload::Bad {
                reason: "input/record_too_large",
                bytes: *too_long,
                detail: format!("paragraph exceeds ingest.max_record_mb ({cap} bytes)"),
            },
        )?;
    } else {
        b.push(*start, Payload::Text(std::mem::take(para)))?;
    }
    para.clear();
    *start = 0;
    *too_long = 0;
    Ok(())
}
