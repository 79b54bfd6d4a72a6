//! Which reader a file needs, and opening a set of input files as readers.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::binance::{BinanceOptions, BinanceReader};
use crate::dbn::DbnReader;
use crate::lobster::{LobsterOptions, LobsterReader};
use crate::{Error, Record, Result};

/// Input formats `flowsense ingest` understands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Binance raw websocket captures.
    Binance,
    /// LOBSTER message files (with their orderbook files).
    Lobster,
    /// Databento DBN.
    Dbn,
    /// OHLCV bars in CSV.
    Bars,
    /// Alpaca market data: stream frames as JSON lines, or REST pages.
    Alpaca,
    /// Polygon stocks: stream frames as JSON lines.
    Polygon,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "binance" => Ok(Format::Binance),
            "lobster" => Ok(Format::Lobster),
            "dbn" => Ok(Format::Dbn),
            "bars" => Ok(Format::Bars),
            "alpaca" => Ok(Format::Alpaca),
            "polygon" => Ok(Format::Polygon),
            _ => Err(format!(
                "unknown format {s:?} (binance, lobster, dbn, bars, alpaca, polygon)"
            )),
        }
    }
}

/// Guesses a file's format from its name and first bytes; `None` for files to skip (a LOBSTER
/// orderbook file is read with its message file).
pub fn detect(path: &Path) -> Result<Option<Format>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.contains("_orderbook_") && name.ends_with(".csv") {
        return Ok(None);
    }
    if name.contains("_message_") && name.ends_with(".csv") {
        return Ok(Some(Format::Lobster));
    }
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"DBN")
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || name.ends_with(".dbn")
        || name.ends_with(".dbn.zst")
    {
        return Ok(Some(Format::Dbn));
    }
    let mut text = crate::binance::sniff_text(path)?;
    let mut line = String::new();
    use std::io::BufRead;
    text.read_line(&mut line).map_err(|e| Error::io(path, e))?;
    match crate::stocks::sniff(&line) {
        Some(crate::stocks::Vendor::Alpaca) => return Ok(Some(Format::Alpaca)),
        Some(crate::stocks::Vendor::Polygon) => return Ok(Some(Format::Polygon)),
        None => {}
    }
    if let Some((ts, json)) = line.split_once(' ')
        && ts.bytes().all(|b| b.is_ascii_digit())
        && json.starts_with('{')
    {
        return Ok(Some(Format::Binance));
    }
    if crate::bars::recognises_header(&line) {
        return Ok(Some(Format::Bars));
    }
    Err(Error::format(path, "cannot tell the format; pass --format"))
}

/// A boxed reader.
pub type Reader = Box<dyn Iterator<Item = Result<Record>> + Send>;

/// An opened input: its format (`None` for a file that cannot be read, whose reader gives its
/// one `unreadable` dead letter), its files (a Binance chain has several) and its reader.
pub type Input = (Option<Format>, Vec<PathBuf>, Reader);

/// Options of every reader, for [`open_inputs_with`].
#[derive(Clone, Debug, Default)]
pub struct InputOptions {
    /// Binance reader options.
    pub binance: BinanceOptions,
    /// LOBSTER reader options.
    pub lobster: LobsterOptions,
    /// Bars reader options.
    pub bars: crate::bars::BarsOptions,
    /// Where every reader opened counts the bytes it reads (each reader's own option is set
    /// to this one).
    pub bytes_read: crate::BytesRead,
}

/// [`open_inputs_with`] with default options.
pub fn open_inputs(paths: &[PathBuf], format: Option<Format>) -> Result<Vec<Input>> {
    open_inputs_with(paths, format, &InputOptions::default())
}

/// Expands directories (recursively, sorted), then opens readers: Binance files of one market
/// and symbol (same folder, same name before the date) chain into one reader in name order, so a
/// day's file continues the previous day's book; each LOBSTER or DBN file is its own reader.
///
/// A path that does not exist is an error. A file that exists but cannot be read (its format
/// cannot be told, it cannot be opened, its header or compression is damaged) is not: its reader
/// gives one `unreadable` dead letter naming it, and its format is `None`.
pub fn open_inputs_with(
    paths: &[PathBuf],
    format: Option<Format>,
    options: &InputOptions,
) -> Result<Vec<Input>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    // A file named twice (twice on the command line, or itself and its folder) is read once:
    // read twice, its second copy would continue the first one's book as if it came later.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let binance = BinanceOptions {
        bytes_read: options.bytes_read.clone(),
        ..options.binance.clone()
    };
    let lobster = LobsterOptions {
        bytes_read: options.bytes_read.clone(),
        ..options.lobster.clone()
    };
    let bars = crate::bars::BarsOptions {
        bytes_read: options.bytes_read.clone(),
        ..options.bars.clone()
    };
    let mut groups: BTreeMap<(PathBuf, String), Vec<PathBuf>> = BTreeMap::new();
    let mut out: Vec<Input> = Vec::new();
    let unreadable = |f: &Path, e: Error| -> Input {
        let records = crate::unreadable_file(f, &e).map(Ok);
        (None, vec![f.to_path_buf()], Box::new(records.into_iter()))
    };
    for f in files {
        let fmt = match format {
            Some(Format::Lobster) if f.to_string_lossy().contains("_orderbook_") => continue,
            Some(fmt) => fmt,
            None => match detect(&f) {
                Ok(Some(fmt)) => fmt,
                Ok(None) => continue,
                Err(e) => {
                    out.push(unreadable(&f, e));
                    continue;
                }
            },
        };
        let reader: Result<Reader> = match fmt {
            Format::Binance => {
                let stem = crate::SourceId::from_path(&f).as_str().to_string();
                let key = stem
                    .rsplit_once('_')
                    .filter(|(_, d)| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(stem.clone(), |(h, _)| h.to_string());
                groups
                    .entry((f.parent().map(Path::to_path_buf).unwrap_or_default(), key))
                    .or_default()
                    .push(f);
                continue;
            }
            Format::Lobster => LobsterReader::open(&f, lobster.clone()).map(|r| Box::new(r) as _),
            Format::Dbn => {
                DbnReader::open_counted(&f, &options.bytes_read).map(|r| Box::new(r) as _)
            }
            Format::Bars => {
                crate::bars::BarsReader::open(&f, bars.clone()).map(|r| Box::new(r) as _)
            }
            Format::Alpaca => {
                crate::stocks::StockReader::open(vec![f.clone()], crate::stocks::Vendor::Alpaca)
                    .map(|r| Box::new(r) as _)
            }
            Format::Polygon => {
                crate::stocks::StockReader::open(vec![f.clone()], crate::stocks::Vendor::Polygon)
                    .map(|r| Box::new(r) as _)
            }
        };
        out.push(match reader {
            Ok(reader) => (Some(fmt), vec![f], reader),
            Err(e) => unreadable(&f, e),
        });
    }
    for (_, mut group) in groups {
        group.sort();
        let reader = BinanceReader::open(group.clone(), binance.clone())?;
        out.push((Some(Format::Binance), group, Box::new(reader)));
    }
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let name = e.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // Documentation beside the data (SOURCES.md, LICENSE files) is not market data.
            if name.starts_with('.') || name.ends_with(".md") || name.starts_with("LICENSE") {
                continue;
            }
            collect(&e, out)?;
        }
        Ok(())
    } else if p.is_file() {
        out.push(p.to_path_buf());
        Ok(())
    } else {
        Err(Error::format(p, "no such file or directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_count_every_byte_of_their_files() {
        let dir = crate::bundled("");
        let options = InputOptions::default();
        let inputs = open_inputs_with(std::slice::from_ref(&dir), None, &options).unwrap();
        let mut size = 0;
        for (_, files, reader) in inputs {
            size += files
                .iter()
                .map(|f| std::fs::metadata(f).unwrap().len())
                .sum::<u64>();
            for r in reader {
                r.unwrap();
            }
        }
        assert!(size > 1_000_000);
        assert_eq!(options.bytes_read.get(), size);
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let dir = crate::bundled("spot");
        let file = dir.join("btcusdt_20240808.gz");
        let inputs = open_inputs(&[file.clone(), file, dir], None).unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].1.len(), 1, "{:?}", inputs[0].1);
    }
}
