//! One job: its figures, its stop buttons, its errors and its output tables.

import { useState } from 'preact/hooks';
import { api, ok } from '../api/client';
import { usePoll } from '../lib/hooks';
import { duration, num, when } from '../lib/format';
import { Card, ErrorBox, StateBadge, Tabs } from '../components/bits';
import { DataTable, grid } from '../components/DataTable';
import { JobLinks, StopButtons } from './Jobs';

const TRADING_TABLES = ['orders', 'fills', 'equity', 'positions', 'risk_events'] as const;

export function JobPage({ id }: { id: string }) {
  const job = usePoll(async () => ok(await api.GET('/api/v1/jobs/{id}', { params: { path: { id } } })), [id], 1000);
  const errors = usePoll(
    async () => ok(await api.GET('/api/v1/jobs/{id}/errors', { params: { path: { id } } })),
    [id],
    2000,
  );
  const j = job.data;
  const tables: string[] = j?.kind === 'features' ? ['features'] : [...TRADING_TABLES];
  const [table, setTable] = useState<string | undefined>(undefined);
  const current = table && tables.includes(table) ? table : tables[0];
  const output = usePoll(
    async () =>
      j
        ? ok(
            await api.GET('/api/v1/jobs/{id}/output', {
              params: { path: { id }, query: { table: current, limit: '200' } },
            }),
          )
        : undefined,
    [id, current, j?.kind, j?.state],
    j?.state === 'running' ? 3000 : undefined,
  );
  return (
    <section>
      <p class="crumbs">
        <a href="#/jobs">Jobs</a> / {id}
      </p>
      <ErrorBox error={job.error} />
      {j && (
        <>
          <h1>
            {j.name} <StateBadge state={j.state} />
          </h1>
          <div class="row">
            <JobLinks job={j} />
            <StopButtons job={j} onDone={job.reload} />
          </div>
          <div class="cards">
            <Card label="Kind" value={j.kind} />
            <Card label="Submitted (UTC)" value={when(j.submitted)} />
            <Card label="Duration" value={duration(j.seconds)} />
            <Card label="Events" value={num(j.events)} sub={`${num(j.events_per_s)}/s`} testId="job-events" />
            <Card label="Rows written" value={num(j.rows)} />
            <Card label="Workers" value={j.workers} />
          </div>
          {j.error && <ErrorBox error={j.error} />}
          {j.stop && <p class="muted">Stopped: {j.stop}.</p>}
        </>
      )}
      <h2>Errors</h2>
      {errors.data && errors.data.length === 0 && <p class="muted">None.</p>}
      {errors.data && errors.data.length > 0 && (
        <ul class="errors" data-testid="job-errors">
          {errors.data.map((e, i) => (
            <li key={i}>
              {e.worker !== null && e.worker !== undefined && <span class="muted">worker {e.worker}: </span>}
              {e.message}
            </li>
          ))}
        </ul>
      )}
      <h2>Output</h2>
      <Tabs names={tables} current={current} onPick={setTable} />
      <ErrorBox error={output.error} />
      {output.data && (
        <DataTable
          {...grid(output.data)}
          filter
          pretty
          csvName={`${id}-${current}.csv`}
          testId="output-table"
        />
      )}
    </section>
  );
}
