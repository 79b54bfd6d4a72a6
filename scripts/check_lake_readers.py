"""Checks that DuckDB and Polars read a FlowSense lake as it is, with the Hive partition columns,
and that both agree with each other on every table. Usage: check_lake_readers.py LAKE_DIR"""
import sys

import duckdb
import polars as pl

lake = sys.argv[1]
con = duckdb.connect()
checked = 0
for table in ["trades", "bbo", "quotes", "depth_updates", "book_events"]:
    glob = f"{lake}/{table}/*/*/*.parquet"
    d = con.execute(
        f"SELECT symbol, date, count(*) AS n, sum(price * size) AS notional FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
        if table in ("trades", "depth_updates", "book_events")
        else f"SELECT symbol, date, count(*) AS n, sum(bid_price) AS notional FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    value = pl.col("price") * pl.col("size") if table in ("trades", "depth_updates", "book_events") else pl.col("bid_price")
    p = (
        pl.scan_parquet(glob, hive_partitioning=True)
        .group_by("symbol", "date")
        .agg(pl.len().alias("n"), value.sum().alias("notional"))
        .sort("symbol", "date")
        .collect()
    )
    prows = [(r[0], str(r[1]), r[2], r[3]) for r in p.iter_rows()]
    drows = [(r[0], str(r[1]), r[2], r[3]) for r in d]
    assert len(drows) == len(prows) and len(drows) > 0, (table, drows, prows)
    for a, b in zip(drows, prows):
        assert a[:3] == b[:3], (table, a, b)
        assert abs(a[3] - b[3]) <= 1e-9 * max(1.0, abs(a[3])), (table, a, b)
    checked += len(drows)
    # Prices and sizes are plain numbers to DuckDB.
    kind = con.execute(f"SELECT typeof(ts) FROM read_parquet('{glob}', hive_partitioning = true) LIMIT 1").fetchone()[0]
    assert kind in ("BIGINT",), kind
# The features table: both read the same rows, lists included.
fglob = f"{lake}/features/*/*/*.parquet"
d = con.execute(
    f"SELECT symbol, bucket, count(*), sum(ofi_l1), sum(len(ofi_levels)) FROM read_parquet('{fglob}', hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
).fetchall()
p = (
    pl.scan_parquet(fglob, hive_partitioning=True)
    .group_by("symbol", "bucket")
    .agg(pl.len(), pl.col("ofi_l1").sum(), pl.col("ofi_levels").list.len().sum())
    .sort("symbol", "bucket")
    .collect()
)
assert len(d) == p.height and len(d) > 0, (d, p)
for a, b in zip(d, p.iter_rows()):
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[4] == b[4], (a, b)
    assert abs(a[3] - b[3]) <= 1e-9 * max(1.0, abs(a[3])), (a, b)
ops = con.execute(f"SELECT count(DISTINCT name) FROM read_parquet('{lake}/flowsense_operators/*.parquet')").fetchone()[0]
assert ops >= 3, ops
checked += len(d)
side = con.execute(f"SELECT DISTINCT side FROM read_parquet('{lake}/trades/*/*/*.parquet', hive_partitioning = true) ORDER BY 1").fetchall()
assert side == [("buy",), ("sell",)], side
# A backtest's results: unpartitioned, run_id and symbol in the files.
for table, value in [("fills", "fee"), ("equity", "equity"), ("orders", "size")]:
    d = con.execute(
        f"SELECT run_id, symbol, count(*), sum({value}) FROM read_parquet('{lake}/{table}/*.parquet') GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    p = (
        pl.scan_parquet(f"{lake}/{table}/*.parquet")
        .group_by("run_id", "symbol")
        .agg(pl.len(), pl.col(value).sum())
        .sort("run_id", "symbol")
        .collect()
    )
    assert len(d) == p.height and len(d) > 0, (table, d, p)
    for a, b in zip(d, p.iter_rows()):
        assert a[:3] == b[:3] and abs(a[3] - b[3]) <= 1e-9 * max(1.0, abs(a[3])), (table, a, b)
    checked += len(d)
m = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/metrics/*.parquet') WHERE scope = 'portfolio'").fetchone()[0]
assert m >= 1, m
dead = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/dead_letters/*.parquet')").fetchone()[0] if __import__("glob").glob(f"{lake}/dead_letters/*.parquet") else 0
print(f"DuckDB {duckdb.__version__} and Polars {pl.__version__} agree on {checked} symbol-days, symbol-buckets and run-symbols across 9 tables; {dead} dead letters")
