#!/usr/bin/env python3
"""FlowSense's simulated exchange against hftbacktest: one market maker, the same real L2 capture.

The strategy, on both sides: every 100 ms, quote `qty` at the best bid and at the best ask
(post-only limits), within a position of `max_position` either way; a quote whose price left the
touch is cancelled and re-placed once the cancel is confirmed. Both simulators: 1 ms order entry
and 1 ms response latency, a power queue model with n = 2, maker fee 2 bp, taker fee 8 bp.
hftbacktest runs its no-partial-fill exchange (its partial-fill exchange stops with error code
14 on this capture after 15 s), and FlowSense runs the same rules by default here
(`--queue-fills whole --queue-cancels net`); `--queue-fills partial` runs FlowSense's own
default fill rule, to see how far it moves from them. FlowSense runs it with `flowsense bench market-making` (the strategy loop in Rust
around `SimExchange`), hftbacktest with its Numba API on the capture converted by its own
converter.

Printed: fill counts and volumes, final positions and PnL, how often the two positions agree on
a 1 s grid, and the wall time of each side's simulation (data loading excluded on both sides:
FlowSense parses the capture before the clock starts, hftbacktest reads its converted npz).

Usage: scripts/compare_hftbacktest.py [--capture data/binance/usdm/btcusdt_20240808.gz]
Needs hftbacktest (the script installs it into a venv of the Python that runs it, under
~/.cache/flowsense/bench-venvs/, and re-runs itself there when it is missing).
"""

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_common import ensure, flowsense_binary  # noqa: E402


def run_hftbacktest(npz, interval, qty, max_pos, tick, lot, steps):
    import numpy as np
    from numba import njit
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest, GTX, LIMIT

    @njit
    def maker(hbt, interval, qty, max_pos, grid_t, grid_pos, fills):
        bid_id = 0
        ask_id = 0
        bid_cancelling = False
        ask_cancelling = False
        next_id = 1
        n = 0
        while True:
            rc = hbt.elapse(interval)
            if rc != 0:
                fills[6] = rc
                break
            hbt.clear_inactive_orders(0)
            depth = hbt.depth(0)
            pos = hbt.position(0)
            if n < grid_t.shape[0]:
                grid_t[n] = hbt.current_timestamp
                grid_pos[n] = pos
                n += 1
            orders = hbt.orders(0)
            bb = depth.best_bid
            ba = depth.best_ask
            if not (np.isfinite(bb) and np.isfinite(ba)) or bb >= ba:
                continue
            # Bid side: one working order; cancel once when it leaves the touch.
            if bid_id != 0 and orders.get(bid_id) is None:
                bid_id = 0
                bid_cancelling = False
            if bid_id != 0:
                o = orders.get(bid_id)
                if not bid_cancelling and o.cancellable and (
                        abs(o.price - bb) > 1e-9 or max_pos - pos < qty):
                    hbt.cancel(0, bid_id, False)
                    bid_cancelling = True
            elif max_pos - pos >= qty - 1e-12:
                bid_id = next_id
                next_id += 1
                hbt.submit_buy_order(0, bid_id, bb, qty, GTX, LIMIT, False)
            # Ask side.
            if ask_id != 0 and orders.get(ask_id) is None:
                ask_id = 0
                ask_cancelling = False
            if ask_id != 0:
                o = orders.get(ask_id)
                if not ask_cancelling and o.cancellable and (
                        abs(o.price - ba) > 1e-9 or max_pos + pos < qty):
                    hbt.cancel(0, ask_id, False)
                    ask_cancelling = True
            elif max_pos + pos >= qty - 1e-12:
                ask_id = next_id
                next_id += 1
                hbt.submit_sell_order(0, ask_id, ba, qty, GTX, LIMIT, False)
        sv = hbt.state_values(0)
        fills[0] = sv.num_trades
        fills[1] = sv.trading_volume
        fills[2] = sv.fee
        fills[3] = sv.balance
        fills[4] = sv.position
        fills[5] = (hbt.depth(0).best_bid + hbt.depth(0).best_ask) / 2.0
        return n

    asset = (
        BacktestAsset()
        .data([str(npz)])
        .linear_asset(1.0)
        .constant_order_latency(1_000_000, 1_000_000)
        .power_prob_queue_model(2.0)
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0002, 0.0008)
        .tick_size(tick)
        .lot_size(lot)
        .last_trades_capacity(0)
    )
    grid_t = np.zeros(steps, np.int64)
    grid_pos = np.zeros(steps, np.float64)
    out = np.zeros(7, np.float64)
    # Compile on a first run, then time a fresh one.
    hbt = HashMapMarketDepthBacktest([asset])
    maker(hbt, interval, qty, max_pos, grid_t, grid_pos, out)
    hbt.close()
    hbt = HashMapMarketDepthBacktest([asset])
    t = time.perf_counter()
    n = maker(hbt, interval, qty, max_pos, grid_t, grid_pos, out)
    secs = time.perf_counter() - t
    hbt.close()
    return {
        "fills": int(out[0]), "volume": out[1], "fees": out[2],
        "position": out[4], "pnl": out[3] + out[4] * out[5],
        "grid": list(zip(grid_t[:n].tolist(), grid_pos[:n].tolist())), "seconds": secs,
        "end": int(out[6]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capture", default=str(ROOT / "data/binance/usdm/btcusdt_20240808.gz"))
    ap.add_argument("--qty", type=float, default=0.01)
    ap.add_argument("--max-position", type=float, default=0.05)
    ap.add_argument("--flowsense")
    ap.add_argument("--queue-fills", choices=["partial", "whole"], default="whole",
                    help="FlowSense's fill rule: whole (hftbacktest's no-partial rule, the default "
                         "here, so both sides run one rule) or partial (FlowSense's default)")
    ap.add_argument("--queue-cancels", choices=["net", "gross"], default="net",
                    help="FlowSense's queue model: net (hftbacktest's power model's form and "
                         "FlowSense's default) or gross (trades counted again as cancels)")
    args = ap.parse_args()
    ensure("hftbacktest", "hftbacktest")
    from hftbacktest.data.utils import binancefutures

    fs = flowsense_binary(args.flowsense)
    work = Path(tempfile.mkdtemp(prefix="fs-vs-hbt-"))
    interval = 100_000_000

    # FlowSense.
    r = subprocess.run([fs, "bench", "market-making", args.capture, "--qty", str(args.qty),
                        "--max-position", str(args.max_position), "--interval", "100ms",
                        "--order-latency", "1ms", "--response-latency", "1ms",
                        "--queue-power", "2", "--maker-fee", "0.0002", "--taker-fee", "0.0008",
                        "--lot-size", "0.001", "--queue-fills", args.queue_fills,
                        "--queue-cancels", args.queue_cancels],
                       check=True, capture_output=True, text=True)
    summary = r.stderr.strip().splitlines()[-1]
    ours = list(csv.DictReader(io.StringIO(r.stdout)))
    fs_secs = float(summary.split(" events in ")[1].split(" s")[0])
    pos, path = 0.0, []
    for f in ours:
        q = float(f["qty"])
        pos += q if f["side"] == "buy" else -q
        path.append((int(f["ts"]), pos))

    # hftbacktest, on its own conversion of the same file.
    npz = work / "capture.npz"
    binancefutures.convert(args.capture, output_filename=str(npz), combined_stream=True)
    hbt = run_hftbacktest(npz, interval, args.qty, args.max_position, 0.1, 0.001, 1_000_000)
    if hbt["end"] != 1:
        print(f"warning: hftbacktest stopped with code {hbt['end']} before the end of the data")

    def position_at(path, t):
        p = 0.0
        for ts, v in path:
            if ts > t:
                break
            p = v
        return p

    grid = [(t, p) for t, p in hbt["grid"]]
    secs = [g for i, g in enumerate(grid) if i % 10 == 0]
    diffs = [abs(position_at(path, t) - p) for t, p in secs]
    agree = sum(1 for d in diffs if d < args.qty / 2)
    mean_diff = sum(diffs) / max(1, len(diffs)) / args.qty
    ours_vol = sum(float(f["qty"]) for f in ours)
    ours_buy = sum(float(f["qty"]) for f in ours if f["side"] == "buy")
    ours_pnl = summary.split("PnL at the last mid ")[1]
    print(f"capture: {args.capture}")
    print(f"FlowSense's rules: queue_fills = {args.queue_fills}, queue_cancels = {args.queue_cancels}")
    print(f"{'':28} {'FlowSense':>14} {'hftbacktest':>14}")
    print(f"{'fills':28} {len(ours):>14} {hbt['fills']:>14}")
    print(f"{'volume traded':28} {ours_vol:>14.4f} {hbt['volume']:>14.4f}")
    print(f"{'  of which bought':28} {ours_buy:>14.4f} {(hbt['volume'] + hbt['position']) / 2:>14.4f}")
    print(f"{'final position':28} {pos:>14.4f} {hbt['position']:>14.4f}")
    print(f"{'PnL at the last mid':28} {float(ours_pnl):>14.4f} {hbt['pnl']:>14.4f}")
    print(f"{'simulation seconds':28} {fs_secs:>14.4f} {hbt['seconds']:>14.4f}")
    print(f"positions within half a quote on {agree} of {len(secs)} one-second marks "
          f"({100.0 * agree / max(1, len(secs)):.1f} %); mean gap {mean_diff:.2f} quotes")
    print(f"speed ratio (hftbacktest / FlowSense): {hbt['seconds'] / fs_secs:.2f}x")


if __name__ == "__main__":
    main()
