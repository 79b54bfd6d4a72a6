//! SQL console: an editor with history (kept in this browser), the lake's tables and their
//! schemas beside it, results in a grid (sort, filter, CSV), and the guard's refusals and SQL
//! errors as the API gives them.

import { useState } from 'preact/hooks';
import { api, ok, sql, sqlCsv, type Rows } from '../api/client';
import { usePoll } from '../lib/hooks';
import { ErrorBox } from '../components/bits';
import { DataTable, download, grid } from '../components/DataTable';

const HISTORY_KEY = 'flowsense.sql.history';

function loadHistory(): string[] {
  try {
    return JSON.parse(localStorage.getItem(HISTORY_KEY) ?? '[]') as string[];
  } catch {
    return [];
  }
}

export function SqlPage() {
  const tables = usePoll(async () => ok(await api.GET('/api/v1/tables')), []);
  const [text, setText] = useState(
    () => loadHistory()[0] ?? 'SELECT symbol, count(*) AS trades, sum(size) AS volume FROM trades GROUP BY symbol ORDER BY symbol',
  );
  const [history, setHistory] = useState(loadHistory);
  const [result, setResult] = useState<Rows>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [ms, setMs] = useState<number>();
  const [open, setOpen] = useState<string>();
  const run = async () => {
    const q = text.trim();
    if (!q) return;
    setBusy(true);
    setError(undefined);
    const t0 = performance.now();
    try {
      setResult(await sql(q));
      setMs(performance.now() - t0);
      const h = [q, ...history.filter((x) => x !== q)].slice(0, 50);
      setHistory(h);
      localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
    } catch (e) {
      setResult(undefined);
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const csv = async () => {
    try {
      download('query.csv', await sqlCsv(text));
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <section class="sql-layout">
      <aside class="sql-side">
        <h2>Tables</h2>
        <ErrorBox error={tables.error} />
        <ul class="table-list" data-testid="table-list">
          {tables.data?.map((t) => (
            <li key={t.name}>
              <button type="button" class="link" onClick={() => setOpen(open === t.name ? undefined : t.name)}>
                {t.name}
              </button>
              {open === t.name && (
                <ul class="columns">
                  {t.columns.map((c) => (
                    <li key={c.name}>
                      <code>{c.name}</code> <span class="muted">{c.type}</span>
                      {t.partition_columns.includes(c.name) && <span class="muted"> (partition)</span>}
                    </li>
                  ))}
                </ul>
              )}
            </li>
          ))}
        </ul>
        <h2>History</h2>
        <ul class="history" data-testid="sql-history">
          {history.slice(0, 15).map((h) => (
            <li key={h}>
              <button type="button" class="link" title={h} onClick={() => setText(h)}>
                {h.length > 80 ? `${h.slice(0, 80)}…` : h}
              </button>
            </li>
          ))}
        </ul>
      </aside>
      <div class="sql-main">
        <h1>SQL</h1>
        <textarea
          class="sql-editor"
          data-testid="sql-editor"
          aria-label="SQL statement"
          spellcheck={false}
          value={text}
          rows={6}
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
              e.preventDefault();
              void run();
            }
          }}
        />
        <div class="row">
          <button type="button" class="primary" onClick={run} disabled={busy} data-testid="sql-run">
            {busy ? 'Running…' : 'Run'}
          </button>
          <span class="muted">Ctrl+Enter runs. Read-only: the lake is not changed from here.</span>
          {result && (
            <button type="button" onClick={csv}>
              Download CSV
            </button>
          )}
        </div>
        {error && (
          <div class="error" role="alert" data-testid="sql-error">
            {error}
          </div>
        )}
        {result && (
          <>
            <p class="muted" data-testid="sql-summary">
              {result.rows.length} rows · {result.columns.length} columns
              {ms !== undefined && ` · ${ms.toFixed(0)} ms`}
            </p>
            <DataTable
              {...grid(result)}
              filter
              testId="sql-result"
            />
          </>
        )}
      </div>
    </section>
  );
}
