//! `flowsense ingest`: each source read on a thread of its own and written by a task of its own,
//! several sources at once, counts merged for the summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use comfy_table::{Table as Grid, presets::UTF8_BORDERS_ONLY};
use flowsense_core::{DeadLetterReason, Table};
use flowsense_sinks::{Lake, LakeOutput, LakeWriter, Output, SourceFiles};
use flowsense_sources::detect::{Format, InputOptions, open_inputs_with};
use flowsense_sources::{BytesRead, Record};
use indicatif::{ProgressBar, ProgressStyle};

/// Records per message between the reader thread and the writer task.
const BATCH: usize = 16_384;

/// Events between updates of the progress bar's count.
const PROGRESS_EVERY: u64 = 1 << 16;

/// What an ingest did.
#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    /// Rows written per table (dead letters included).
    pub rows: BTreeMap<Table, u64>,
    /// Dead letters per reason.
    pub dead: BTreeMap<DeadLetterReason, u64>,
    /// Files not read to their end (`unreadable` dead letters): where, and why.
    pub unreadable: Vec<String>,
    /// `unsupported_record` dead letters per kind of record (`statistics`, `status`, ...).
    pub unsupported: BTreeMap<String, u64>,
    /// Sources none of whose records landed in a table although they had some: each names
    /// its schema. The ingest fails when there are any (nothing may vanish without a word).
    pub nothing_read: Vec<String>,
    /// Market events read.
    pub events: u64,
    /// Sources (files, synthetic symbol-days) completed.
    pub sources: u64,
    /// Parquet files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Stale files of earlier runs of the same sources removed.
    pub files_removed: u64,
    /// Bytes of input files read (as stored: compressed files count compressed); zero for
    /// inputs that are not files, such as the synthetic market.
    pub input_bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl IngestReport {
    /// Adds another report's counts (of other sources) to this one's; the wall time is the
    /// longer of the two.
    pub fn absorb(&mut self, other: IngestReport) {
        for (t, n) in other.rows {
            *self.rows.entry(t).or_default() += n;
        }
        for (r, n) in other.dead {
            *self.dead.entry(r).or_default() += n;
        }
        self.unreadable.extend(other.unreadable);
        for (k, n) in other.unsupported {
            *self.unsupported.entry(k).or_default() += n;
        }
        self.nothing_read.extend(other.nothing_read);
        self.events += other.events;
        self.sources += other.sources;
        self.files += other.files;
        self.bytes += other.bytes;
        self.files_removed += other.files_removed;
        self.input_bytes += other.input_bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    /// Total dead letters.
    pub fn dead_total(&self) -> u64 {
        self.dead.values().sum()
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self, lake: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut rows = Grid::new();
        rows.load_preset(UTF8_BORDERS_ONLY)
            .set_header(vec!["table", "rows"]);
        for (t, n) in &self.rows {
            rows.add_row(vec![t.name().to_string(), n.to_string()]);
        }
        let input = if self.input_bytes > 0 {
            format!(
                " ({:.1} MB of input, {:.1} MB/s)",
                self.input_bytes as f64 / 1e6,
                self.input_bytes as f64 / 1e6 / secs
            )
        } else {
            String::new()
        };
        let mut out = format!(
            "ingested {} events from {} sources{input} into {lake} in {:.2} s ({:.0} events/s); {} files, {:.1} MB\n{rows}\n",
            self.events,
            self.sources,
            secs,
            self.events as f64 / secs,
            self.files,
            self.bytes as f64 / 1e6
        );
        if self.dead.is_empty() {
            out.push_str("dead letters: none\n");
        } else {
            let mut dead = Grid::new();
            dead.load_preset(UTF8_BORDERS_ONLY)
                .set_header(vec!["dead-letter reason", "rows"]);
            for (r, n) in &self.dead {
                dead.add_row(vec![r.as_str().to_string(), n.to_string()]);
            }
            out.push_str(&format!(
                "dead letters: {} (see the dead_letters table)\n{dead}\n",
                self.dead_total()
            ));
        }
        if !self.unsupported.is_empty() {
            let kinds: Vec<String> = (self.unsupported.iter())
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            out.push_str(&format!(
                "records of kinds FlowSense does not read (dead letters, unsupported_record): {}\n",
                kinds.join(", ")
            ));
        }
        for s in &self.nothing_read {
            out.push_str(&format!("nothing read: {s}\n"));
        }
        if !self.unreadable.is_empty() {
            let mut files = self.unreadable.clone();
            files.sort();
            out.push_str("not read to the end:\n");
            for f in files.iter().take(UNREADABLE_LISTED) {
                out.push_str(&format!("  {f}\n"));
            }
            if files.len() > UNREADABLE_LISTED {
                let more = files.len() - UNREADABLE_LISTED;
                out.push_str(&format!("  and {more} more\n"));
            }
        }
        if self.files_removed > 0 {
            out.push_str(&format!(
                "replaced {} files left by an earlier ingest of the same sources\n",
                self.files_removed
            ));
        }
        out
    }
}

/// Files not read to the end that the summary names; the rest are counted.
const UNREADABLE_LISTED: usize = 10;

/// Feeds reader output into a lake writer and keeps the counts.
pub struct Ingestor {
    writer: LakeWriter,
    report: IngestReport,
    progress: Progress,
    /// Whether `finish` clears the progress bar (false when other ingestors share it).
    owns_progress: bool,
    started: Instant,
    /// Stale files removed by a [`LakeOutput`] other than the writer's own (inline runs).
    removed_elsewhere: u64,
    /// Events of the current source.
    source_events: u64,
    /// `unsupported_record` dead letters of the current source, and the schema they name.
    source_unsupported: u64,
    source_schema: Option<String>,
}

/// The progress bar the ingestors of one run share, and what they count on it.
#[derive(Clone)]
struct Progress {
    bar: ProgressBar,
    /// Events written, by every ingestor of the run.
    events: Arc<AtomicU64>,
    /// Bytes the readers have read of `bar`'s length, when the inputs are files.
    bytes: Option<BytesRead>,
}

impl Progress {
    /// On stderr when `shown` (and stderr is a terminal): a bar over `total` input bytes read by
    /// `bytes`, or a spinner when the inputs are not files.
    fn new(shown: bool, bytes: Option<(u64, BytesRead)>) -> Self {
        let (bar, template) = match &bytes {
            Some((total, _)) => (
                ProgressBar::new(*total),
                "{elapsed_precise} [{bar:20}] {bytes}/{total_bytes} eta {eta} {wide_msg}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {elapsed_precise} {msg}",
            ),
        };
        if !shown {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(ProgressStyle::with_template(template).expect("static template"));
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            events: Arc::default(),
            bytes: bytes.map(|(_, b)| b),
        }
    }

    /// Counts `n` more events written and redraws.
    fn add_events(&self, n: u64) {
        let all = self.events.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bytes {
            self.bar.set_position(b.get());
        }
        self.bar.set_message(format!("{all} events"));
    }
}

impl Ingestor {
    /// An ingestor writing into `lake`, with a progress spinner on stderr when `progress` is set
    /// (and stderr is a terminal).
    pub fn new(lake: Lake, progress: bool) -> Self {
        let mut ing =
            Ingestor::sharing(lake, Progress::new(progress, None), SourceFiles::default());
        ing.owns_progress = true;
        ing
    }

    /// An ingestor that reports on a progress bar, and lists the lake's files, as other
    /// ingestors of the run do.
    fn sharing(lake: Lake, progress: Progress, files: SourceFiles) -> Self {
        Ingestor {
            writer: LakeWriter::new(lake).sharing_source_files(files),
            report: IngestReport::default(),
            progress,
            owns_progress: false,
            started: Instant::now(),
            removed_elsewhere: 0,
            source_events: 0,
            source_unsupported: 0,
            source_schema: None,
        }
    }

    /// Rows per file (default 1 M).
    pub fn with_max_rows(mut self, rows: usize) -> Self {
        self.writer = self.writer.with_max_rows(rows);
        self
    }

    /// Handles one record, its I/O included.
    pub async fn push(&mut self, record: Record) -> anyhow::Result<()> {
        self.handle(record)?;
        if self.writer.has_pending() {
            self.writer.flush().await?;
        }
        Ok(())
    }

    /// Handles one record but for its I/O, which waits in the writer.
    fn handle(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Event(ev) => {
                self.report.events += 1;
                self.source_events += 1;
                self.writer.push(&ev);
                if self.report.events.is_multiple_of(PROGRESS_EVERY) {
                    self.progress.add_events(PROGRESS_EVERY);
                }
            }
            Record::Dead(d) => {
                *self.report.dead.entry(d.reason).or_default() += 1;
                if d.reason == DeadLetterReason::Unreadable {
                    (self.report.unreadable).push(format!("{}: {}", d.position, d.detail));
                }
                if d.reason == DeadLetterReason::UnsupportedRecord {
                    // The detail reads `KIND: ... (schema SCHEMA)`.
                    let kind = d.detail.split(':').next().unwrap_or("record");
                    *self.report.unsupported.entry(kind.to_string()).or_default() += 1;
                    self.source_unsupported += 1;
                    self.source_schema = d
                        .detail
                        .rsplit_once("(schema ")
                        .map(|(_, s)| s.trim_end_matches(')').to_string());
                }
                self.writer.push_dead(&d);
            }
            Record::SourceStart(id) => {
                (self.source_events, self.source_unsupported) = (0, 0);
                self.writer.begin_source(id.as_str());
                self.progress.bar.set_message(format!("{id} started"));
            }
            Record::SourceDone(id) => {
                if self.source_events == 0 && self.source_unsupported > 0 {
                    let schema = self.source_schema.take().unwrap_or_else(|| "?".into());
                    self.report.nothing_read.push(format!(
                        "{id}: schema {schema}, {} records, none of a kind FlowSense reads",
                        self.source_unsupported
                    ));
                }
                self.writer.close_source()?;
                self.report.sources += 1;
            }
        }
        Ok(())
    }

    /// Reads a whole reader on a thread of its own while this task writes.
    pub async fn consume<R>(&mut self, reader: R) -> anyhow::Result<()>
    where
        R: Iterator<Item = flowsense_sources::Result<Record>> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<flowsense_sources::Result<Vec<Record>>>(16);
        // Emptied batches go back to the reader to be filled again: a batch is a megabyte, and
        // allocating each afresh (and freeing it on the other thread) cost page faults.
        let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<Record>>();
        let producer = std::thread::Builder::new()
            .name("flowsense-reader".into())
            .spawn(move || {
                let fresh = || {
                    spare_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH))
                };
                let mut batch = fresh();
                for r in reader {
                    match r {
                        Ok(rec) => {
                            batch.push(rec);
                            if batch.len() == BATCH
                                && tx
                                    .blocking_send(Ok(std::mem::replace(&mut batch, fresh())))
                                    .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.blocking_send(Ok(batch));
                }
            })?;
        while let Some(batch) = rx.recv().await {
            let mut batch = batch?;
            for rec in batch.drain(..) {
                self.push(rec).await?;
            }
            // The reader may have finished: then the batch is simply dropped.
            let _ = spare_tx.send(batch);
        }
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
        Ok(())
    }

    /// Reads and encodes a whole reader on a thread of its own, while this task does the I/O
    /// (puts and removals): one thread of work for the source, not two. Better when every core
    /// already has a source: no event crosses from one core to another, and none is freed on
    /// a thread other than the one that made it (the ingest takes about 8 % less CPU).
    pub async fn consume_inline<R>(mut self, reader: R) -> anyhow::Result<Self>
    where
        R: Iterator<Item = flowsense_sources::Result<Record>> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Output>>(4);
        let mut output =
            LakeOutput::sharing(self.writer.lake().clone(), self.writer.source_files());
        let worker = std::thread::Builder::new()
            .name("flowsense-reader".into())
            .spawn(move || -> anyhow::Result<Self> {
                for r in reader {
                    self.handle(r?)?;
                    // The I/O task has failed (and says why) when the send does.
                    if self.writer.has_pending()
                        && tx.blocking_send(self.writer.take_output()).is_err()
                    {
                        break;
                    }
                }
                Ok(self)
            })?;
        while let Some(out) = rx.recv().await {
            output.write(out).await?;
        }
        // The channel closed: the thread has finished (or is about to).
        let mut done = worker
            .join()
            .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
        done.removed_elsewhere += output.files_removed();
        Ok(done)
    }

    /// Finishes and returns the report.
    pub async fn finish(mut self) -> anyhow::Result<IngestReport> {
        self.writer.flush().await?;
        let s = self.writer.stats();
        self.report.rows = s.rows.clone();
        self.report.files = s.files;
        self.report.bytes = s.bytes;
        self.report.files_removed = s.files_removed + self.removed_elsewhere;
        self.report.elapsed = self.started.elapsed();
        if self.owns_progress {
            self.progress.bar.finish_and_clear();
        }
        Ok(self.report)
    }
}

/// `flowsense ingest`: every path (files or folders) into the lake, with default reader options.
pub async fn ingest_paths(
    lake: &Lake,
    paths: &[PathBuf],
    format: Option<Format>,
    progress: bool,
) -> anyhow::Result<IngestReport> {
    ingest_paths_with(lake, paths, format, &InputOptions::default(), progress).await
}

/// [`ingest_paths`] with reader options, [`default_parallelism`] sources at once.
pub async fn ingest_paths_with(
    lake: &Lake,
    paths: &[PathBuf],
    format: Option<Format>,
    options: &InputOptions,
    progress: bool,
) -> anyhow::Result<IngestReport> {
    ingest_sources(
        lake,
        paths,
        format,
        options,
        progress,
        default_parallelism(),
    )
    .await
}

/// Sources ingested at once by default: one per core, at most 8 (each holds about 120 MB at
/// its peak on the Binance captures: its reader's books and batches, and its writer's columns).
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Every path (files or folders) into the lake, up to `parallel` sources at once.
///
/// A source is a file, or one symbol's chain of daily Binance files (a day continues the
/// previous day's book). Each source has its own reader thread and its own writer task, and
/// writes files named for it alone, so the lake holds the same files whatever `parallel` is;
/// only the order in which they land differs. The first source to fail stops the others.
pub async fn ingest_sources(
    lake: &Lake,
    paths: &[PathBuf],
    format: Option<Format>,
    options: &InputOptions,
    progress: bool,
    parallel: usize,
) -> anyhow::Result<IngestReport> {
    let read = BytesRead::default();
    let options = InputOptions {
        bytes_read: read.clone(),
        ..options.clone()
    };
    let inputs = open_inputs_with(paths, format, &options).context("opening the inputs")?;
    if inputs.is_empty() {
        anyhow::bail!(
            "no market data files found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Largest sources first, so that no large one starts last and runs alone at the end.
    let mut inputs: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let bytes: u64 = (input.1.iter())
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            (bytes, input)
        })
        .collect();
    inputs.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    let total = inputs.iter().map(|(bytes, _)| bytes).sum();
    let sources = inputs.into_iter().map(|(_, (fmt, files, reader))| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let fmt = fmt.map_or_else(|| "unreadable".to_string(), |f| format!("{f:?}"));
        (format!("{} ({fmt})", names.join(", ")), reader)
    });
    let progress = Progress::new(progress, Some((total, read.clone())));
    let mut report = ingest_readers_with(lake, sources, progress, parallel).await?;
    report.input_bytes = read.get();
    Ok(report)
}

/// Ingests readers into the lake, up to `parallel` at once, each on its own reader thread and
/// writer task; `label` names a reader in its errors. The first to fail stops the others.
pub async fn ingest_readers<R>(
    lake: &Lake,
    readers: impl IntoIterator<Item = (String, R)>,
    progress: bool,
    parallel: usize,
) -> anyhow::Result<IngestReport>
where
    R: Iterator<Item = flowsense_sources::Result<Record>> + Send + 'static,
{
    ingest_readers_with(lake, readers, Progress::new(progress, None), parallel).await
}

async fn ingest_readers_with<R>(
    lake: &Lake,
    readers: impl IntoIterator<Item = (String, R)>,
    progress: Progress,
    parallel: usize,
) -> anyhow::Result<IngestReport>
where
    R: Iterator<Item = flowsense_sources::Result<Record>> + Send + 'static,
{
    let started = Instant::now();
    let readers: Vec<_> = readers.into_iter().collect();
    // With a source for every core, each runs on one thread; with cores to spare, a source's
    // reader and writer get one each (faster for it, at some CPU: see `consume_inline`).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let inline = parallel.max(1).min(readers.len()) >= cores;
    let mut readers = readers.into_iter();
    // Dropping the set (on an error) aborts the readers still running.
    let mut running = tokio::task::JoinSet::new();
    let mut report = IngestReport::default();
    let files = SourceFiles::default();
    loop {
        while running.len() < parallel.max(1)
            && let Some((label, reader)) = readers.next()
        {
            let mut ing = Ingestor::sharing(lake.clone(), progress.clone(), files.clone());
            running.spawn(async move {
                let ing = if inline {
                    ing.consume_inline(reader).await
                } else {
                    ing.consume(reader).await.map(|()| ing)
                };
                ing.with_context(|| format!("ingesting {label}"))?
                    .finish()
                    .await
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        report.absorb(done.context("an ingest task panicked")??);
    }
    progress.bar.finish_and_clear();
    report.elapsed = started.elapsed();
    Ok(report)
}
