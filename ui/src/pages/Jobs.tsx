//! Jobs: every job with its state, start, duration and rates; submit a TOML spec (pasted or
//! uploaded); stop a running job gracefully or at once.

import { useState } from 'preact/hooks';
import { api, ok, submitToml, type JobView } from '../api/client';
import { usePoll } from '../lib/hooks';
import { duration, num, when } from '../lib/format';
import { ErrorBox, StateBadge } from '../components/bits';
import { TomlEditor } from '../components/TomlEditor';

const EXAMPLE = `name = "my-features"

[source.synthetic]
symbols = 2
events_per_day = 20000

[replay]
speed = 60.0

[features]
buckets = ["1s"]
`;

/** Stops a job (`graceful` drains and commits; `immediate` discards the output). */
export async function stopJob(id: string, mode: 'graceful' | 'immediate') {
  ok(await api.POST('/api/v1/jobs/{id}/stop', { params: { path: { id }, query: { mode } } }));
}

export function StopButtons({ job, onDone }: { job: JobView; onDone?: () => void }) {
  const [error, setError] = useState<string>();
  if (job.state !== 'running' && job.state !== 'submitted') return null;
  const stop = (mode: 'graceful' | 'immediate') =>
    stopJob(job.id, mode).then(onDone, (e: Error) => setError(e.message));
  return (
    <span class="stop-buttons">
      <button type="button" onClick={() => stop('graceful')} title="The source stops, in-flight data drains, sinks commit">
        Stop
      </button>
      <button type="button" class="danger" onClick={() => stop('immediate')} title="Stops at once; the output is discarded">
        Stop now
      </button>
      {error && <span class="error-inline">{error}</span>}
    </span>
  );
}

/** Links to a job's views. */
export function JobLinks({ job }: { job: JobView }) {
  const id = encodeURIComponent(job.id);
  return (
    <span class="links">
      <a href={`#/graph/${id}`}>graph</a>
      {job.paced && <a href={`#/market/${id}`}>market</a>}
      {job.kind !== 'features' && <a href={`#/portfolio/${id}`}>portfolio</a>}
    </span>
  );
}

export function JobsPage() {
  const jobs = usePoll(async () => ok(await api.GET('/api/v1/jobs')), [], 1000);
  const [spec, setSpec] = useState(EXAMPLE);
  const [error, setError] = useState<string>();
  const [submitted, setSubmitted] = useState<string>();
  const submit = async () => {
    setError(undefined);
    setSubmitted(undefined);
    try {
      const id = await submitToml(spec);
      setSubmitted(id);
      jobs.reload();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  const upload = async (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    if (f) setSpec(await f.text());
  };
  // Newest first, as the API lists them.
  const list = jobs.data ?? [];
  return (
    <section>
      <h1>Jobs</h1>
      <ErrorBox error={jobs.error} />
      <div class="grid-scroll">
        <table data-testid="jobs-table">
          <thead>
            <tr>
              <th>Job</th>
              <th>Name</th>
              <th>Kind</th>
              <th>State</th>
              <th>Submitted (UTC)</th>
              <th>Duration</th>
              <th class="n">Events</th>
              <th class="n">Events/s</th>
              <th class="n">Rows</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.map((j) => (
              <tr key={j.id} data-job={j.id}>
                <td>
                  <a href={`#/jobs/${encodeURIComponent(j.id)}`}>{j.id}</a>
                </td>
                <td>{j.name}</td>
                <td>{j.kind}</td>
                <td>
                  <StateBadge state={j.state} />
                </td>
                <td>{when(j.submitted)}</td>
                <td>{duration(j.seconds)}</td>
                <td class="n" data-field="events">{num(j.events)}</td>
                <td class="n">{num(j.events_per_s)}</td>
                <td class="n">{num(j.rows)}</td>
                <td>
                  <JobLinks job={j} /> <StopButtons job={j} onDone={jobs.reload} />
                </td>
              </tr>
            ))}
            {list.length === 0 && (
              <tr>
                <td colSpan={10} class="muted">
                  No jobs yet: submit one below, or run <code>flowsense demo --serve</code>.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <h2>Submit a job</h2>
      <p class="muted">
        Paste or upload a job spec, as <code>flowsense run</code> reads it. The server checks it and
        names the line of anything wrong.
      </p>
      <TomlEditor value={spec} onChange={setSpec} error={error} />
      <div class="row">
        <button type="button" class="primary" onClick={submit} data-testid="submit-job">
          Submit
        </button>
        <label class="file">
          Upload TOML <input type="file" accept=".toml,text/plain" onChange={upload} />
        </label>
        {submitted && (
          <span data-testid="submitted">
            Submitted <a href={`#/jobs/${encodeURIComponent(submitted)}`}>{submitted}</a>
          </span>
        )}
      </div>
    </section>
  );
}
