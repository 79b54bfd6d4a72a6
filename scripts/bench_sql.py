"""SQL benchmark: the same queries over the same synthetic lake in FlowSense (DataFusion) and in
DuckDB, run from one script, with the ratio per query.

    python3 scripts/bench_sql.py [--lake DIR] [--symbols 10] [--days 5] [--events-per-day 1000000]

Makes the lake with `flowsense synth` when DIR has none (10 x 5 x 1 M = about 50 M order messages,
plus as many BBO rows and the trades), then runs each query --repeat times in each engine and
prints the medians. Needs a release build (`cargo build --release`) and `pip install duckdb`.
Both engines get the machine's threads (2 here)."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/flowsense-target"))
FLOWSENSE = os.path.join(TARGET, "release", "flowsense")

# One text per query, valid in both engines. Times are ns since the epoch (BIGINT).
QUERIES = {
    "q1_filter_trades": "SELECT count(*) AS n, avg(price) AS px FROM trades WHERE symbol = 'SYN003' AND size >= 500",
    "q2_filter_bbo_wide_spread": "SELECT count(*) AS n FROM bbo WHERE ask_price - bid_price > 0.015",
    "q3_groupby_symbol_vwap": "SELECT symbol, count(*) AS n, sum(size) AS vol, sum(price * size) / sum(size) AS vwap FROM trades GROUP BY symbol",
    "q4_groupby_minute_bars": "SELECT symbol, ts - ts % 60000000000 AS minute, count(*) AS n, min(price) AS lo, max(price) AS hi, sum(size) AS vol FROM trades GROUP BY symbol, ts - ts % 60000000000",
    "q5_groupby_symbol_day_spread": "SELECT symbol, date, avg(ask_price - bid_price) AS spread, avg(bid_size + ask_size) AS depth FROM bbo GROUP BY symbol, date",
    "q6_groupby_action": "SELECT action, side, count(*) AS n, sum(size) AS qty FROM book_events GROUP BY action, side",
    # As-of join of each trade to the latest BBO strictly before it, in SQL both engines run
    # (DataFusion has no ASOF JOIN): number the BBO rows per symbol with a running count, give
    # each trade the count so far, and join on it.
    "q7_asof_trades_to_bbo": """
        WITH u AS (
            SELECT symbol, ts, 0 AS k, price, side, CAST(NULL AS DOUBLE) AS bid, CAST(NULL AS DOUBLE) AS ask FROM trades
            UNION ALL
            SELECT symbol, ts, 1 AS k, CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR), bid_price, ask_price FROM bbo
        ), f AS (
            SELECT symbol, k, price, side, bid, ask,
                sum(k) OVER (PARTITION BY symbol ORDER BY ts, k ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS grp
            FROM u
        )
        SELECT t.symbol, count(*) AS n,
            avg(CASE WHEN t.side = 'buy' THEN t.price - (b.bid + b.ask) / 2 ELSE (b.bid + b.ask) / 2 - t.price END) AS eff_half_spread
        FROM f t JOIN f b ON t.symbol = b.symbol AND t.grp = b.grp AND b.k = 1
        WHERE t.k = 0 GROUP BY t.symbol""",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", default=os.path.join(tempfile.gettempdir(), "flowsense-sqlbench-lake"))
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--events-per-day", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(FLOWSENSE):
        sys.exit(f"{FLOWSENSE} not found: cargo build --release first")
    if not os.path.isdir(os.path.join(args.lake, "book_events")):
        t = time.time()
        subprocess.run([FLOWSENSE, "synth", "--lake", args.lake, "--symbols", str(args.symbols), "--days", str(args.days),
                        "--events-per-day", str(args.events_per_day), "--quiet"], check=True)
        print(f"made the lake in {time.time() - t:.0f} s", file=sys.stderr)

    con = duckdb.connect()
    for t in ["trades", "bbo", "book_events"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{args.lake}/{t}/*/*/*.parquet', hive_partitioning = true)")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ["book_events", "bbo", "trades"]}
    print(f"lake {args.lake}: {counts['book_events']:,} order messages, {counts['bbo']:,} BBO rows, {counts['trades']:,} trades")

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(QUERIES, f)
        qfile = f.name
    out = subprocess.run([FLOWSENSE, "bench", "sql", "--lake", args.lake, "--queries", qfile, "--repeat", str(args.repeat)],
                         check=True, capture_output=True, text=True).stdout
    fs = {r["name"]: r for r in map(json.loads, out.splitlines())}

    print(f"{'query':<32} {'FlowSense ms':>13} {'DuckDB ms':>10} {'ratio':>7} {'rows':>8}   (ratio = FlowSense / DuckDB, median of {args.repeat}; DuckDB {duckdb.__version__})")
    ratios = []
    for name, sql in QUERIES.items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times.append((time.perf_counter() - t) * 1e3)
        d = statistics.median(times)
        r = fs[name]["median_ms"] / d
        ratios.append(r)
        assert fs[name]["rows"] == len(rows), (name, fs[name]["rows"], len(rows))
        print(f"{name:<32} {fs[name]['median_ms']:>13.1f} {d:>10.1f} {r:>7.2f} {len(rows):>8}")
    print(f"geometric mean ratio {statistics.geometric_mean(ratios):.2f}; worst {max(ratios):.2f}")


if __name__ == "__main__":
    main()
