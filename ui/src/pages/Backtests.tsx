//! Backtests: the runs of the lake's `runs` table; per run its equity and drawdown, its metrics
//! (portfolio, per symbol, per regime, per walk-forward fold), its fills, and its report as
//! HTML or PDF.

import { quote, sql } from '../api/client';
import { usePoll } from '../lib/hooks';
import { combine } from '../lib/portfolio';
import { duration, num, when } from '../lib/format';
import { ErrorBox } from '../components/bits';
import { DataTable, grid } from '../components/DataTable';
import { EquityCharts } from '../components/Chart';

export function BacktestsPage() {
  const runs = usePoll(
    () =>
      sql(
        "SELECT run_id, job, mode, started, symbols, events, seconds, state FROM runs WHERE mode <> 'features' ORDER BY started DESC",
      ),
    [],
    5000,
  );
  return (
    <section>
      <h1>Backtests</h1>
      <p class="muted">Every trading run in the lake's runs table, latest first.</p>
      <ErrorBox error={runs.error} />
      {runs.data && (
        <DataTable
          {...grid(runs.data)}
          filter
          testId="runs-table"
          render={{
            run_id: (v) => <a href={`#/backtests/${encodeURIComponent(String(v))}`}>{String(v)}</a>,
            started: (v) => when(v as string),
            seconds: (v) => duration(v as number),
            events: (v) => num(v as number),
          }}
        />
      )}
    </section>
  );
}

const METRIC_COLUMNS =
  'scope, regime, fold, periods, end_equity, net_pnl, fees, total_return, sharpe, sortino, max_drawdown, round_trips, hit_rate, orders, fill_ratio, mean_queue_wait_ms';

export function BacktestPage({ run }: { run: string }) {
  const id = quote(run);
  const meta = usePoll(() => sql(`SELECT * FROM runs WHERE run_id = ${id}`), [run]);
  const equity = usePoll(() => sql(`SELECT symbol, ts, equity FROM equity WHERE run_id = ${id} ORDER BY ts`), [run]);
  const metrics = usePoll(() => sql(`SELECT ${METRIC_COLUMNS} FROM metrics WHERE run_id = ${id} ORDER BY scope <> 'portfolio', scope, regime, fold`), [run]);
  const fills = usePoll(() => sql(`SELECT * FROM fills WHERE run_id = ${id} ORDER BY ts LIMIT 5000`), [run]);
  const capital = usePoll(
    () => sql(`SELECT capital FROM metrics WHERE run_id = ${id} AND scope <> 'portfolio' LIMIT 1`),
    [run],
  );
  const cap = (capital.data?.rows[0] as { capital?: number } | undefined)?.capital;
  const symbols = new Set((equity.data?.rows ?? []).map((r) => (r as { symbol: string }).symbol)).size;
  const series = combine((equity.data?.rows ?? []) as Record<string, unknown>[], cap ? cap * symbols : undefined);
  const m = (metrics.data?.rows ?? []) as Record<string, unknown>[];
  const cols = metrics.data?.columns.map((c) => c.name) ?? [];
  const overall = m.filter((r) => r.regime === null && r.fold === null);
  const regimes = m.filter((r) => r.regime !== null);
  const folds = m.filter((r) => r.fold !== null);
  const r0 = meta.data?.rows[0] as Record<string, unknown> | undefined;
  const href = `/api/v1/runs/${encodeURIComponent(run)}/report`;
  return (
    <section>
      <p class="crumbs">
        <a href="#/backtests">Backtests</a> / {run}
      </p>
      <h1>{run}</h1>
      <ErrorBox error={meta.error ?? equity.error ?? metrics.error} />
      {meta.data && !r0 && <ErrorBox error={`No run ${run} in the lake's runs table.`} />}
      {r0 && (
        <p class="muted">
          {String(r0.job)} · {String(r0.mode)} · started {when(r0.started as string)} · {num(r0.events as number)} events in{' '}
          {duration(r0.seconds as number)} · {String(r0.symbols)}
        </p>
      )}
      <div class="row">
        <a class="button" href={href} target="_blank" rel="noopener" data-testid="report-html">
          Open report
        </a>
        <a class="button" href={`${href}?format=pdf`} download={`${run}.pdf`} data-testid="report-pdf">
          Download PDF
        </a>
      </div>
      <EquityCharts equity={series.equity} drawdown={series.drawdown} testIds={['bt-equity', 'bt-drawdown']} />
      <h2>Metrics</h2>
      <DataTable columns={cols} rows={overall} pretty testId="metrics-overall" />
      {regimes.length > 0 && (
        <>
          <h3>Per regime</h3>
          <DataTable columns={cols} rows={regimes} pretty testId="metrics-regime" />
        </>
      )}
      {folds.length > 0 && (
        <>
          <h3>Per walk-forward fold</h3>
          <DataTable columns={cols} rows={folds} pretty testId="metrics-fold" />
        </>
      )}
      <h2>Fills</h2>
      {fills.data && (
        <DataTable
          {...grid(fills.data)}
          filter
          pretty
          csvName={`${run}-fills.csv`}
          testId="bt-fills"
        />
      )}
    </section>
  );
}
