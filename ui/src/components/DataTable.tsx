//! A result grid: click a header to sort (again to reverse), an optional filter over every
//! cell, and a CSV download of what is shown.

import { useMemo, useState } from 'preact/hooks';
import { cell } from '../lib/format';
import type { Row, Rows } from '../api/client';

interface Props {
  columns: string[];
  rows: Row[];
  /** Shows a filter box. */
  filter?: boolean;
  /** The CSV file's name; no download button without it. */
  csvName?: string;
  /** Most rows drawn (the rest are counted). */
  limit?: number;
  /** Cell renderers by column. */
  render?: Record<string, (v: unknown, row: Row) => preact.ComponentChildren>;
  /** Numbers to 8 significant digits, nanosecond times (`ts`, `opened`, ...) as UTC times. */
  pretty?: boolean;
  testId?: string;
}

const TIME_COLUMNS = new Set(['ts', 'opened', 'closed', 'ts_from', 'ts_to', 'data_from', 'data_to', 'local_ts']);

/** A cell as `pretty` shows it. */
export function prettyCell(col: string, v: unknown): string {
  if (typeof v !== 'number') return cell(v);
  if (TIME_COLUMNS.has(col) && v > 1e15) return new Date(v / 1e6).toISOString().replace('T', ' ').replace('Z', '');
  return Number.isInteger(v) ? String(v) : String(+v.toPrecision(8));
}

/** An API result's columns and rows, as the grid takes them: `<DataTable {...grid(r)} />`. */
export function grid(r: Rows): { columns: string[]; rows: Row[] } {
  return { columns: r.columns.map((c) => c.name), rows: r.rows as Row[] };
}

/** CSV of the columns and rows, quoted as RFC 4180 says. */
export function toCsv(columns: string[], rows: Row[]): string {
  const q = (v: unknown) => {
    const s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [columns.map(q).join(','), ...rows.map((r) => columns.map((c) => q(r[c])).join(','))].join('\n') + '\n';
}

/** Offers text as a file download. */
export function download(name: string, text: string, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function compare(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

export function DataTable({ columns, rows, filter, csvName, limit = 500, render, pretty, testId }: Props) {
  const [sort, setSort] = useState<{ col: string; desc: boolean } | undefined>(undefined);
  const [text, setText] = useState('');
  const shown = useMemo(() => {
    let out = rows;
    if (text) {
      const t = text.toLowerCase();
      out = out.filter((r) => columns.some((c) => cell(r[c]).toLowerCase().includes(t)));
    }
    if (sort) {
      out = [...out].sort((a, b) => compare(a[sort.col], b[sort.col]) * (sort.desc ? -1 : 1));
    }
    return out;
  }, [rows, text, sort, columns]);
  const onHeader = (col: string) =>
    setSort((s) => (s?.col === col ? { col, desc: !s.desc } : { col, desc: false }));
  return (
    <div class="grid" data-testid={testId}>
      {(filter || csvName) && (
        <div class="grid-bar">
          {filter && (
            <input
              type="search"
              placeholder="Filter rows"
              aria-label="Filter rows"
              value={text}
              onInput={(e) => setText((e.target as HTMLInputElement).value)}
            />
          )}
          <span class="muted" data-testid="row-count">
            {shown.length === rows.length ? `${rows.length} rows` : `${shown.length} of ${rows.length} rows`}
          </span>
          {csvName && (
            <button type="button" onClick={() => download(csvName, toCsv(columns, shown))}>
              Download CSV
            </button>
          )}
        </div>
      )}
      <div class="grid-scroll">
        <table>
          <thead>
            <tr>
              {columns.map((c) => (
                <th key={c} onClick={() => onHeader(c)} class="sortable" title="Sort">
                  {c}
                  {sort?.col === c ? (sort.desc ? ' ▼' : ' ▲') : ''}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {shown.slice(0, limit).map((r, i) => (
              <tr key={i}>
                {columns.map((c) => {
                  const v = r[c];
                  return (
                    <td key={c} class={typeof v === 'number' ? 'n' : undefined}>
                      {render?.[c] ? render[c](v, r) : pretty ? prettyCell(c, v) : cell(v)}
                    </td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
        {shown.length > limit && (
          <p class="muted">{shown.length - limit} more rows not drawn: filter, or download the CSV.</p>
        )}
      </div>
    </div>
  );
}
