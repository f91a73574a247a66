//! Reading the input files: which kind each is, and their records, in
//! bounded memory (one line or CSV record at a time; batches go to the
//! senders through a bounded channel). What cannot be read as a record goes
//! to the reject file, with its file and line.

use std::{
    cell::Cell,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    rc::Rc,
    sync::{Arc, atomic::Ordering},
};

use anyhow::Context as _;
use chrono_tz::Tz;
use prost::Message as _;
use tokio::sync::mpsc;

use super::{
    columns::{CsvKind, Header, Item, Row},
    report::{Evidence, Origin, Rejects, Stats},
};
use crate::proto::pb;

/// A line of NDJSON longer than this is refused (and skipped) unread.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// A CSV record longer than this stops the file: it is almost surely an
/// unclosed quote swallowing the rest of the file.
pub const MAX_CSV_RECORD_BYTES: u64 = 4 << 20;
/// Batches stay well under the service's 16 MiB message limit.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One `ActivityRecord` per line in proto3 JSON.
    Ndjson,
    /// A CSV file of one record type (or teams, reps), with a header.
    Csv(CsvKind),
}

/// An input file, checked before anything is sent.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    pub size: u64,
}

impl Input {
    pub fn is_directory(&self) -> bool {
        matches!(self.format, Format::Csv(kind) if kind.is_directory())
    }
}

/// Classifies every file by its name and checks what can be checked
/// before sending: it is readable, and a CSV header has the columns of its
/// kind (columns of no use are reported on stderr and ignored).
pub fn inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        let format = format_of(path)?;
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if let Format::Csv(kind) = format {
            let mut reader = csv::Reader::from_path(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let names = reader
                .headers()
                .with_context(|| format!("{}: cannot read the header", path.display()))?;
            let header = Header::new(kind, names)
                .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
            if !header.ignored.is_empty() {
                eprintln!(
                    "import: {}: ignoring column{} {} (not a column of {} files)",
                    path.display(),
                    if header.ignored.len() > 1 { "s" } else { "" },
                    header.ignored.join(", "),
                    kind.name()
                );
            }
        }
        inputs.push(Input {
            path: path.clone(),
            format,
            size,
        });
    }
    Ok(inputs)
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("ndjson" | "jsonl" | "json") => Ok(Format::Ndjson),
        Some("csv") => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            CsvKind::from_stem(stem).map(Format::Csv).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: a CSV file is named after what it holds: {}.csv (or e.g. deals-2025.csv)",
                    path.display(),
                    CsvKind::ALL.map(CsvKind::name).join(".csv, ")
                )
            })
        }
        _ => anyhow::bail!(
            "{}: not an import file (NDJSON: .ndjson, .jsonl or .json; CSV: .csv)",
            path.display()
        ),
    }
}

/// A batch on its way, with where each record came from.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<pb::ActivityRecord>,
    pub origins: Vec<Origin>,
}

/// Fills batches of `size` records (fewer when they get large) and hands
/// them to the senders.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<Batch>,
    size: usize,
    current: Batch,
    bytes: usize,
}

impl Batcher<'_> {
    fn push(&mut self, origin: Origin, record: pb::ActivityRecord) -> anyhow::Result<()> {
        let bytes = record.encoded_len() + 8;
        if self.current.records.len() >= self.size || self.bytes + bytes > MAX_BATCH_BYTES {
            self.flush()?;
        }
        self.bytes += bytes;
        self.current.records.push(record);
        self.current.origins.push(origin);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.current.records.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.tx
            .blocking_send(std::mem::take(&mut self.current))
            .map_err(|_| anyhow::anyhow!("the import stopped"))
    }
}

/// What the reader needs besides the files.
#[derive(Clone)]
pub struct ReadContext {
    pub zone: Tz,
    pub rejects: Arc<Rejects>,
    pub stats: Arc<Stats>,
    /// Bytes of the files before the one being read (for the progress).
    pub bytes_before: u64,
}

/// Reads the activity files in order (blocking: run it on a blocking
/// thread), sending batches of up to `batch_size` records.
pub fn read_activity(
    inputs: &[(usize, Input)],
    batch_size: usize,
    mut context: ReadContext,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut batcher = Batcher {
        tx,
        size: batch_size.clamp(1, crate::domain::activity::MAX_BATCH_RECORDS),
        current: Batch::default(),
        bytes: 0,
    };
    for (file, input) in inputs {
        match input.format {
            Format::Ndjson => read_ndjson(*file, &input.path, &context, &mut batcher)?,
            Format::Csv(_) => csv_rows(*file, input, &context, |origin, _, item| match item {
                Item::Activity(record) => batcher.push(origin, record),
                Item::Team(_) | Item::Rep(_) => Ok(()),
            })?,
        }
        context.bytes_before += input.size;
        context
            .stats
            .bytes_read
            .store(context.bytes_before, Ordering::Relaxed);
    }
    batcher.flush()
}

fn read_ndjson(
    file: usize,
    path: &Path,
    context: &ReadContext,
    batcher: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let name = path.display();
    let mut reader = BufReader::with_capacity(
        1 << 16,
        File::open(path).with_context(|| format!("cannot read {name}"))?,
    );
    let mut buffer = Vec::new();
    let mut line = 0u64;
    let mut read = context.bytes_before;
    loop {
        buffer.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buffer)
            .with_context(|| format!("cannot read {name}"))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        read += n as u64;
        let origin = Origin { file, line };
        if buffer.len() > MAX_LINE_BYTES && !buffer.ends_with(b"\n") {
            read += skip_line(&mut reader).with_context(|| format!("cannot read {name}"))?;
            context.stats.bytes_read.store(read, Ordering::Relaxed);
            let start = String::from_utf8_lossy(&buffer[..buffer.len().min(200)]).into_owned();
            context.rejects.add(
                origin,
                &format!("the line is longer than {MAX_LINE_BYTES} bytes"),
                Evidence::Text(&start),
            )?;
            continue;
        }
        context.stats.bytes_read.store(read, Ordering::Relaxed);
        let text = match std::str::from_utf8(&buffer) {
            Ok(text) => text.trim(),
            Err(_) => {
                context.rejects.add(
                    origin,
                    "the line is not UTF-8",
                    Evidence::Text(&String::from_utf8_lossy(&buffer)),
                )?;
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<pb::ActivityRecord>(text) {
            Ok(record) => batcher.push(origin, record)?,
            Err(err) => context.rejects.add(
                origin,
                &format!("not an ActivityRecord in proto3 JSON: {err}"),
                Evidence::Text(text),
            )?,
        }
    }
}

/// Consumes the rest of an overlong line; the bytes skipped.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(skipped);
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        reader.consume(used);
        skipped += used as u64;
        if done {
            return Ok(skipped);
        }
    }
}

/// Stops the CSV parser when one record grows past
/// `MAX_CSV_RECORD_BYTES` (the reader resets the count at every record).
struct RecordLimit<R> {
    inner: R,
    since_record: Rc<Cell<u64>>,
}

impl<R: Read> Read for RecordLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_record.get() > MAX_CSV_RECORD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a CSV record is longer than {MAX_CSV_RECORD_BYTES} bytes (an unclosed quote?)"
                ),
            ));
        }
        let n = self.inner.read(buf)?;
        self.since_record.set(self.since_record.get() + n as u64);
        Ok(n)
    }
}

/// Calls `each` with every row of a CSV file that reads as its kind; rows
/// that do not (a bad time, amount or choice, a wrong number of fields,
/// text that is not UTF-8) go to the reject file. Fails on an I/O error or
/// a record too long to be one.
pub fn csv_rows(
    file: usize,
    input: &Input,
    context: &ReadContext,
    mut each: impl FnMut(Origin, &csv::StringRecord, Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Format::Csv(kind) = input.format else {
        anyhow::bail!("{} is not a CSV file", input.path.display());
    };
    let name = input.path.display();
    let since_record = Rc::new(Cell::new(0));
    let source = RecordLimit {
        inner: File::open(&input.path).with_context(|| format!("cannot read {name}"))?,
        since_record: since_record.clone(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 16)
        .from_reader(source);
    let header = Header::new(
        kind,
        reader
            .headers()
            .with_context(|| format!("{name}: cannot read the header"))?,
    )
    .map_err(|why| anyhow::anyhow!("{name}: {why}"))?;
    let mut fields = csv::StringRecord::new();
    loop {
        since_record.set(0);
        let result = reader.read_record(&mut fields);
        context.stats.bytes_read.store(
            context.bytes_before + reader.position().byte(),
            Ordering::Relaxed,
        );
        match result {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let origin = Origin {
                    file,
                    line: fields.position().map_or(0, csv::Position::line),
                };
                let row = Row {
                    header: &header,
                    fields: &fields,
                    zone: context.zone,
                };
                match row.to_item() {
                    Ok(item) => each(origin, &fields, item)?,
                    Err(why) => context
                        .rejects
                        .add(origin, &why, Evidence::Fields(&fields))?,
                }
            }
            Err(err) => {
                let line = err.position().map_or(0, csv::Position::line);
                let origin = Origin { file, line };
                match err.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => context.rejects.add(
                        origin,
                        &format!("the row has {len} fields, the header {expected_len}"),
                        Evidence::Fields(&fields),
                    )?,
                    csv::ErrorKind::Utf8 { .. } => {
                        context
                            .rejects
                            .add(origin, "the row is not UTF-8", Evidence::Text(""))?;
                    }
                    _ => return Err(anyhow::anyhow!("{name}, line {line}: {err}")),
                }
            }
        }
    }
}
