#!/usr/bin/env python3
"""Writes data/bars/: the real BTCUSDT spot trades of the bundled Binance captures
(data/binance/spot/btcusdt_20240808.gz and data/binance-0809/spot/btcusdt_20240809.gz) aggregated into 1-minute OHLCV bars, then written in the
layouts data vendors ship (see data/bars/SOURCES.md). Run from the repository root; the output
is deterministic."""
import gzip, json, datetime, pathlib

SRC = [pathlib.Path(f"data/binance/spot/btcusdt_20240808.gz"), pathlib.Path("data/binance-0809/spot/btcusdt_20240809.gz")]
OUT = pathlib.Path("data/bars")

rows = []
for src in SRC:
    bars = {}  # minute (ms) -> [open, high, low, close, volume, trades, notional]
    with gzip.open(src, "rt") as f:
        for line in f:
            _, js = line.split(" ", 1)
            msg = json.loads(js)
            if not msg.get("stream", "").endswith("@trade"):
                continue
            d = msg["data"]
            t, p, q = d["T"], d["p"], d["q"]
            m = t - t % 60000
            b = bars.get(m)
            if b is None:
                bars[m] = [p, p, p, p, float(q), 1, float(p) * float(q)]
            else:
                b[1] = max(b[1], p, key=float)
                b[2] = min(b[2], p, key=float)
                b[3] = p
                b[4] += float(q)
                b[5] += 1
                b[6] += float(p) * float(q)
    # Each capture starts and ends inside a minute: those partial bars are dropped.
    full = sorted(bars.items())[1:-1]
    rows += [(m, b[:6] + [b[6] / b[4]]) for m, b in full]

def utc(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)

def vol(v):
    return f"{v:.5f}"

OUT.mkdir(parents=True, exist_ok=True)
files = {}
# Yahoo Finance (yfinance download of 1m bars): Datetime with offset, Adj Close, whole-number volume.
files["yahoo_BTCUSDT_1m.csv"] = ["Datetime,Open,High,Low,Close,Adj Close,Volume"] + [
    f"{utc(m).strftime('%Y-%m-%d %H:%M:%S+00:00')},{o},{h},{l},{c},{c},{vol(v)}"
    for m, (o, h, l, c, v, n, vw) in rows
]
# Alpha Vantage's intraday JSON turned into CSV: numbered keys, newest bar first.
files["alphavantage_BTCUSDT_1min.csv"] = ["date,1. open,2. high,3. low,4. close,5. volume"] + [
    f"{utc(m).strftime('%Y-%m-%d %H:%M:%S')},{o},{h},{l},{c},{vol(v)}"
    for m, (o, h, l, c, v, n, vw) in reversed(rows)
]
# Polygon aggregates (results array as CSV): t in epoch ms, vw and n.
files["polygon_BTCUSDT_1m.csv"] = ["v,vw,o,c,h,l,t,n"] + [
    f"{vol(v)},{vw:.4f},{o},{c},{h},{l},{m},{n}" for m, (o, h, l, c, v, n, vw) in rows
]
# Dukascopy's export: "Gmt time" as DD.MM.YYYY HH:MM:SS.fff.
files["dukascopy_BTCUSDT_1m.csv"] = ["Gmt time,Open,High,Low,Close,Volume"] + [
    f"{utc(m).strftime('%d.%m.%Y %H:%M:%S')}.000,{o},{h},{l},{c},{vol(v)}"
    for m, (o, h, l, c, v, n, vw) in rows
]
# Stooq / MetaTrader export: <DATE> YYYYMMDD and <TIME> HHMMSS apart, the ticker in a column.
files["stooq_BTCUSDT_1m.csv"] = ["<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>"] + [
    f"BTCUSDT,1,{utc(m).strftime('%Y%m%d')},{utc(m).strftime('%H%M%S')},{o},{h},{l},{c},{vol(v)},0"
    for m, (o, h, l, c, v, n, vw) in rows
]
# A header no vendor convention covers (German column names): needs --columns.
files["custom_BTCUSDT_1m.csv"] = ["Zeit,Eroeffnung,Hoch,Tief,Schluss,Umsatz"] + [
    f"{utc(m).strftime('%Y-%m-%dT%H:%M:%SZ')},{o},{h},{l},{c},{vol(v)}"
    for m, (o, h, l, c, v, n, vw) in rows
]
for name, lines in files.items():
    (OUT / name).write_text("\n".join(lines) + "\n")
print(f"{len(rows)} bars from {len(SRC)} captures into {len(files)} files under {OUT}/")
