//! Portfolio of a trading job: cards for equity, PnL, drawdown (against the alert and halt
//! lines), exposure and fees; the equity and drawdown over time; positions, orders, fills and
//! risk events, kept live from the stream.

import { useState } from 'preact/hooks';
import { api, ok, type Row } from '../api/client';
import { usePoll } from '../lib/hooks';
import { useJobRows } from '../lib/jobRows';
import { combine, latestBySymbol } from '../lib/portfolio';
import { money, num, pct } from '../lib/format';
import { Card, ErrorBox, StateBadge, Tabs } from '../components/bits';
import { DataTable } from '../components/DataTable';
import { EquityCharts } from '../components/Chart';

interface Risk {
  capital: number;
  drawdown_alert: number;
  drawdown_halt: number;
  portfolio?: { drawdown_alert: number; drawdown_halt: number } | null;
}

/** The portfolio's figures from its equity rows (each symbol's latest row). */
export function figures(equity: Row[], capital: number) {
  const latest = latestBySymbol(equity);
  let value = 0;
  let exposure = 0;
  let fees = 0;
  for (const r of latest.values()) {
    value += (r.equity as number) ?? 0;
    exposure += Math.abs(((r.position as number) ?? 0) * ((r.mid as number) ?? 0));
    fees += (r.fees as number) ?? 0;
  }
  const start = capital * latest.size;
  return { value, pnl: value - start, exposure, fees, start, symbols: latest.size };
}

const TABLES = ['positions', 'orders', 'fills', 'risk_events'] as const;

export function PortfolioPage({ id }: { id: string }) {
  const job = usePoll(async () => ok(await api.GET('/api/v1/jobs/{id}', { params: { path: { id } } })), [id], 2000);
  const spec = usePoll(
    async () => ok(await api.GET('/api/v1/jobs/{id}/spec', { params: { path: { id } } })) as { risk?: Risk },
    [id],
  );
  const live = useJobRows(job.data && job.data.kind !== 'features' ? id : undefined, ['equity', ...TABLES]);
  const [tab, setTab] = useState<string>('positions');
  const risk = spec.data?.risk;
  const capital = risk?.capital ?? 0;
  const equity = live.rows.equity ?? [];
  const f = figures(equity, capital);
  const series = combine(equity, capital * f.symbols);
  const dd = series.drawdown.length ? series.drawdown[series.drawdown.length - 1].value : 0;
  const maxDd = Math.max(0, ...series.drawdown.map((p) => p.value));
  const alert = risk?.portfolio?.drawdown_alert ?? risk?.drawdown_alert;
  const halt = risk?.portfolio?.drawdown_halt ?? risk?.drawdown_halt;
  const ddTone = halt !== undefined && dd >= halt ? 'neg' : alert !== undefined && dd >= alert ? 'warn' : undefined;
  return (
    <section>
      <p class="crumbs">
        <a href="#/jobs">Jobs</a> / <a href={`#/jobs/${encodeURIComponent(id)}`}>{id}</a> / portfolio
      </p>
      <h1>
        Portfolio {job.data && <>{job.data.name} <StateBadge state={job.data.state} /></>}
      </h1>
      <ErrorBox error={job.error ?? live.error} />
      {job.data?.kind === 'features' && <p class="muted">A feature job trades nothing: pick a trading job.</p>}
      <div class="cards" data-testid="portfolio-cards">
        <Card label="Equity" value={money(f.value)} sub={`${f.symbols} sleeves of ${money(capital)}`} testId="card-equity" />
        <Card label="PnL" value={money(f.pnl, true)} tone={f.pnl >= 0 ? 'pos' : 'neg'} testId="card-pnl" />
        <Card
          label="Drawdown"
          value={pct(dd, 2)}
          sub={`max ${pct(maxDd, 2)} · alert ${pct(alert, 1)} · halt ${pct(halt, 1)}`}
          tone={ddTone}
          testId="card-drawdown"
        />
        <Card label="Exposure" value={money(f.exposure)} sub="|position| × mid, summed" testId="card-exposure" />
        <Card label="Fees" value={money(f.fees)} testId="card-fees" />
        <Card label="Fills" value={num((live.rows.fills ?? []).length)} testId="card-fills" />
      </div>
      <EquityCharts
        equity={series.equity}
        drawdown={series.drawdown}
        alert={alert}
        halt={halt}
        testIds={['equity-chart', 'drawdown-chart']}
      />
      <Tabs names={[...TABLES]} current={tab} onPick={setTab} />
      <DataTable
        key={tab}
        columns={columnsOf(live.rows[tab] ?? [])}
        rows={[...(live.rows[tab] ?? [])].reverse()}
        filter
        pretty
        csvName={`${id}-${tab}.csv`}
        testId={`table-${tab}`}
      />
    </section>
  );
}

/** The columns of rows, in the order the first row has them. */
export function columnsOf(rows: Row[]): string[] {
  return rows.length ? Object.keys(rows[0]) : [];
}
