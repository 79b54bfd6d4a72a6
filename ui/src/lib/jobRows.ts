//! A job's output tables kept live: the latest rows from the lake (`/jobs/{id}/output`) merged
//! with the rows streamed as they are written, one socket for every table.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ok, type Row, type Topic } from '../api/client';
import { subscribe } from '../api/stream';
import { rowKey } from './portfolio';

/** Rows kept per table. */
const KEEP = 20000;

/**
 * One table's rows from two overlapping sources, the lake's latest rows and the stream: a row
 * is kept as many times as the source that has it more often has it (two fills can be equal in
 * every column), so the overlap counts once and nothing else is lost.
 */
export class Merge {
  rows: Row[] = [];
  private seen = { lake: new Map<string, number>(), stream: new Map<string, number>() };

  add(rows: Row[], from: 'lake' | 'stream') {
    const mine = this.seen[from];
    const theirs = this.seen[from === 'lake' ? 'stream' : 'lake'];
    for (const r of rows) {
      const k = rowKey(r);
      const n = (mine.get(k) ?? 0) + 1;
      mine.set(k, n);
      if (n > (theirs.get(k) ?? 0)) this.rows.push(r);
    }
    this.rows.sort((a, b) => (a.ts as number) - (b.ts as number));
    if (this.rows.length > KEEP) this.rows.splice(0, this.rows.length - KEEP);
  }
}

export type RowTopic = Extract<Topic, 'features' | 'orders' | 'fills' | 'equity' | 'positions' | 'risk_events'>;

/**
 * The rows of `tables` for job `id`, oldest first, and how many times they changed. The stream
 * is opened before the snapshot is read, so no row falls between them; rows in both are kept once.
 */
export function useJobRows(id: string | undefined, tables: RowTopic[]): { rows: Record<string, Row[]>; version: number; error?: string } {
  const store = useRef<Record<string, Merge>>({});
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<string>();
  const key = tables.join(',');
  useEffect(() => {
    if (!id || tables.length === 0) return;
    store.current = Object.fromEntries(tables.map((t) => [t, new Merge()]));
    let dirty = false;
    const add = (table: string, rows: Row[], from: 'lake' | 'stream') => {
      const s = store.current[table];
      if (!s) return;
      s.add(rows, from);
      dirty = true;
    };
    const sub = subscribe(id, [...tables, 'job'], (m) => {
      if (m.topic !== 'job' && Array.isArray(m.data)) add(m.topic, m.data as Row[], 'stream');
    });
    for (const t of tables) {
      api
        .GET('/api/v1/jobs/{id}/output', { params: { path: { id }, query: { table: t, limit: '10000' } } })
        .then(ok)
        .then((r) => add(t, r.rows as Row[], 'lake'), (e: Error) => setError(e.message));
    }
    // Redraw at most four times a second, however fast rows come.
    const timer = setInterval(() => {
      if (dirty) {
        dirty = false;
        setVersion((v) => v + 1);
      }
    }, 250);
    return () => {
      sub.close();
      clearInterval(timer);
    };
  }, [id, key]);
  const rows = Object.fromEntries(tables.map((t) => [t, store.current[t]?.rows ?? []]));
  return { rows, version, error };
}
