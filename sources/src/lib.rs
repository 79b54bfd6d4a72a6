//! Market data into FlowSense: strict, streaming readers for real formats and a seeded synthetic
//! market, all feeding one book-reconstruction component.
//!
//! Every reader is an iterator of [`Record`]s: market events in source order, interleaved with
//! [`DeadLetter`]s for rows that failed validation. Nothing is dropped silently and nothing panics
//! on bad input; the caller (`flowsense ingest`) writes both to the lake and reports the counts.
//!
//! | reader | input | emits |
//! |---|---|---|
//! | [`binance::BinanceReader`] | raw websocket captures (`<local ns> <json>` lines, gzip) | depth diffs and snapshots, trades, venue quotes, reconstructed BBO |
//! | [`lobster::LobsterReader`] | LOBSTER `message`/`orderbook` CSV | L3 order events, trades, reconstructed BBO |
//! | [`dbn::DbnReader`] | Databento DBN (MBO, MBP-10, trades) | L3 or L2 events, trades, BBO |
//! | [`bars::BarsReader`] | OHLCV CSV as vendors ship it (with a header, or Binance klines) | bars |
//! | [`synth::SyntheticMarket`] | a seed | L3 order events, trades, BBO; can write LOBSTER files |

#![forbid(missing_docs)]

pub mod bars;
pub mod binance;
pub use flowsense_core::book;
pub mod dbn;
pub mod detect;
pub mod error;
pub mod lake;
pub mod live;
pub mod lobster;
pub mod merge;
pub mod prefetch;
pub mod stocks;
pub mod synth;

use flowsense_core::{DeadLetter, MarketEvent};

pub use error::{Error, Result};

/// A file of the bundled Binance captures (`data/binance/<rel>`), found through
/// `CARGO_MANIFEST_DIR` read when the test runs: clones share one target dir, and a test binary
/// built in another clone must not look for the data there.
#[cfg(test)]
pub(crate) fn bundled(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("../data/binance")
        .join(rel)
}

/// The dead letters among a reader's records, in order.
#[cfg(test)]
pub(crate) fn dead_letters(records: &[Record]) -> Vec<&DeadLetter> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Dead(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// Bytes the readers have read from their files so far (compressed bytes for compressed
/// files), for a progress bar: clones share one count, so every reader of a run can add to it
/// while the caller reads it. Sniffing a file's format is not counted.
///
/// ```
/// use flowsense_sources::BytesRead;
/// let read = BytesRead::default();
/// read.add(10);
/// read.clone().add(5);
/// assert_eq!(read.get(), 15);
/// ```
#[derive(Clone, Debug, Default)]
pub struct BytesRead(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl BytesRead {
    /// Adds `n` bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes read so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A file that adds what is read from it to a [`BytesRead`].
pub(crate) struct Counted<R> {
    inner: R,
    read: BytesRead,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R, read: BytesRead) -> Self {
        Counted { inner, read }
    }
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.add(n as u64);
        Ok(n)
    }
}

/// One item of a reader's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A valid market event.
    Event(MarketEvent),
    /// A refused row, with its reason and raw text.
    Dead(DeadLetter),
    /// The reader starts a source (a file, or a synthetic symbol-day): what follows, up to its
    /// `SourceDone`, is written under this id.
    SourceStart(SourceId),
    /// The reader finished one source (a file, or a synthetic symbol-day); everything since the
    /// previous `SourceDone` came from it. Lake writers use it to name and close files.
    SourceDone(SourceId),
}

/// The records of a file that cannot be read at all (cannot be opened, its format cannot be
/// told, its compression or header is damaged): its start, one `unreadable` dead letter naming
/// the file and the error, and its end. The run goes on with the other files, and this one is on
/// record in `dead_letters` instead of stopping everything or being forgotten.
pub(crate) fn unreadable_file(path: &std::path::Path, error: &Error) -> [Record; 3] {
    let id = SourceId::for_file(path).unwrap_or_else(|_| SourceId::from_path(path));
    let dead = DeadLetter {
        source: id.as_str().to_string(),
        position: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        reason: flowsense_core::DeadLetterReason::Unreadable,
        detail: format!("the file cannot be read: {error}"),
        raw: String::new(),
    };
    [
        Record::SourceStart(id.clone()),
        Record::Dead(dead),
        Record::SourceDone(id),
    ]
}

/// A reader that makes records a step at a time into a queue (the LOBSTER and DBN readers):
/// its iterator drains the queue, steps while it is empty, and stops after the first error.
pub(crate) trait StepReader {
    /// Reads one input row, queueing what it produced; marks the reader done at the end.
    fn step(&mut self) -> Result<()>;

    /// The output queue and the done flag.
    fn queue(&mut self) -> (&mut std::collections::VecDeque<Record>, &mut bool);

    /// The next record, stepping as needed.
    fn next_record(&mut self) -> Option<Result<Record>> {
        loop {
            let (out, done) = self.queue();
            if !out.is_empty() || *done {
                return out.pop_front().map(Ok);
            }
            if let Err(e) = self.step() {
                *self.queue().1 = true;
                return Some(Err(e));
            }
        }
    }
}

/// A stable name for one unit of input, used in the lake's file names so that ingesting the same
/// input again replaces its files instead of adding rows.
///
/// ```
/// use flowsense_sources::SourceId;
/// assert_eq!(SourceId::from_path("data/usdm/btcusdt_20240808.gz".as_ref()).as_str(), "btcusdt_20240808");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(String);

impl SourceId {
    /// From any text: characters other than ASCII letters, digits, `_`, `-` and `.` become `_`.
    pub fn new(text: &str) -> Self {
        let s: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        SourceId(s)
    }

    /// From a file path: its name without compression and format extensions.
    pub fn from_path(path: &std::path::Path) -> Self {
        let mut name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for ext in [".gz", ".zst", ".csv", ".dbn", ".json", ".txt"] {
            if let Some(stripped) = name.strip_suffix(ext) {
                name = stripped.to_string();
            }
        }
        SourceId::new(&name)
    }

    /// For a file: its name (as [`SourceId::from_path`]) and a fingerprint of its first 64 KiB,
    /// so the same file ingested from any folder gets the same id, and two different files that
    /// share a name (`spot/btcusdt_20240808.gz`, `usdm/btcusdt_20240808.gz`) do not.
    pub fn for_file(path: &std::path::Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut head = Vec::with_capacity(1 << 16);
        std::fs::File::open(path)?
            .take(1 << 16)
            .read_to_end(&mut head)?;
        let len = std::fs::metadata(path)?.len();
        let mut h = fnv1a(&head);
        h = fnv1a_continue(h, &len.to_le_bytes());
        Ok(SourceId(format!(
            "{}-{:08x}",
            SourceId::from_path(path).0,
            h as u32
        )))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub use flowsense_core::ids::fnv1a;
use flowsense_core::ids::fnv1a_continue;
