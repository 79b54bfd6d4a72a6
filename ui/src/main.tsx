//! FlowSense's web UI: the layout, the navigation and the hash routes of its pages.

import { render, type ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ok, type JobView } from './api/client';
import { usePoll, useRoute } from './lib/hooks';
import { JobsPage } from './pages/Jobs';
import { JobPage } from './pages/Job';
import { SqlPage } from './pages/Sql';
import { StateBadge } from './components/bits';
import './style.css';

const NAV = [
  ['jobs', 'Jobs'],
  ['graph', 'Graph'],
  ['market', 'Market'],
  ['portfolio', 'Portfolio'],
  ['backtests', 'Backtests'],
  ['sql', 'SQL'],
] as const;

/**
 * A page loaded when first shown: the chart and layout libraries (most of the bundle) are
 * fetched only by the pages that draw with them, so the jobs list and the SQL console load
 * without them.
 */
function lazy<P extends object>(load: () => Promise<ComponentType<P>>): ComponentType<P> {
  let loaded: ComponentType<P> | undefined;
  return (props: P) => {
    const [, setReady] = useState(false);
    const [error, setError] = useState<string>();
    useEffect(() => {
      if (!loaded)
        load().then(
          (c) => {
            loaded = c;
            setReady(true);
          },
          (e: Error) => setError(`This page did not load: ${e.message}`),
        );
    }, []);
    if (error) return <div class="error">{error}</div>;
    const Page = loaded;
    return Page ? <Page {...props} /> : <p class="muted">Loading…</p>;
  };
}

const GraphPage = lazy(() => import('./pages/Graph').then((m) => m.GraphPage));
const GraphBenchPage = lazy(() => import('./pages/GraphBench').then((m) => m.GraphBenchPage));
const MarketPage = lazy(() => import('./pages/Market').then((m) => m.MarketPage));
const PortfolioPage = lazy(() => import('./pages/Portfolio').then((m) => m.PortfolioPage));
const BacktestsPage = lazy(() => import('./pages/Backtests').then((m) => m.BacktestsPage));
const BacktestPage = lazy(() => import('./pages/Backtests').then((m) => m.BacktestPage));

type Theme = 'light' | 'dark';

function useTheme(): [Theme, () => void] {
  const initial = (localStorage.getItem('flowsense.theme') as Theme | null) ??
    (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
  const [theme, setTheme] = useState<Theme>(initial);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  return [
    theme,
    () => {
      const t = theme === 'dark' ? 'light' : 'dark';
      localStorage.setItem('flowsense.theme', t);
      setTheme(t);
    },
  ];
}

/** Which jobs a page without a job id offers, best first. */
function candidates(page: string, jobs: JobView[]): JobView[] {
  const fits = (j: JobView) => (page === 'portfolio' ? j.kind !== 'features' : page === 'market' ? j.paced : true);
  // Running first; on the market, a paper strategy (orders and fills on the chart) first.
  const rank = (j: JobView) => (j.state === 'running' ? 0 : 2) + (page === 'market' && j.kind === 'features' ? 1 : 0);
  // The API lists the newest first; the sort is stable, so each rank stays newest first.
  return jobs.filter(fits).sort((a, b) => rank(a) - rank(b));
}

function PickJob({ page }: { page: string }) {
  const jobs = usePoll(async () => ok(await api.GET('/api/v1/jobs')), [], 2000);
  const list = candidates(page, jobs.data ?? []);
  useEffect(() => {
    const running = list.find((j) => j.state === 'running');
    if (running) location.replace(`#/${page}/${encodeURIComponent(running.id)}`);
  }, [list.length]);
  return (
    <section>
      <h1>Pick a job</h1>
      {list.length === 0 && (
        <p class="muted">
          No job to show yet. Submit one on the <a href="#/jobs">Jobs</a> page, or start the server with{' '}
          <code>flowsense demo --serve</code>.
        </p>
      )}
      <ul>
        {list.map((j) => (
          <li key={j.id}>
            <a href={`#/${page}/${encodeURIComponent(j.id)}`}>
              {j.name} ({j.id})
            </a>{' '}
            <StateBadge state={j.state} />
          </li>
        ))}
      </ul>
    </section>
  );
}

function Health() {
  const h = usePoll(async () => ok(await api.GET('/api/v1/health')), [], 5000);
  const status = h.error ? 'unreachable' : (h.data?.status ?? '…');
  return (
    <span class={`health ${status}`} title={h.data?.error ?? h.error ?? `${h.data?.workers ?? 0} workers`} data-testid="health">
      {status}
      {h.data && ` · ${h.data.workers} workers`}
    </span>
  );
}

function Page({ route }: { route: string[] }) {
  // Keyed by the id, so a page moved to another job starts afresh (no figures, rows or
  // subscriptions of the last one).
  const [page, id] = route;
  switch (page) {
    case undefined:
    case 'jobs':
      return id ? <JobPage key={id} id={id} /> : <JobsPage />;
    case 'graph':
      return id ? <GraphPage key={id} id={id} /> : <PickJob page="graph" />;
    case 'market':
      return id ? <MarketPage key={id} id={id} /> : <PickJob page="market" />;
    case 'portfolio':
      return id ? <PortfolioPage key={id} id={id} /> : <PickJob page="portfolio" />;
    case 'backtests':
      return id ? <BacktestPage key={id} run={id} /> : <BacktestsPage />;
    case 'sql':
      return <SqlPage />;
    case 'bench':
      return <GraphBenchPage nodes={Number(route[2] ?? 100)} />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>
            No page <code>{page}</code>: see <a href="#/jobs">Jobs</a>.
          </p>
        </section>
      );
  }
}

function App() {
  const route = useRoute();
  const [theme, toggle] = useTheme();
  const current = route[0] ?? 'jobs';
  return (
    <>
      <header class="top">
        <a class="brand" href="#/jobs">
          FlowSense
        </a>
        <nav>
          {NAV.map(([path, label]) => (
            <a key={path} href={`#/${path}`} class={current === path ? 'active' : ''}>
              {label}
            </a>
          ))}
        </nav>
        <span class="spacer" />
        <Health />
        <button type="button" class="theme" onClick={toggle} aria-label="Switch light or dark">
          {theme === 'dark' ? '☀' : '☾'}
        </button>
        <a class="muted" href="/api/v1/docs" target="_blank" rel="noopener">
          API
        </a>
      </header>
      <main>
        <Page route={route} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
