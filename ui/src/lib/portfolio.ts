//! A portfolio from its sleeves: each symbol trades its own sleeve of `capital`, and the
//! portfolio's equity at a time is the sum of each sleeve's latest equity (as the report and
//! the portfolio risk monitor add them up).

import type { Row } from '../api/client';

export interface Point {
  /** Seconds since the epoch (the charts' time). */
  time: number;
  value: number;
}

/** Equity rows (`symbol`, `ts`, `equity`) as the portfolio's equity and drawdown (a share). */
export function combine(rows: Row[], capital?: number): { equity: Point[]; drawdown: Point[] } {
  const sorted = [...rows].sort((a, b) => (a.ts as number) - (b.ts as number));
  const last = new Map<string, number>();
  const equity: Point[] = [];
  const drawdown: Point[] = [];
  let peak = -Infinity;
  for (let i = 0; i < sorted.length; ) {
    const ts = sorted[i].ts as number;
    while (i < sorted.length && sorted[i].ts === ts) {
      const eq = sorted[i].equity;
      if (typeof eq === 'number') last.set(String(sorted[i].symbol), eq);
      i++;
    }
    let total = 0;
    for (const v of last.values()) total += v;
    peak = Math.max(peak, total, capital ?? -Infinity);
    const time = Math.floor(ts / 1e9);
    const dd = peak > 0 ? 1 - total / peak : 0;
    // One point per second: the charts need strictly rising times.
    if (equity.length > 0 && equity[equity.length - 1].time === time) {
      equity[equity.length - 1].value = total;
      drawdown[drawdown.length - 1].value = dd;
    } else {
      equity.push({ time, value: total });
      drawdown.push({ time, value: dd });
    }
  }
  return { equity, drawdown };
}

/** Each symbol's latest row (by `ts`). */
export function latestBySymbol(rows: Row[]): Map<string, Row> {
  const out = new Map<string, Row>();
  for (const r of rows) {
    const s = String(r.symbol);
    const cur = out.get(s);
    if (!cur || (cur.ts as number) <= (r.ts as number)) out.set(s, r);
  }
  return out;
}

/** A row's identity for merging a snapshot with streamed rows: its values, keys sorted. */
export function rowKey(r: Row): string {
  return JSON.stringify(Object.keys(r).sort().map((k) => [k, r[k]]));
}
