//! How numbers, times and durations are shown.

// Formatters are built once: `toLocaleString` builds one per call, which is most of the graph
// monitor's time per update at 100 operators (BENCHMARKS.md).
const formats = new Map<string, Intl.NumberFormat>();
function format(min: number, max: number): Intl.NumberFormat {
  const key = `${min}:${max}`;
  let f = formats.get(key);
  if (!f) {
    f = new Intl.NumberFormat('en-US', { minimumFractionDigits: min, maximumFractionDigits: max });
    formats.set(key, f);
  }
  return f;
}

/** A count or rate with thousands separators; fractional below 100. */
export function num(x: number | null | undefined, digits = 2): string {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  const a = Math.abs(x);
  if (a >= 100 || Number.isInteger(x)) return format(0, 0).format(Math.round(x));
  return format(0, digits).format(x);
}

/** A price: as many decimals as it needs, up to 8. */
export function price(x: number | null | undefined): string {
  if (x === null || x === undefined) return '–';
  return format(0, 8).format(x);
}

/** Money with two decimals and a sign when asked. */
export function money(x: number | null | undefined, signed = false): string {
  if (x === null || x === undefined) return '–';
  const s = format(2, 2).format(x);
  return signed && x > 0 ? `+${s}` : s;
}

/** A share as a percentage. */
export function pct(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined) return '–';
  return `${(x * 100).toFixed(digits)}%`;
}

/** Seconds as `1h 02m`, `3m 05s` or `4.2s`. */
export function duration(s: number | null | undefined): string {
  if (s === null || s === undefined) return '–';
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Nanoseconds since the epoch as a UTC time of day with milliseconds. */
export function nsTime(ns: number | null | undefined): string {
  if (ns === null || ns === undefined) return '–';
  return new Date(ns / 1e6).toISOString().slice(11, 23);
}

/** An RFC 3339 time as `2026-12-07 09:14:03`. */
export function when(rfc: string | null | undefined): string {
  if (!rfc) return '–';
  return rfc.replace('T', ' ').replace(/\.\d+/, '').replace(/Z|\+00:00$/, '');
}

/** Any cell of a result grid. */
export function cell(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(+v.toPrecision(12));
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
