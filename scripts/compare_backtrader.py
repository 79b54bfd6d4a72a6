#!/usr/bin/env python3
"""FlowSense against Backtrader on the same bar strategy and the same bars, in one go.

1. `flowsense synth` makes a seeded synthetic market; 1-minute OHLCV bars are built from its
   trades with `flowsense sql`, written as a vendor-style CSV, and ingested back with
   `flowsense ingest --format bars` (so both sides read the same bars).
2. The strategy, on both sides: a 10/30-bar moving-average cross, always in the market with one
   unit (long when the fast average is above the slow one, short when below, a gap within 1e-6
   counting as a tie), market orders that fill at the next bar's open, a 0.1 % fee on
   notional, no slippage.
3. The trade lists (time, side, price, size of every execution) must match exactly; the script
   prints the wall time of each side's backtest and the ratio.

Usage: scripts/compare_backtrader.py [--days 250] [--events-per-day 20000] [--flowsense PATH]
Needs: `pip install backtrader` (the script installs it into a venv of the Python that runs it,
under ~/.cache/flowsense/bench-venvs/, and re-runs itself there when it is missing). Backtrader's
time depends on that Python's build: the script prints which one ran.
"""

import argparse
import csv
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_common import ensure, flowsense_binary, python_build  # noqa: E402


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


JOB = """
name = "ma-cross"
[source.lake]
[features]
buckets = ["1m"]
[strategy]
bucket = "1m"
# Long above, short below; a gap within 1e-6 is a tie (no change), so the two sides' rounding
# of the averages cannot decide differently.
signal = "if(mean(close, 10) - mean(close, 30) > 0.000001, 1, if(mean(close, 10) - mean(close, 30) < -0.000001, -1, 0))"
entry = 1
order = "market"
[strategy.sizing]
method = "fixed"
size = 1
[risk]
capital = 1000000000
drawdown_alert = 0.5
drawdown_halt = 0.9
[execution]
order_latency = "1ms"
response_latency = "1ms"
maker_fee = 0.001
taker_fee = 0.001
slippage_bps = 0
"""


def backtrader_trades(bars_csv):
    import backtrader as bt

    class MaCross(bt.Strategy):
        def __init__(self):
            self.fast = bt.indicators.SMA(self.data.close, period=10)
            self.slow = bt.indicators.SMA(self.data.close, period=30)
            self.fills = []

        def next(self):
            gap = self.fast[0] - self.slow[0]
            if gap > 1e-6:
                self.order_target_size(target=1)
            elif gap < -1e-6:
                self.order_target_size(target=-1)

        def notify_order(self, order):
            if order.status == order.Completed:
                when = bt.num2date(order.executed.dt).replace(tzinfo=dt.timezone.utc)
                side = "buy" if order.isbuy() else "sell"
                self.fills.append((when, side, order.executed.price, abs(order.executed.size)))

    cerebro = bt.Cerebro(stdstats=False)
    data = bt.feeds.GenericCSVData(
        dataname=str(bars_csv),
        dtformat="%Y-%m-%d %H:%M:%S",
        timeframe=bt.TimeFrame.Minutes,
        compression=1,
        datetime=0, open=1, high=2, low=3, close=4, volume=5, openinterest=-1,
        headers=True,
    )
    cerebro.adddata(data)
    cerebro.addstrategy(MaCross)
    cerebro.broker.setcash(1e12)
    cerebro.broker.setcommission(commission=0.001)
    t = time.perf_counter()
    strat = cerebro.run()[0]
    return strat.fills, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=250)
    ap.add_argument("--events-per-day", type=int, default=20000)
    ap.add_argument("--flowsense")
    args = ap.parse_args()
    ensure("backtrader", "backtrader")
    fs = flowsense_binary(args.flowsense)
    work = Path(tempfile.mkdtemp(prefix="fs-vs-bt-"))
    src, lake = work / "src", work / "lake"

    # 1. Trades -> 1-minute bars -> CSV -> the bars table.
    run([fs, "synth", "--lake", str(src), "--symbols", "1", "--days", str(args.days),
         "--events-per-day", str(args.events_per_day), "--seed", "11", "-q"])
    raw = run([fs, "sql", "--lake", str(src), "--format", "csv",
               "SELECT CAST(ts / 60000000000 AS BIGINT) * 60 AS t, "
               "first_value(price ORDER BY ts) AS open, max(price) AS high, min(price) AS low, "
               "last_value(price ORDER BY ts) AS close, sum(size) AS volume "
               "FROM trades GROUP BY 1 ORDER BY 1"]).stdout
    rows = list(csv.DictReader(raw.splitlines()))
    bars_fs, bars_bt = work / "SYN000-1m.csv", work / "bt-bars.csv"
    with open(bars_fs, "w") as f, open(bars_bt, "w") as g:
        f.write("timestamp,open,high,low,close,volume\n")
        g.write("datetime,open,high,low,close,volume\n")
        for r in rows:
            t = int(r["t"])
            stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            vals = ",".join(r[k] for k in ("open", "high", "low", "close", "volume"))
            f.write(f"{t},{vals}\n")
            g.write(f"{stamp},{vals}\n")
    run([fs, "ingest", "--lake", str(lake), "--format", "bars", "--interval", "1m", "-q",
         str(bars_fs)])
    job = work / "ma-cross.toml"
    job.write_text(JOB)
    print(f"{len(rows)} one-minute bars from {args.days} synthetic days ({work})")

    # 2. FlowSense: the whole `flowsense backtest` process, lake read and writes included.
    times, inner = [], []
    for _ in range(3):
        t = time.perf_counter()
        r = run([fs, "backtest", str(job), "--lake", str(lake), "--run-id", "cmp"])
        times.append(time.perf_counter() - t)
        # "run cmp: N events in X s (...)": the graph's own time, lake read included.
        head = next(line for line in r.stderr.splitlines() if line.startswith("run cmp:"))
        inner.append(float(head.split(" in ")[1].split(" s")[0]))
    fs_time, fs_inner = sorted(times)[1], max(sorted(inner)[1], 1e-3)
    out = run([fs, "sql", "--lake", str(lake), "--format", "csv",
               "SELECT ts, side, price, size FROM fills WHERE run_id = 'cmp' ORDER BY ts"]).stdout
    ours = []
    for r in csv.DictReader(out.splitlines()):
        when = dt.datetime.fromtimestamp(int(r["ts"]) // 60_000_000_000 * 60, dt.timezone.utc)
        ours.append((when, r["side"], float(r["price"]), float(r["size"])))

    # 3. Backtrader, same bars.
    theirs, bt_time = backtrader_trades(bars_bt)

    norm = lambda fills: [(w.strftime("%Y-%m-%d %H:%M"), s, round(p, 6), round(q, 6))
                          for w, s, p, q in fills]
    a, b = norm(ours), norm(theirs)
    same = a == b
    print(f"executions: FlowSense {len(a)}, Backtrader {len(b)}; identical: {same}")
    if not same:
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"  first difference at #{i}: FlowSense {x} vs Backtrader {y}")
                break
        else:
            print(f"  one list is a prefix of the other ({len(a)} vs {len(b)})")
    print(f"FlowSense `flowsense backtest` process, median of 3: {fs_time:.3f} s "
          f"(of which the run itself, lake read included: {fs_inner:.3f} s)")
    print(f"Backtrader cerebro.run() (CSV read included):       {bt_time:.3f} s "
          f"on {python_build()}")
    print(f"speed ratio, whole process:  {bt_time / fs_time:.1f}x "
          f"({len(rows) / fs_time:,.0f} vs {len(rows) / bt_time:,.0f} bars/s)")
    print(f"speed ratio, run against run: {bt_time / fs_inner:.1f}x")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
