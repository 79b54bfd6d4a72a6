//! Dead letters of a running job (a live feed's refused messages) into the lake's
//! `dead_letters` table, as they come, a file every so many.

use flowsense_core::{DeadLetter, Lake};

use crate::{LakeWriter, Result};

/// Dead letters per file: a live job's refusals reach the lake at this pace (and at its end).
const ROWS_PER_FILE: usize = 1000;

/// Writes one source's dead letters into `dead_letters`, a file each [`ROWS_PER_FILE`] rows
/// and the rest at [`DeadLetterLog::finish`].
///
/// ```
/// use flowsense_core::{DeadLetter, DeadLetterReason, Lake};
/// use flowsense_sinks::dead::DeadLetterLog;
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// let mut log = DeadLetterLog::new(lake, "live-job-1").unwrap();
/// log.push(&DeadLetter { source: "live-usdm-btcusdt".into(), position: "line 3".into(),
///     reason: DeadLetterReason::Unparsable, detail: "not a JSON object".into(), raw: "{".into() }).unwrap();
/// assert_eq!(log.finish().unwrap(), 1);
/// assert!(dir.path().join("dead_letters/live-job-1-00000.parquet").exists());
/// ```
pub struct DeadLetterLog {
    writer: LakeWriter,
    rt: tokio::runtime::Runtime,
    rows: u64,
}

impl DeadLetterLog {
    /// A log whose files are named for `source` (unique per run: a source's earlier files
    /// that this run did not write are removed at its end).
    pub fn new(lake: Lake, source: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut writer = LakeWriter::new(lake).with_max_rows(ROWS_PER_FILE);
        writer.begin_source(source);
        Ok(DeadLetterLog {
            writer,
            rt,
            rows: 0,
        })
    }

    /// Adds one; a full file is written now.
    pub fn push(&mut self, d: &DeadLetter) -> Result<()> {
        self.writer.push_dead(d);
        self.rows += 1;
        if self.writer.has_pending() {
            self.rt.block_on(self.writer.flush())?;
        }
        Ok(())
    }

    /// Writes the rest; the rows written in all.
    pub fn finish(mut self) -> Result<u64> {
        self.rt.block_on(self.writer.end_source())?;
        Ok(self.rows)
    }
}
