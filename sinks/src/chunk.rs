//! Parquet column chunks encoded as rows arrive: the lake writer's own encoder for market data.
//!
//! Ingest writes millions of rows of a handful of types, and building Arrow arrays for
//! `ArrowWriter` to take apart again cost more than the encoding itself (BENCHMARKS.md,
//! ingest). Here each column keeps its rows as plain values until a page is full, then encodes
//! the page straight into its chunk: integers as `DELTA_BINARY_PACKED`; doubles and strings
//! through a dictionary (`RLE_DICTIONARY`), falling back to `PLAIN` for the rest of the chunk
//! once the dictionary passes 1 MiB; booleans `PLAIN`; nulls as definition levels. Pages are
//! Snappy-compressed version 1 data pages. The `parquet` crate still writes what must follow
//! the format to the letter (page headers, the footer, the Arrow schema in the file's metadata),
//! so a file here is read like any `ArrowWriter` file; the tests read every type back. A file
//! is never gathered into one buffer: it is put from its column chunks' own buffers between the
//! bytes the `parquet` crate writes around them ([`Splice`]).

use std::io::{Cursor, Read};
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use bytes::Bytes;
use object_store::PutPayload;
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescPtr};
use rustc_hash::FxHashMap;

use crate::Result;

/// A dictionary stops growing past this many bytes of values (as `parquet`'s default).
const DICTIONARY_BYTES: usize = 1 << 20;

/// Text columns whose bounds are longer than this carry no min and max in their statistics.
const MAX_STATISTICS_BYTES: usize = 64;

/// What a lake file needs once per table: its Parquet schema and writer properties (with the
/// Arrow schema in its metadata, as `ArrowWriter` would put it).
#[derive(Clone)]
pub(crate) struct FileLayout {
    arrow: Arc<Schema>,
    parquet: SchemaDescPtr,
    props: Arc<WriterProperties>,
}

impl FileLayout {
    /// The layout of files of this Arrow schema.
    pub(crate) fn new(arrow: Arc<Schema>) -> Result<Self> {
        let parquet = Arc::new(ArrowSchemaConverter::new().convert(&arrow)?);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        add_encoded_arrow_schema_to_metadata(&arrow, &mut props);
        Ok(FileLayout {
            arrow,
            parquet,
            props: Arc::new(props),
        })
    }

    /// Empty columns, one per field.
    pub(crate) fn columns(&self) -> Vec<Column> {
        self.arrow
            .fields()
            .iter()
            .map(|f| Column::new(f.data_type(), f.is_nullable()))
            .collect()
    }

    /// One Parquet file of one row group holding these columns' rows, as the parts it is put
    /// from (see [`Splice`]); the columns are empty after.
    pub(crate) fn write(&self, cols: &mut [Column], scratch: &mut Scratch) -> Result<PutPayload> {
        let chunks = (cols.iter_mut().enumerate())
            .map(|(i, col)| col.finish(self.parquet.column(i), scratch))
            .collect::<Result<Vec<_>>>()?;
        let parts = (chunks.iter())
            .flat_map(|(bytes, _)| [bytes.dict.clone(), bytes.data.clone()])
            .filter(|b| !b.is_empty())
            .collect();
        let root = self.parquet.root_schema_ptr();
        let mut file = SerializedFileWriter::new(Splice::default(), root, self.props.clone())?;
        let start = file.bytes_written();
        file.inner_mut().expect_chunks(start, parts);
        let mut group = file.next_row_group()?;
        for (bytes, close) in chunks {
            group.append_column(&bytes, close)?;
        }
        group.close()?;
        Ok(file.into_inner()?.finish()?)
    }
}

/// What a lake file's `SerializedFileWriter` writes into. The `parquet` crate writes the magic,
/// the page indexes and the footer, and copies each column chunk in; a splice keeps its own
/// bytes but, for the chunks, the chunks' buffers themselves: the file is put from those parts
/// and never gathered into one buffer. (Gathering it cost a copy of every byte into fresh
/// memory, the kernel zeroing each new page first: BENCHMARKS.md, ingest.) The copied bytes are
/// checked against the chunks they stand for, so a file cannot differ from what was written.
#[derive(Default)]
struct Splice {
    /// The file so far, in order: the writer's own bytes and the chunks.
    parts: Vec<Bytes>,
    /// The writer's own bytes since the last part.
    own: Vec<u8>,
    /// Where the chunks start in the file, and the chunks, in file order.
    start: usize,
    chunks: Vec<Bytes>,
    /// The chunk being copied in, and how much of it has been.
    next: usize,
    at: usize,
    /// Bytes written so far.
    pos: usize,
}

impl Splice {
    /// From byte `start` of the file on, the writer copies in `chunks`, one after another.
    fn expect_chunks(&mut self, start: usize, chunks: Vec<Bytes>) {
        self.start = start;
        self.chunks = chunks;
    }

    /// The file's parts, once the writer is done.
    fn finish(mut self) -> std::io::Result<PutPayload> {
        if self.next < self.chunks.len() {
            return Err(std::io::Error::other(
                "a Parquet file was finished before all its column chunks were in it",
            ));
        }
        self.flush_own();
        Ok(self.parts.into_iter().collect())
    }

    fn flush_own(&mut self) {
        if !self.own.is_empty() {
            self.parts.push(Bytes::from(std::mem::take(&mut self.own)));
        }
    }
}

impl std::io::Write for Splice {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = if self.pos < self.start || self.next == self.chunks.len() {
                // The writer's own bytes: before the chunks, or after the last.
                let n = match self.pos < self.start {
                    true => buf.len().min(self.start - self.pos),
                    false => buf.len(),
                };
                self.own.extend_from_slice(&buf[..n]);
                n
            } else {
                let chunk = &self.chunks[self.next];
                let n = buf.len().min(chunk.len() - self.at);
                if buf[..n] != chunk[self.at..self.at + n] {
                    return Err(std::io::Error::other(
                        "a column chunk was copied into its Parquet file other than it was encoded",
                    ));
                }
                if self.at == 0 {
                    let chunk = chunk.clone();
                    self.flush_own();
                    self.parts.push(chunk);
                }
                self.at += n;
                if self.at == self.chunks[self.next].len() {
                    self.next += 1;
                    self.at = 0;
                }
                n
            };
            self.pos += n;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A column's rows not yet in a page.
enum Values {
    /// `Int64`, and `UInt64` as its bits.
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    /// Strings end to end, and where each ends.
    Str {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    },
    /// Strings known at compile time (a side, an action): no copy of the text.
    Static(Vec<&'static str>),
}

impl Values {
    /// Statistics of this type for a chunk without values.
    fn no_statistics(&self) -> fn(Option<u64>) -> Statistics {
        match self {
            Values::Int(_) => |n| Statistics::int64(None, None, None, n, false),
            Values::Float(_) => |n| Statistics::double(None, None, None, n, false),
            Values::Bool(_) => |n| Statistics::boolean(None, None, None, n, false),
            Values::Str { .. } | Values::Static(_) => {
                |n| Statistics::byte_array(None, None, None, n, false)
            }
        }
    }
}

/// Which integers a column holds (for the order of its statistics).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ints {
    Signed,
    Unsigned,
}

/// A dictionary of doubles (by their bits) or strings, in order of first appearance.
#[derive(Default)]
struct Dictionary {
    floats: FxHashMap<u64, u32>,
    strings: FxHashMap<Box<[u8]>, u32>,
    /// The values, `PLAIN`-encoded: the dictionary page's body.
    plain: Vec<u8>,
    len: u32,
    /// Doubles looked up lately, by a hash of their bits, with their indices.
    recent: Option<Box<[(u64, u32)]>>,
}

/// Slots in a dictionary's cache of recent doubles: 1024 of 16 bytes, 16 KiB.
const RECENT_BITS: u32 = 10;

impl Dictionary {
    /// The index of a double: a value seen lately is found in a small direct-mapped cache (a
    /// book's levels near the touch come back again and again) before the map.
    #[inline]
    fn float(&mut self, v: f64) -> u32 {
        let bits = v.to_bits();
        let slot = (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECENT_BITS)) as usize;
        let cache = self
            .recent
            .get_or_insert_with(|| vec![(u64::MAX, u32::MAX); 1 << RECENT_BITS].into_boxed_slice());
        let (b, i) = cache[slot];
        if b == bits && i != u32::MAX {
            return i;
        }
        let i = self.float_slow(v);
        if let Some(cache) = &mut self.recent {
            cache[slot] = (bits, i);
        }
        i
    }

    #[cold]
    fn float_slow(&mut self, v: f64) -> u32 {
        let next = self.len;
        *self.floats.entry(v.to_bits()).or_insert_with(|| {
            self.plain.extend_from_slice(&v.to_le_bytes());
            self.len += 1;
            next
        })
    }

    fn string(&mut self, s: &[u8]) -> u32 {
        match self.strings.get(s) {
            Some(&i) => i,
            None => {
                let i = self.len;
                self.strings.insert(s.into(), i);
                plain_string(s, &mut self.plain);
                self.len += 1;
                i
            }
        }
    }

    fn full(&self) -> bool {
        self.plain.len() > DICTIONARY_BYTES
    }

    /// Empty, keeping the maps' and buffers' memory.
    fn clear(&mut self) {
        self.floats.clear();
        self.strings.clear();
        self.plain.clear();
        self.len = 0;
        // 16 KiB a column: made again on the next file's first lookup, not kept by every
        // finished partition.
        self.recent = None;
    }
}

/// Minimum and maximum of a chunk's values so far.
#[derive(Clone, Default)]
enum Range {
    #[default]
    Empty,
    Int(i64, i64),
    Uint(u64, u64),
    Float(f64, f64),
    Bool(bool, bool),
    Bytes(Vec<u8>, Vec<u8>),
}

impl Range {
    fn int(&mut self, lo: i64, hi: i64) {
        *self = match *self {
            Range::Int(a, b) => Range::Int(a.min(lo), b.max(hi)),
            _ => Range::Int(lo, hi),
        }
    }
    fn uint(&mut self, lo: u64, hi: u64) {
        *self = match *self {
            Range::Uint(a, b) => Range::Uint(a.min(lo), b.max(hi)),
            _ => Range::Uint(lo, hi),
        }
    }
    fn float(&mut self, lo: f64, hi: f64) {
        *self = match *self {
            Range::Float(a, b) => Range::Float(a.min(lo), b.max(hi)),
            _ => Range::Float(lo, hi),
        }
    }
    fn merge(&mut self, other: &Range) {
        match other {
            Range::Empty => {}
            Range::Int(a, b) => self.int(*a, *b),
            Range::Uint(a, b) => self.uint(*a, *b),
            Range::Float(a, b) => self.float(*a, *b),
            Range::Bool(a, b) => {
                self.bool(*a);
                self.bool(*b);
            }
            Range::Bytes(a, b) => {
                self.bytes(a);
                self.bytes(b);
            }
        }
    }

    /// The bounds as the page index stores them (`PLAIN`), or `None` when there are none.
    fn plain_bounds(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Range::Empty => None,
            Range::Int(a, b) => Some((a.to_le_bytes().into(), b.to_le_bytes().into())),
            Range::Uint(a, b) => Some((a.to_le_bytes().into(), b.to_le_bytes().into())),
            Range::Float(a, b) => Some((a.to_le_bytes().into(), b.to_le_bytes().into())),
            Range::Bool(a, b) => Some((vec![*a as u8], vec![*b as u8])),
            Range::Bytes(a, b) => Some((a.clone(), b.clone())),
        }
    }

    fn bool(&mut self, v: bool) {
        *self = match *self {
            Range::Bool(a, b) => Range::Bool(a & v, b | v),
            _ => Range::Bool(v, v),
        }
    }
    fn bytes(&mut self, v: &[u8]) {
        match self {
            Range::Bytes(a, b) => {
                if v < a.as_slice() {
                    *a = v.to_vec();
                }
                if v > b.as_slice() {
                    *b = v.to_vec();
                }
            }
            _ => *self = Range::Bytes(v.to_vec(), v.to_vec()),
        }
    }

    /// The chunk's statistics; `empty` gives them, of the column's type, when it has no value.
    fn statistics(&self, nulls: u64, empty: fn(Option<u64>) -> Statistics) -> Statistics {
        let n = Some(nulls);
        match self {
            Range::Empty => empty(n),
            Range::Int(a, b) => Statistics::int64(Some(*a), Some(*b), None, n, false),
            // Unsigned columns are INT64 with an unsigned logical type: the bits, ordered unsigned.
            Range::Uint(a, b) => {
                Statistics::int64(Some(*a as i64), Some(*b as i64), None, n, false)
            }
            Range::Float(a, b) => Statistics::double(Some(*a), Some(*b), None, n, false),
            Range::Bool(a, b) => Statistics::boolean(Some(*a), Some(*b), None, n, false),
            // Long text (a dead letter's raw line) would bloat the footer for no pruning anyone
            // does: its bounds are left out, as a reader allows.
            Range::Bytes(a, b) if a.len().max(b.len()) > MAX_STATISTICS_BYTES => {
                Statistics::byte_array(None, None, None, n, false)
            }
            Range::Bytes(a, b) => Statistics::byte_array(
                Some(ByteArray::from(a.clone())),
                Some(ByteArray::from(b.clone())),
                None,
                n,
                false,
            ),
        }
    }
}

/// One column of an open file: rows gather as values and are encoded a page at a time into
/// the column chunk's bytes.
pub(crate) struct Column {
    values: Values,
    ints: Ints,
    /// The pending integers' bounds, kept as they are pushed (a depth message's levels push
    /// each id and time once for all its rows), as keys ordered like the values: the bits, with
    /// the sign bit flipped for unsigned ones ([`Column::int_key`]).
    int_bounds: (i64, i64),
    /// One flag per row, for a nullable column.
    valid: Option<Vec<bool>>,
    /// The dictionary while pages still use it (doubles and strings).
    dictionary: Option<Dictionary>,
    /// The dictionary once it is full: later pages are `PLAIN`, earlier ones still index it.
    closed: Option<Dictionary>,
    /// The data pages so far, headers included.
    chunk: Option<TrackedWrite<Vec<u8>>>,
    rows: u64,
    nulls: u64,
    range: Range,
    /// Each data page's bounds, nulls, rows, and place in the chunk: the page index.
    pages: Vec<PageEntry>,
    uncompressed: u64,
    encodings: Vec<Encoding>,
}

/// One data page, for the page index.
struct PageEntry {
    range: Range,
    nulls: u64,
    rows: u64,
    /// Where in the data pages it starts, and its size with its header.
    offset: u64,
    size: u32,
}

/// What encoding a page needs only while it runs: one per writer, shared by all its columns,
/// so that a source with thousands of open partitions does not hold thousands of copies.
#[derive(Default)]
pub(crate) struct Scratch {
    /// A page's body before compression, its dictionary indices and its definition levels.
    body: Vec<u8>,
    indices: Vec<u32>,
    levels: Vec<u32>,
    snappy: Snappy,
}

impl Column {
    /// An empty column of this Arrow type.
    ///
    /// # Panics
    /// For a type the lake's market-data tables do not use.
    pub(crate) fn new(ty: &DataType, nullable: bool) -> Self {
        let (values, ints) = match ty {
            DataType::Int64 => (Values::Int(Vec::new()), Ints::Signed),
            DataType::UInt64 => (Values::Int(Vec::new()), Ints::Unsigned),
            DataType::Float64 => (Values::Float(Vec::new()), Ints::Signed),
            DataType::Boolean => (Values::Bool(Vec::new()), Ints::Signed),
            DataType::Utf8 => (
                Values::Str {
                    bytes: Vec::new(),
                    ends: Vec::new(),
                },
                Ints::Signed,
            ),
            other => panic!("the lake writer has no encoding for {other}"),
        };
        let dictionary =
            matches!(values, Values::Float(_) | Values::Str { .. }).then(Dictionary::default);
        Column {
            values,
            ints,
            int_bounds: (i64::MAX, i64::MIN),
            valid: nullable.then(Vec::new),
            dictionary,
            closed: None,
            chunk: None,
            rows: 0,
            nulls: 0,
            range: Range::Empty,
            pages: Vec::new(),
            uncompressed: 0,
            encodings: Vec::new(),
        }
    }

    /// Rows not yet encoded.
    pub(crate) fn pending(&self) -> usize {
        match &self.valid {
            Some(v) => v.len(),
            None => match &self.values {
                Values::Int(v) => v.len(),
                Values::Float(v) => v.len(),
                Values::Bool(v) => v.len(),
                Values::Str { ends, .. } => ends.len(),
                Values::Static(v) => v.len(),
            },
        }
    }

    /// Rows so far, encoded or not.
    pub(crate) fn len(&self) -> usize {
        self.rows as usize + self.pending()
    }

    fn present(&mut self, yes: bool) {
        match &mut self.valid {
            Some(v) => v.push(yes),
            None => assert!(yes, "a null in a column that cannot hold one"),
        }
    }

    /// Appends an integer (an unsigned one as its bits) or a null.
    pub(crate) fn push_int(&mut self, v: Option<i64>) {
        self.present(v.is_some());
        if let (Some(v), Values::Int(vals)) = (v, &mut self.values) {
            vals.push(v);
            self.widen_int_bounds(v);
        }
    }

    /// An integer as a key that orders as the column's values do: unsigned values (stored as
    /// their bits) with the sign bit flipped.
    #[inline]
    fn int_key(&self, v: i64) -> i64 {
        match self.ints {
            Ints::Signed => v,
            Ints::Unsigned => v ^ i64::MIN,
        }
    }

    #[inline]
    fn widen_int_bounds(&mut self, v: i64) {
        let k = self.int_key(v);
        let (lo, hi) = &mut self.int_bounds;
        *lo = (*lo).min(k);
        *hi = (*hi).max(k);
    }

    /// Appends the same integer `n` times.
    pub(crate) fn push_int_n(&mut self, v: Option<i64>, n: usize) {
        if let Some(valid) = &mut self.valid {
            valid.resize(valid.len() + n, v.is_some());
        } else {
            assert!(v.is_some(), "a null in a column that cannot hold one");
        }
        if let (Some(v), Values::Int(vals)) = (v, &mut self.values)
            && n > 0
        {
            vals.resize(vals.len() + n, v);
            self.widen_int_bounds(v);
        }
    }

    /// Appends a double or a null.
    pub(crate) fn push_float(&mut self, v: Option<f64>) {
        self.present(v.is_some());
        if let (Some(v), Values::Float(vals)) = (v, &mut self.values) {
            vals.push(v);
        }
    }

    /// Appends a string.
    pub(crate) fn push_str(&mut self, v: &str) {
        if let Values::Static(vals) = &mut self.values {
            // Copy the page's static strings so far: from now on it holds text.
            let mut bytes = Vec::new();
            let mut ends = Vec::with_capacity(vals.len());
            for s in vals.iter() {
                bytes.extend_from_slice(s.as_bytes());
                ends.push(bytes.len());
            }
            self.values = Values::Str { bytes, ends };
        }
        self.present(true);
        if let Values::Str { bytes, ends } = &mut self.values {
            bytes.extend_from_slice(v.as_bytes());
            ends.push(bytes.len());
        }
    }

    /// Appends a string known at compile time, by reference.
    pub(crate) fn push_static(&mut self, v: &'static str) {
        if let Values::Str { ends, .. } = &self.values {
            if !ends.is_empty() {
                return self.push_str(v);
            }
            self.values = Values::Static(Vec::new());
        }
        self.present(true);
        if let Values::Static(vals) = &mut self.values {
            vals.push(v);
        }
    }

    /// Appends a boolean `n` times.
    pub(crate) fn push_bool_n(&mut self, v: bool, n: usize) {
        if let Some(valid) = &mut self.valid {
            valid.resize(valid.len() + n, true);
        }
        if let Values::Bool(vals) = &mut self.values {
            vals.resize(vals.len() + n, v);
        }
    }

    /// Encodes the pending rows as one data page.
    pub(crate) fn encode_page(&mut self, scratch: &mut Scratch) -> Result<()> {
        let Scratch {
            body,
            indices,
            levels,
            snappy,
        } = scratch;
        let rows = self.pending();
        if rows == 0 {
            return Ok(());
        }
        body.clear();
        // This page's bounds and nulls, for the page index and the chunk's statistics.
        let mut range = Range::Empty;
        let mut nulls = 0;
        if let Some(valid) = &mut self.valid {
            levels.clear();
            levels.extend(valid.iter().map(|&v| v as u32));
            nulls = valid.iter().filter(|&&v| !v).count() as u64;
            body.extend_from_slice(&[0; 4]);
            rle_hybrid(levels, 1, body);
            let len = (body.len() - 4) as u32;
            body[..4].copy_from_slice(&len.to_le_bytes());
            valid.clear();
        }
        let encoding = match &mut self.values {
            Values::Int(vals) => {
                let (lo, hi) = std::mem::replace(&mut self.int_bounds, (i64::MAX, i64::MIN));
                if !vals.is_empty() {
                    match self.ints {
                        Ints::Signed => range.int(lo, hi),
                        Ints::Unsigned => {
                            range.uint((lo ^ i64::MIN) as u64, (hi ^ i64::MIN) as u64)
                        }
                    }
                }
                delta_binary_packed(vals, body);
                vals.clear();
                Encoding::DELTA_BINARY_PACKED
            }
            Values::Bool(vals) => {
                for &v in vals.iter() {
                    range.bool(v);
                }
                plain_bools(vals, body);
                vals.clear();
                Encoding::PLAIN
            }
            Values::Float(vals) => {
                if let Some((lo, hi)) = float_bounds(vals) {
                    range.float(lo, hi);
                }
                if let Some(dict) = &mut self.dictionary {
                    indices.clear();
                    indices.extend(vals.iter().map(|&v| dict.float(v)));
                }
                let encoding = dictionary_or_plain(self.dictionary.as_mut(), indices, body, || {
                    vals.iter().flat_map(|v| v.to_le_bytes()).collect()
                });
                vals.clear();
                encoding
            }
            Values::Str { bytes, ends } => {
                // Equal text in a row (a bar's interval) is looked up once.
                let strings = std::iter::once(&0)
                    .chain(ends.iter())
                    .zip(ends.iter())
                    .map(|(&start, &end)| &bytes[start..end]);
                let encoding = encode_strings(
                    self.dictionary.as_mut(),
                    strings,
                    |a, b| a == b,
                    &mut range,
                    indices,
                    body,
                );
                bytes.clear();
                ends.clear();
                encoding
            }
            Values::Static(vals) => {
                // The same `&'static str` twice is the same text: its address and length tell.
                let encoding = encode_strings(
                    self.dictionary.as_mut(),
                    vals.iter().map(|s| s.as_bytes()),
                    |a, b| std::ptr::eq(a, b),
                    &mut range,
                    indices,
                    body,
                );
                vals.clear();
                encoding
            }
        };
        if self.dictionary.as_ref().is_some_and(Dictionary::full) {
            // Later pages are PLAIN; the dictionary page keeps what earlier ones index.
            let mut d = self.dictionary.take().expect("checked above");
            d.floats = FxHashMap::default();
            d.strings = FxHashMap::default();
            d.recent = None;
            self.closed = Some(d);
        }
        if !self.encodings.contains(&encoding) {
            self.encodings.push(encoding);
        }
        let page = Page::DataPage {
            buf: snappy.compress(body)?,
            num_values: rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        // Made at the first page: a partition that never fills one holds no buffer for it.
        let chunk = (self.chunk).get_or_insert_with(|| TrackedWrite::new(Vec::new()));
        let spec =
            SerializedPageWriter::new(chunk).write_page(CompressedPage::new(page, body.len()))?;
        self.uncompressed += spec.uncompressed_size as u64;
        self.rows += rows as u64;
        self.nulls += nulls;
        self.range.merge(&range);
        self.pages.push(PageEntry {
            range,
            nulls,
            rows: rows as u64,
            offset: spec.offset,
            size: spec.compressed_size as u32,
        });
        Ok(())
    }

    /// The chunk's bytes (dictionary page first) and its metadata; the column starts again empty.
    fn finish(
        &mut self,
        descr: ColumnDescPtr,
        scratch: &mut Scratch,
    ) -> Result<(ChunkBytes, ColumnCloseResult)> {
        self.encode_page(scratch)?;
        let dict = self.closed.take().or_else(|| self.dictionary.take());
        let mut dict_page = TrackedWrite::new(Vec::new());
        let mut encodings = std::mem::take(&mut self.encodings);
        // Only a dictionary some page indexes is written.
        if let Some(d) = dict
            .as_ref()
            .filter(|_| encodings.contains(&Encoding::RLE_DICTIONARY))
        {
            let page = Page::DictionaryPage {
                buf: scratch.snappy.compress(&d.plain)?,
                num_values: d.len,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            let spec = SerializedPageWriter::new(&mut dict_page)
                .write_page(CompressedPage::new(page, d.plain.len()))?;
            self.uncompressed += spec.uncompressed_size as u64;
            if !encodings.contains(&Encoding::PLAIN) {
                encodings.push(Encoding::PLAIN);
            }
        }
        if self.valid.is_some() {
            encodings.push(Encoding::RLE);
        }
        let dict_page = Bytes::from(dict_page.into_inner()?);
        let data = match self.chunk.take() {
            Some(w) => Bytes::from(w.into_inner()?),
            None => Bytes::new(),
        };
        let dict_len = dict_page.len() as i64;
        let metadata = ColumnChunkMetaData::builder(descr.clone())
            .set_encodings(encodings)
            .set_compression(Compression::SNAPPY)
            .set_num_values(self.rows as i64)
            .set_total_compressed_size(dict_len + data.len() as i64)
            .set_total_uncompressed_size(self.uncompressed as i64)
            .set_dictionary_page_offset((dict_len > 0).then_some(0))
            .set_data_page_offset(dict_len)
            .set_statistics(
                self.range
                    .statistics(self.nulls, self.values.no_statistics()),
            )
            .build()?;
        // The page index: where each page is and how many rows it has, and its bounds (left out
        // when a bound is long text, as the chunk's statistics are).
        let mut bounds = ColumnIndexBuilder::new(descr.physical_type());
        let mut places = OffsetIndexBuilder::new();
        for p in self.pages.drain(..) {
            match p.range.plain_bounds() {
                Some((lo, hi)) if lo.len().max(hi.len()) > MAX_STATISTICS_BYTES => {
                    bounds.to_invalid()
                }
                Some((lo, hi)) => bounds.append(false, lo, hi, p.nulls as i64),
                None => bounds.append(true, Vec::new(), Vec::new(), p.nulls as i64),
            }
            places.append_offset_and_size(dict_len + p.offset as i64, p.size as i32);
            places.append_row_count(p.rows as i64);
        }
        let close = ColumnCloseResult {
            bytes_written: (dict_len as u64) + data.len() as u64,
            rows_written: self.rows,
            metadata,
            bloom_filter: None,
            column_index: bounds.valid().then(|| bounds.build()).transpose()?,
            offset_index: Some(places.build()),
        };
        // Empty again, keeping what was allocated: buffers, and the dictionary's maps.
        self.rows = 0;
        self.nulls = 0;
        self.uncompressed = 0;
        self.range = Range::Empty;
        self.dictionary = dict.map(|mut d| {
            d.clear();
            d
        });
        Ok((
            ChunkBytes {
                dict: dict_page,
                data,
            },
            close,
        ))
    }
}

/// The dictionary page's indices, or the page's values `PLAIN` when there is no dictionary (it
/// filled up, or no value has come yet: a page of nulls before any value).
fn dictionary_or_plain(
    dict: Option<&mut Dictionary>,
    indices: &[u32],
    body: &mut Vec<u8>,
    plain: impl FnOnce() -> Vec<u8>,
) -> Encoding {
    match dict {
        Some(d) if !d.full() && d.len > 0 => {
            let width = (32 - d.len.saturating_sub(1).leading_zeros()).max(1);
            body.push(width as u8);
            rle_hybrid(indices, width, body);
            Encoding::RLE_DICTIONARY
        }
        _ => {
            body.extend_from_slice(&plain());
            Encoding::PLAIN
        }
    }
}

/// A page of strings: each looked up in the dictionary (a string `same` as the one before it
/// takes its index, and leaves the range as it is, without a look), or `PLAIN`; the page's range
/// takes the strings.
fn encode_strings<'a>(
    dict: Option<&mut Dictionary>,
    strings: impl Iterator<Item = &'a [u8]> + Clone,
    same: impl Fn(&[u8], &[u8]) -> bool,
    range: &mut Range,
    indices: &mut Vec<u32>,
    body: &mut Vec<u8>,
) -> Encoding {
    indices.clear();
    match dict {
        Some(dict) => {
            let mut last: Option<(&[u8], u32)> = None;
            for s in strings.clone() {
                let i = match last {
                    Some((l, i)) if same(l, s) => i,
                    _ => {
                        range.bytes(s);
                        let i = dict.string(s);
                        last = Some((s, i));
                        i
                    }
                };
                indices.push(i);
            }
            dictionary_or_plain(Some(dict), indices, body, || plain_strings(strings))
        }
        None => {
            strings.clone().for_each(|s| range.bytes(s));
            dictionary_or_plain(None, indices, body, || plain_strings(strings))
        }
    }
}

fn plain_strings<'a>(strings: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut plain = Vec::new();
    strings.for_each(|s| plain_string(s, &mut plain));
    plain
}

/// A column chunk as two buffers: its dictionary page (maybe empty) and its data pages.
pub(crate) struct ChunkBytes {
    dict: Bytes,
    data: Bytes,
}

impl Length for ChunkBytes {
    fn len(&self) -> u64 {
        (self.dict.len() + self.data.len()) as u64
    }
}

impl ChunkReader for ChunkBytes {
    type T = std::io::Chain<Cursor<Bytes>, Cursor<Bytes>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let mut r = Cursor::new(self.dict.clone()).chain(Cursor::new(self.data.clone()));
        std::io::copy(&mut (&mut r).take(start), &mut std::io::sink())?;
        Ok(r)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut out = vec![0; length];
        self.get_read(start)?.read_exact(&mut out)?;
        Ok(Bytes::from(out))
    }
}

/// A Snappy encoder and its output buffer, kept from page to page (a fresh encoder allocates
/// and clears its hash table; a fresh buffer is zeroed).
struct Snappy {
    encoder: snap::raw::Encoder,
    out: Vec<u8>,
}

impl Default for Snappy {
    fn default() -> Self {
        Snappy {
            encoder: snap::raw::Encoder::new(),
            out: Vec::new(),
        }
    }
}

impl Snappy {
    fn compress(&mut self, body: &[u8]) -> Result<Bytes> {
        let max = snap::raw::max_compress_len(body.len());
        if self.out.len() < max {
            self.out.resize(max, 0);
        }
        let n = self
            .encoder
            .compress(body, &mut self.out)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(Bytes::copy_from_slice(&self.out[..n]))
    }
}

fn plain_string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

fn plain_bools(vals: &[bool], out: &mut Vec<u8>) {
    for group in vals.chunks(8) {
        let byte = group
            .iter()
            .enumerate()
            .fold(0u8, |b, (i, &v)| b | ((v as u8) << i));
        out.push(byte);
    }
}

fn uleb128(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The RLE / bit-packing hybrid of `values`, each below `2^width`: runs of eight or more
/// equal values as one run, the rest bit-packed eight at a time.
fn rle_hybrid(values: &[u32], width: u32, out: &mut Vec<u8>) {
    let n = values.len();
    let value_bytes = width.div_ceil(8) as usize;
    let run_at = |i: usize| i + 8 <= n && values[i + 1..i + 8].iter().all(|&x| x == values[i]);
    let mut i = 0;
    while i < n {
        if run_at(i) {
            let v = values[i];
            let mut j = i + 8;
            while j < n && values[j] == v {
                j += 1;
            }
            uleb128(((j - i) as u64) << 1, out);
            out.extend_from_slice(&v.to_le_bytes()[..value_bytes]);
            i = j;
            continue;
        }
        let start = i;
        let mut groups = 0usize;
        loop {
            i = (i + 8).min(n);
            groups += 1;
            if i == n || groups == 63 || run_at(i) {
                break;
            }
        }
        uleb128(((groups as u64) << 1) | 1, out);
        bit_pack(&values[start..i], width, groups * 8, out);
    }
}

/// `count` values of `width` bits, least significant bit first; missing values are zeros.
fn bit_pack(values: &[u32], width: u32, count: usize, out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut bits = 0;
    for k in 0..count {
        acc |= (values.get(k).copied().unwrap_or(0) as u64) << bits;
        bits += width;
        if bits >= 32 {
            out.extend_from_slice(&(acc as u32).to_le_bytes());
            acc >>= 32;
            bits -= 32;
        }
    }
    while bits > 0 {
        out.push(acc as u8);
        acc >>= 8;
        bits = bits.saturating_sub(8);
    }
}

/// Values per delta block, and miniblocks per block (so 32 values a miniblock).
const DELTA_BLOCK: usize = 128;
const MINIBLOCKS: usize = 4;
const MINIBLOCK: usize = DELTA_BLOCK / MINIBLOCKS;

/// `DELTA_BINARY_PACKED`: the first value, then blocks of deltas less their minimum,
/// bit-packed 32 at a time at the width of each miniblock's largest.
fn delta_binary_packed(vals: &[i64], out: &mut Vec<u8>) {
    uleb128(DELTA_BLOCK as u64, out);
    uleb128(MINIBLOCKS as u64, out);
    uleb128(vals.len() as u64, out);
    uleb128(zigzag(vals.first().copied().unwrap_or(0)), out);
    let mut deltas = [0i64; DELTA_BLOCK];
    let mut packed = [0u64; MINIBLOCK];
    let mut k = 1;
    while k < vals.len() {
        let n = (vals.len() - k).min(DELTA_BLOCK);
        let mut min = i64::MAX;
        for j in 0..n {
            let d = vals[k + j].wrapping_sub(vals[k + j - 1]);
            deltas[j] = d;
            min = min.min(d);
        }
        uleb128(zigzag(min), out);
        let minis = n.div_ceil(MINIBLOCK);
        let mut widths = [0u32; MINIBLOCKS];
        for (m, w) in widths.iter_mut().enumerate().take(minis) {
            let lo = m * MINIBLOCK;
            let hi = (lo + MINIBLOCK).min(n);
            let max = deltas[lo..hi]
                .iter()
                .fold(0u64, |acc, &d| acc | d.wrapping_sub(min) as u64);
            *w = 64 - max.leading_zeros();
        }
        out.extend(widths.iter().map(|&w| w as u8));
        for (m, &w) in widths.iter().enumerate().take(minis) {
            let lo = m * MINIBLOCK;
            let hi = (lo + MINIBLOCK).min(n);
            for (p, &d) in packed.iter_mut().zip(&deltas[lo..hi]) {
                *p = d.wrapping_sub(min) as u64;
            }
            packed[hi - lo..].fill(0);
            bit_pack64(&packed, w, out);
        }
        k += n;
    }
}

/// 32 values of `width` bits (up to 64), least significant bit first: `4 * width` bytes.
fn bit_pack64(values: &[u64; MINIBLOCK], width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    // Packed into words on the stack, then appended at once: no capacity check a word.
    let mut words = [0u64; MINIBLOCK];
    let mut w = 0;
    let mut acc = 0u128;
    let mut bits = 0;
    for &v in values {
        acc |= (v as u128) << bits;
        bits += width;
        if bits >= 64 {
            words[w] = acc as u64;
            w += 1;
            acc >>= 64;
            bits -= 64;
        }
    }
    // 32 values of `width` bits fill exactly `width / 2` words, and half a word when odd.
    let bytes = 4 * width as usize;
    if bits > 0 {
        words[w] = acc as u64;
    }
    let all: [u8; MINIBLOCK * 8] = le_bytes(&words);
    out.extend_from_slice(&all[..bytes]);
}

/// Words as their little-endian bytes, end to end.
fn le_bytes(words: &[u64; MINIBLOCK]) -> [u8; MINIBLOCK * 8] {
    let mut out = [0u8; MINIBLOCK * 8];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The smallest and largest of some doubles (none is NaN: the lake's numbers are validated),
/// in four independent lanes so that the comparisons do not wait on one another.
fn float_bounds(vals: &[f64]) -> Option<(f64, f64)> {
    let &first = vals.first()?;
    let mut lo = [first; 4];
    let mut hi = [first; 4];
    let mut quads = vals.chunks_exact(4);
    for q in &mut quads {
        for i in 0..4 {
            lo[i] = lo[i].min(q[i]);
            hi[i] = hi[i].max(q[i]);
        }
    }
    for &v in quads.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    Some((
        lo[0].min(lo[1]).min(lo[2].min(lo[3])),
        hi[0].max(hi[1]).max(hi[2].max(hi[3])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
    };
    use arrow::datatypes::Field;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use proptest::prelude::*;
    use std::io::Write;

    /// One row of every type the encoder takes.
    #[derive(Clone, Debug, Default)]
    struct Row {
        int: i64,
        maybe: Option<i64>,
        uint: u64,
        float: f64,
        maybe_float: Option<f64>,
        text: String,
        flag: bool,
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("int", DataType::Int64, false),
            Field::new("maybe", DataType::Int64, true),
            Field::new("uint", DataType::UInt64, false),
            Field::new("float", DataType::Float64, false),
            Field::new("maybe_float", DataType::Float64, true),
            Field::new("text", DataType::Utf8, false),
            Field::new("flag", DataType::Boolean, false),
        ]))
    }

    /// The rows through our encoder, `page` rows a page, and the file's bytes.
    fn encode(rows: &[Row], page: usize) -> Bytes {
        let layout = FileLayout::new(schema()).unwrap();
        encode_into(&layout, &mut layout.columns(), rows, page)
    }

    /// [`encode`] with columns that may have written files before.
    fn encode_into(layout: &FileLayout, cols: &mut [Column], rows: &[Row], page: usize) -> Bytes {
        let scratch = &mut Scratch::default();
        for (i, r) in rows.iter().enumerate() {
            cols[0].push_int(Some(r.int));
            cols[1].push_int(r.maybe);
            cols[2].push_int(Some(r.uint as i64));
            cols[3].push_float(Some(r.float));
            cols[4].push_float(r.maybe_float);
            // Known words by reference, the rest as text: pages mix both.
            match r.text.as_str() {
                "buy" => cols[5].push_static("buy"),
                "sell" => cols[5].push_static("sell"),
                text => cols[5].push_str(text),
            }
            cols[6].push_bool_n(r.flag, 1);
            if (i + 1) % page == 0 {
                cols.iter_mut()
                    .for_each(|c| c.encode_page(scratch).unwrap());
            }
        }
        assert!(cols.iter().all(|c| c.len() == rows.len()));
        let file = Bytes::from(layout.write(cols, scratch).unwrap());
        assert!(cols.iter().all(|c| c.len() == 0), "columns start again");
        file
    }

    fn expected(rows: &[Row]) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.int))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.maybe))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.uint))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.float))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.maybe_float))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.text))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.flag)))),
        ];
        RecordBatch::try_new(schema(), cols).unwrap()
    }

    fn read(file: Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        arrow::compute::concat_batches(&schema(), &batches).unwrap()
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            any::<i64>(),
            prop_oneof![
                Just(None),
                (-5i64..5).prop_map(Some),
                any::<i64>().prop_map(Some)
            ],
            prop_oneof![0u64..3, any::<u64>()],
            prop_oneof![(0u32..4).prop_map(|p| 100.0 + p as f64 / 4.0), any::<f64>()]
                .prop_filter("no NaN in the lake", |f| !f.is_nan()),
            prop_oneof![Just(None), (0u32..3).prop_map(|s| Some(s as f64))],
            prop_oneof![Just("buy".to_string()), Just("sell".to_string()), ".{0,20}"],
            any::<bool>(),
        )
            .prop_map(|(int, maybe, uint, float, maybe_float, text, flag)| Row {
                int,
                maybe,
                uint,
                float,
                maybe_float,
                text,
                flag,
            })
    }

    proptest! {
        #[test]
        fn any_rows_read_back_as_written(
            rows in prop::collection::vec(row(), 1..600),
            page in 1usize..200,
        ) {
            let want = expected(&rows);
            let got = read(encode(&rows, page));
            prop_assert_eq!(got, want);
        }

        /// Columns reused for file after file (their dictionaries emptied, not dropped) write
        /// each file as fresh columns would.
        #[test]
        fn reused_columns_write_each_file_afresh(
            files in prop::collection::vec(prop::collection::vec(row(), 1..300), 2..4),
            page in 1usize..100,
        ) {
            let layout = FileLayout::new(schema()).unwrap();
            let mut cols = layout.columns();
            for rows in &files {
                let file = encode_into(&layout, &mut cols, rows, page);
                prop_assert_eq!(&file, &encode(rows, page), "byte for byte");
                prop_assert_eq!(read(file), expected(rows));
            }
        }

        /// Runs of a value, as timestamps repeat over a depth message's levels.
        #[test]
        fn runs_and_steps_read_back(
            runs in prop::collection::vec((any::<i64>(), 1usize..40), 1..40),
            page in 1usize..300,
        ) {
            let rows: Vec<Row> = runs.iter().flat_map(|&(v, n)| std::iter::repeat_n(Row {
                int: v,
                maybe: Some(v / 2),
                uint: v as u64,
                float: v as f64,
                maybe_float: None,
                text: "sell".into(),
                flag: v > 0,
            }, n)).collect();
            prop_assert_eq!(read(encode(&rows, page)), expected(&rows));
        }
    }

    #[test]
    fn statistics_are_those_of_the_values() {
        let rows: Vec<Row> = (0..1000)
            .map(|i| Row {
                int: 500 - i,
                maybe: (i % 3 == 0).then_some(i),
                // Both sides of 2^63, where signed and unsigned order part.
                uint: if i % 2 == 0 {
                    u64::MAX - i as u64
                } else {
                    i as u64
                },
                float: (i as f64) / 8.0 - 3.0,
                text: format!("s{:03}", i % 250),
                flag: true,
                ..Default::default()
            })
            .collect();
        let file = encode(&rows, 300);
        let meta = SerializedFileReader::new(file).unwrap();
        let group = meta.metadata().row_group(0);
        assert_eq!(group.num_rows(), 1000);
        let stats = |i: usize| group.column(i).statistics().unwrap().clone();
        assert_eq!(
            stats(0),
            Statistics::int64(Some(-499), Some(500), None, Some(0), false)
        );
        assert_eq!(
            stats(1),
            Statistics::int64(Some(0), Some(999), None, Some(666), false)
        );
        let (lo, hi) = (1u64, u64::MAX);
        assert_eq!(
            stats(2),
            Statistics::int64(Some(lo as i64), Some(hi as i64), None, Some(0), false),
            "unsigned: the bits of the unsigned minimum and maximum"
        );
        assert_eq!(
            stats(3),
            Statistics::double(Some(-3.0), Some(121.875), None, Some(0), false)
        );
        // No value: statistics of the column's type, nulls counted.
        assert!(matches!(stats(4), Statistics::Double(_)), "{:?}", stats(4));
        assert_eq!(stats(4).null_count_opt(), Some(1000));
        assert_eq!(stats(4).min_bytes_opt(), None);
        assert_eq!(
            stats(5),
            Statistics::byte_array(
                Some(ByteArray::from("s000")),
                Some(ByteArray::from("s249")),
                None,
                Some(0),
                false
            )
        );
    }

    #[test]
    fn a_dictionary_past_its_size_hands_the_rest_of_the_chunk_to_plain() {
        // 200 000 distinct doubles: 1.6 MB, past the 1 MiB dictionary.
        let rows: Vec<Row> = (0..200_000)
            .map(|i| Row {
                int: i,
                float: i as f64 * 0.5,
                maybe_float: Some((i % 7) as f64),
                text: i.to_string(),
                ..Default::default()
            })
            .collect();
        let layout = FileLayout::new(schema()).unwrap();
        let mut cols = layout.columns();
        let file = encode_into(&layout, &mut cols, &rows, 65_536);
        // The columns, their full dictionaries emptied, write the next file as new ones would.
        let after = &rows[..1000];
        assert_eq!(
            encode_into(&layout, &mut cols, after, 300),
            encode(after, 300)
        );
        let meta = SerializedFileReader::new(file.clone()).unwrap();
        let encodings = meta
            .metadata()
            .row_group(0)
            .column(3)
            .encodings()
            .collect::<Vec<_>>();
        assert!(
            encodings.contains(&Encoding::RLE_DICTIONARY),
            "{encodings:?}"
        );
        assert!(encodings.contains(&Encoding::PLAIN), "{encodings:?}");
        assert_eq!(read(file), expected(&rows));
    }

    #[test]
    fn the_page_index_has_each_pages_place_rows_and_bounds() {
        use parquet::file::page_index::column_index::ColumnIndexMetaData;
        use parquet::file::serialized_reader::ReadOptionsBuilder;
        let rows: Vec<Row> = (0..1000)
            .map(|i| Row {
                int: 500 - i,
                uint: i as u64,
                float: i as f64,
                text: if i < 450 { "buy" } else { "sell" }.into(),
                flag: i >= 300,
                ..Default::default()
            })
            .collect();
        let file = encode(&rows, 300);
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader = SerializedFileReader::new_with_options(file, options).unwrap();
        let meta = reader.metadata();
        let places = &meta.offset_index().unwrap()[0];
        let first_rows: Vec<i64> = places[0]
            .page_locations()
            .iter()
            .map(|p| p.first_row_index)
            .collect();
        assert_eq!(first_rows, [0, 300, 600, 900]);
        let bounds = &meta.column_index().unwrap()[0];
        let ColumnIndexMetaData::INT64(ints) = &bounds[0] else {
            panic!("{:?}", bounds[0])
        };
        let pages: Vec<(i64, i64)> = (0..4)
            .map(|k| (*ints.min_value(k).unwrap(), *ints.max_value(k).unwrap()))
            .collect();
        assert_eq!(pages, [(201, 500), (-99, 200), (-399, -100), (-499, -400)]);
        // A page of nulls only is marked so.
        assert!((0..4).all(|k| bounds[1].is_null_page(k)));
        let ColumnIndexMetaData::BYTE_ARRAY(text) = &bounds[5] else {
            panic!("{:?}", bounds[5])
        };
        let words: Vec<(&[u8], &[u8])> = (0..4)
            .map(|k| (text.min_value(k).unwrap(), text.max_value(k).unwrap()))
            .collect();
        let (b, s): (&[u8], &[u8]) = (b"buy", b"sell");
        assert_eq!(words, [(b, b), (b, s), (s, s), (s, s)]);
    }

    #[test]
    fn long_text_has_no_bounds_in_its_statistics() {
        let rows: Vec<Row> = ["short", &"x".repeat(65)]
            .iter()
            .map(|t| Row {
                text: t.to_string(),
                flag: true,
                ..Default::default()
            })
            .collect();
        let file = encode(&rows, 10);
        let meta = SerializedFileReader::new(file.clone()).unwrap();
        let stats = meta
            .metadata()
            .row_group(0)
            .column(5)
            .statistics()
            .unwrap()
            .clone();
        assert_eq!((stats.min_bytes_opt(), stats.max_bytes_opt()), (None, None));
        assert_eq!(stats.null_count_opt(), Some(0));
        assert_eq!(read(file), expected(&rows));
    }

    #[test]
    fn a_dictionary_no_page_indexes_is_not_written() {
        // One page of 200 000 distinct doubles: the dictionary fills within it, so it is PLAIN.
        let rows: Vec<Row> = (0..200_000)
            .map(|i| Row {
                int: i,
                float: i as f64 * 0.25,
                text: "buy".into(),
                flag: true,
                ..Default::default()
            })
            .collect();
        let file = encode(&rows, 200_000);
        let meta = SerializedFileReader::new(file.clone()).unwrap();
        let group = meta.metadata().row_group(0);
        assert_eq!(group.column(3).dictionary_page_offset(), None);
        assert!(
            group.column(5).dictionary_page_offset().is_some(),
            "text has one"
        );
        assert_eq!(read(file), expected(&rows));
    }

    #[test]
    fn bit_packing_and_runs_by_hand() {
        // Eight 1s are a run; three values after them a bit-packed group padded to eight.
        let mut out = Vec::new();
        rle_hybrid(&[1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 1], 2, &mut out);
        assert_eq!(out, vec![16, 1, 3, 0b01_11_10, 0]);
        let mut out = Vec::new();
        delta_binary_packed(&[7], &mut out);
        assert_eq!(out, vec![128, 1, 4, 1, 14], "one value: the header alone");
    }

    #[test]
    fn a_splice_puts_the_chunks_own_buffers_between_the_writers_bytes() {
        let (a, b) = (Bytes::from(vec![1u8; 10_000]), Bytes::from_static(b"chunk"));
        let mut splice = Splice::default();
        splice.expect_chunks(4, vec![a.clone(), b.clone()]);
        // As a buffered writer might hand them over: pieces across the parts' edges.
        let file = [b"PAR1".as_slice(), &a[..], &b[..], b"footer"].concat();
        for piece in file.chunks(3001) {
            splice.write_all(piece).unwrap();
        }
        let parts: Vec<Bytes> = splice.finish().unwrap().into_iter().collect();
        assert_eq!(parts.concat(), file);
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[1].as_ptr(),
            a.as_ptr(),
            "the chunk itself, not a copy"
        );
        assert_eq!(parts[2].as_ptr(), b.as_ptr());
    }

    #[test]
    fn a_splice_refuses_a_chunk_copied_other_than_encoded_or_left_out() {
        let chunk = Bytes::from_static(b"chunk");
        let mut splice = Splice::default();
        splice.expect_chunks(4, vec![chunk.clone()]);
        let err = splice.write_all(b"PAR1chunX").unwrap_err();
        assert!(
            err.to_string().contains("other than it was encoded"),
            "{err}"
        );

        let mut splice = Splice::default();
        splice.expect_chunks(4, vec![chunk]);
        splice.write_all(b"PAR1chu").unwrap();
        let err = splice.finish().unwrap_err();
        assert!(
            err.to_string().contains("before all its column chunks"),
            "{err}"
        );
    }
}
