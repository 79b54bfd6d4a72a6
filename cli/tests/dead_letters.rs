//! Every kind of bad input ends as a row in `dead_letters` with its reason, and the run finishes
//! with the good rows written.

use flowsense_core::DeadLetterReason;
use flowsense_dataflows::ingest::ingest_paths;
use flowsense_sinks::Lake;

use crate::common::*;

const T0: i64 = 1_723_161_256_000; // ms

fn binance_line(local: i64, json: &str) -> String {
    format!("{local} {json}\n")
}

fn bad_binance_capture() -> String {
    let depth = |u0: u64, u1: u64, pu: u64, t: i64, b: &str, a: &str| {
        format!(
            r#"{{"stream":"testusdt@depth@0ms","data":{{"e":"depthUpdate","E":{t},"T":{t},"s":"TESTUSDT","U":{u0},"u":{u1},"pu":{pu},"b":[{b}],"a":[{a}]}}}}"#
        )
    };
    let trade = |t: i64, p: &str, q: &str| {
        format!(
            r#"{{"stream":"testusdt@trade","data":{{"e":"trade","E":{t},"T":{t},"s":"TESTUSDT","t":1,"p":"{p}","q":"{q}","X":"MARKET","m":true}}}}"#
        )
    };
    let mut s = String::new();
    let l = 1_723_161_255_000_000_000i64;
    s += &binance_line(l, &depth(1, 5, 0, T0, r#"["100.0","1.5"]"#, ""));
    s += &binance_line(
        l + 1,
        &format!(
            r#"{{"lastUpdateId":3,"E":{T0},"T":{T0},"bids":[["100.0","1"],["99.0","2"]],"asks":[["101.0","1"],["102.0","3"]]}}"#
        ),
    );
    s += &binance_line(l + 2, &depth(6, 8, 5, T0 + 1, r#"["100.5","1"]"#, ""));
    s += "garbage without a timestamp\n";
    s += &binance_line(l + 3, "{not json");
    s += &binance_line(l + 4, &trade(T0 + 2, "NaN", "1"));
    s += &binance_line(l + 5, &trade(T0 + 3, "100.5", "-1"));
    s += &binance_line(l + 6, &trade(T0 + 4, "0", "1"));
    s += &binance_line(l + 7, &trade(T0 + 5, "100.5", "0.25"));
    s += &binance_line(l + 8, &trade(T0 - 60_000, "100.5", "0.25"));
    s += &binance_line(l + 9, &depth(9, 9, 8, T0 + 6, r#"["101.5","1"]"#, ""));
    s += &binance_line(
        l + 10,
        &depth(120, 130, 100, T0 + 7, "", r#"["103.0","1"]"#),
    );
    s += &binance_line(
        l + 11,
        r#"{"stream":"testusdt@kline_1m","data":{"e":"kline"}}"#,
    );
    s += &binance_line(l + 12, &trade(T0 + 8, "100.6", "0.5"));
    s
}

const BAD_LOBSTER: &str = "\
34200.1,1,1,100,1000000,1
34200.2,1,2,100,1010000,-1
34200.3,3,99,100,1000000,1
34200.4,1,3,100,1020000,1
34200.05,2,1,10,1000000,1
abc,1,7,100,1000000,1
34200.6,1,4,0,1000000,1
34200.7,1,5,100,-5,1
34200.8,1,6,100,NaN,1
34200.9,1,1,50,990000,1
34201.0,4,1,40,1000000,1
";

const BAD_BARS: &str = "\
timestamp,open,high,low,close,volume
2024-08-08 00:00:00,10,11,9,10.5,100
2024-08-08 00:01:00,10,9,9.5,10,100
2024-08-08 00:02:00,10.5,10.6,10.1,10.2,50
";

#[test]
fn every_bad_row_lands_in_dead_letters_and_the_run_finishes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("testusdt_20240808.txt"), bad_binance_capture()).unwrap();
        std::fs::write(
            input.join("TEST_2024-01-02_34200000_57600000_message_1.csv"),
            BAD_LOBSTER,
        )
        .unwrap();
        std::fs::write(input.join("TESTBAR-1m.csv"), BAD_BARS).unwrap();
        // A line that is not UTF-8 ends each text file.
        for f in [
            "TESTBAR-1m.csv",
            "TEST_2024-01-02_34200000_57600000_message_1.csv",
        ] {
            let mut bytes = std::fs::read(input.join(f)).unwrap();
            bytes.extend_from_slice(b"\xff\xfe,1,2\n");
            std::fs::write(input.join(f), bytes).unwrap();
        }
        // Files that cannot be read at all: one of no format we know, and a DBN file whose
        // header is damaged. Each is one dead letter; the others are ingested.
        std::fs::write(input.join("notes.txt"), "not market data\n").unwrap();
        std::fs::write(input.join("broken.dbn"), b"DBN\x03garbage").unwrap();
        // A compressed capture cut off mid-write: its first half is kept.
        let capture = std::fs::read(binance_data().join("spot/btcusdt_20240808.gz")).unwrap();
        std::fs::create_dir_all(input.join("cut")).unwrap();
        std::fs::write(
            input.join("cut/btcusdt_20240808.gz"),
            &capture[..capture.len() / 2],
        )
        .unwrap();
        let lake = Lake::open(
            dir.path().join("lake").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap();
        let report = ingest_paths(&lake, &[input], None, false).await.unwrap();
        let summary = report.summary("test");
        eprintln!("{summary}");
        // The files not read to the end are named in the summary, not only counted.
        assert!(summary.contains("not read to the end:\n"), "{summary}");
        for file in ["notes.txt: ", "broken.dbn: ", "btcusdt_20240808.gz:"] {
            assert!(summary.contains(&format!("  {file}")), "{file}: {summary}");
        }

        let dead = query_csv(
            &lake,
            "SELECT source, position, reason, raw FROM dead_letters",
        )
        .await;
        eprintln!("{dead}");
        // Unsupported records are DBN's alone (a_dbn_file_of_records_read_into_no_table_... has
        // them), and unknown symbols a live feed's (live::bad_messages_are_dead_letters_...).
        let reasons = DeadLetterReason::ALL.into_iter().filter(|r| {
            !matches!(
                r,
                DeadLetterReason::UnsupportedRecord | DeadLetterReason::UnknownSymbol
            )
        });
        for reason in reasons {
            assert!(
                report.dead.contains_key(&reason),
                "no {reason} in the report"
            );
            assert!(
                dead.contains(&format!("{}: ", reason.as_str())),
                "no {reason} row in dead_letters:\n{dead}"
            );
        }
        assert_eq!(
            query_u64(&lake, "SELECT count(*) FROM dead_letters").await,
            report.dead_total()
        );
        // Positions name the file and the line; the raw row is kept whole.
        assert!(dead.contains("testusdt_20240808.txt:4,\"unparsable: local timestamp"));
        assert!(dead.contains("garbage without a timestamp"));
        assert!(dead.contains("TEST_2024-01-02_34200000_57600000_message_1.csv:3,unknown_order"));

        assert!(
            dead.contains("TESTBAR-1m.csv:3,inconsistent_bar: open 10 high 9"),
            "{dead}"
        );
        let bars = query_u64(&lake, "SELECT count(*) FROM bars WHERE symbol = 'TESTBAR'").await;
        assert_eq!(bars, 2, "the bars around the bad one");
        assert!(
            dead.contains("btcusdt_20240808.gz:")
                && dead.contains("unreadable: the rest of the file cannot be read"),
            "{dead}"
        );
        assert!(
            dead.contains("notes.txt,unreadable: the file cannot be read:")
                && dead.contains("cannot tell the format"),
            "{dead}"
        );
        assert!(
            dead.contains("broken.dbn,unreadable: the file cannot be read:"),
            "{dead}"
        );
        assert!(
            dead.contains("TESTBAR-1m.csv:5,unparsable: not UTF-8"),
            "{dead}"
        );
        assert!(
            dead.contains(
                "TEST_2024-01-02_34200000_57600000_message_1.csv:12,unparsable: not UTF-8"
            ),
            "{dead}"
        );
        let kept = query_u64(
            &lake,
            "SELECT count(*) FROM quotes WHERE symbol = 'BTCUSDT'",
        )
        .await;
        assert!(
            kept > 1000,
            "the cut capture's rows before the cut are kept: {kept}"
        );
        // The good rows around the bad ones were written.
        let trades = query_csv(&lake, "SELECT symbol, price, size, side FROM trades").await;
        assert!(trades.contains("TESTUSDT-PERP,100.5,0.25,sell"), "{trades}");
        assert!(trades.contains("TESTUSDT-PERP,100.6,0.5,sell"), "{trades}");
        assert!(trades.contains("TEST,100.0,40.0,sell"), "{trades}");
        // After the crossed diff and the id gap, the book is marked as in a gap.
        let gaps = query_u64(
            &lake,
            "SELECT count(*) FROM bbo WHERE symbol = 'TESTUSDT-PERP' AND gap",
        )
        .await;
        assert_eq!(gaps, 0, "the refused diffs themselves write no book rows");
        let ok_books = query_u64(
            &lake,
            "SELECT count(*) FROM bbo WHERE symbol = 'TESTUSDT-PERP' AND NOT gap",
        )
        .await;
        assert_eq!(ok_books, 3, "snapshot, first diff, second diff");
    });
}

/// A DBN file of a schema FlowSense reads into no table (statistics): every record is an
/// `unsupported_record` dead letter, the summary counts them by kind, and the ingest exits
/// non-zero naming the schema; a file beside it of a schema it reads still lands.
#[test]
fn a_dbn_file_of_records_read_into_no_table_fails_the_ingest_by_name() {
    use dbn::encode::{EncodeRecord, dbn::Encoder};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, schema: dbn::Schema, ohlcv: bool| {
        let date = time::Date::from_calendar_date(2024, time::Month::January, 2).unwrap();
        let meta = dbn::Metadata::builder()
            .dataset("XNAS.ITCH".to_string())
            .schema(Some(schema))
            .start(0)
            .stype_in(Some(dbn::SType::RawSymbol))
            .stype_out(dbn::SType::InstrumentId)
            .mappings(vec![dbn::SymbolMapping {
                raw_symbol: "ABC".into(),
                intervals: vec![dbn::MappingInterval {
                    start_date: date,
                    end_date: date.next_day().unwrap(),
                    symbol: "7".into(),
                }],
            }])
            .build();
        let path = dir.path().join("in").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = Encoder::new(std::io::BufWriter::new(file), &meta).unwrap();
        for k in 0..3u64 {
            let ts = 1_704_205_800_000_000_000 + k * 60_000_000_000;
            if ohlcv {
                let hd = dbn::RecordHeader::new::<dbn::OhlcvMsg>(dbn::rtype::OHLCV_1M, 1, 7, ts);
                let p = 100_000_000_000;
                let bar = dbn::OhlcvMsg {
                    hd,
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    volume: 5,
                };
                enc.encode_record(&bar).unwrap();
            } else {
                let hd = dbn::RecordHeader::new::<dbn::StatMsg>(dbn::rtype::STATISTICS, 1, 7, ts);
                enc.encode_record(&dbn::StatMsg {
                    hd,
                    ..Default::default()
                })
                .unwrap();
            }
        }
        path
    };
    write(
        "xnas-20240102.statistics.dbn",
        dbn::Schema::Statistics,
        false,
    );
    write("xnas-20240102.ohlcv-1m.dbn", dbn::Schema::Ohlcv1M, true);
    let lake = dir.path().join("lake");
    let input = dir.path().join("in");
    let err = run_err(&[
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    for part in [
        "3 statistics",
        "xnas-20240102.statistics",
        "schema statistics, 3 records",
        "unsupported_record",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    let lake = Lake::open(lake.to_str().unwrap(), &Default::default()).unwrap();
    rt().block_on(async {
        let dead = query_u64(
            &lake,
            "SELECT count(*) FROM dead_letters WHERE reason LIKE 'unsupported_record: statistics%'",
        )
        .await;
        assert_eq!(dead, 3);
        assert_eq!(query_u64(&lake, "SELECT count(*) FROM bars").await, 3);
    });
}
