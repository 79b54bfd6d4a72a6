//! Live market of a paced job: for one symbol, the price chart (1 s candles from the tape, the
//! mid from the book), the strategy's orders and fills as markers, two chosen features (OFI and
//! VPIN at first) below it, the
//! order-book ladder (10 levels, sizes as bars) and the trade tape.

import { useEffect, useRef, useState } from 'preact/hooks';
import {
  CandlestickSeries,
  createChart,
  createSeriesMarkers,
  LineSeries,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  type SeriesMarker,
  type Time,
  type UTCTimestamp,
} from 'lightweight-charts';
import { api, ok, type BookLevels, type JobView, type Row, type TapeTrade } from '../api/client';
import { usePoll, useStream, useTicker } from '../lib/hooks';
import { nsTime, num, price } from '../lib/format';
import { ErrorBox, StateBadge } from '../components/bits';
import { themed } from '../components/Chart';

interface Candle {
  time: UTCTimestamp;
  open: number;
  high: number;
  low: number;
  close: number;
}

/** What the page keeps of the stream, per symbol. */
class MarketState {
  books = new Map<string, BookLevels>();
  tape: TapeTrade[] = [];
  candles = new Map<string, Candle[]>();
  mids = new Map<string, { time: UTCTimestamp; value: number }[]>();
  orders: Row[] = [];
  fills: Row[] = [];
  features: Row[] = [];
  symbols = new Set<string>();

  book(b: BookLevels) {
    this.symbols.add(b.symbol);
    this.books.set(b.symbol, b);
    const bid = b.bids[0]?.[0];
    const ask = b.asks[0]?.[0];
    if (bid !== undefined && ask !== undefined) {
      const m = this.mids.get(b.symbol) ?? [];
      const time = Math.floor(b.ts / 1e9) as UTCTimestamp;
      const value = (bid + ask) / 2;
      if (m.length && m[m.length - 1].time === time) m[m.length - 1].value = value;
      else if (!m.length || m[m.length - 1].time < time) m.push({ time, value });
      this.mids.set(b.symbol, m);
    }
  }

  trade(t: TapeTrade) {
    this.symbols.add(t.symbol);
    this.tape.unshift(t);
    if (this.tape.length > 200) this.tape.length = 200;
    const cs = this.candles.get(t.symbol) ?? [];
    const time = Math.floor(t.ts / 1e9) as UTCTimestamp;
    const last = cs[cs.length - 1];
    if (last && last.time === time) {
      last.high = Math.max(last.high, t.price);
      last.low = Math.min(last.low, t.price);
      last.close = t.price;
    } else if (!last || last.time < time) {
      cs.push({ time, open: t.price, high: t.price, low: t.price, close: t.price });
    }
    this.candles.set(t.symbol, cs);
  }
}

/** The features job to show beside a trading job: a running paced one, if there is one. */
function featureSource(jobs: JobView[] | undefined, job: JobView | undefined): string | undefined {
  if (!job) return undefined;
  if (job.kind === 'features') return job.id;
  return jobs?.find((j) => j.kind === 'features' && j.state === 'running')?.id;
}

export function MarketPage({ id }: { id: string }) {
  const job = usePoll(async () => ok(await api.GET('/api/v1/jobs/{id}', { params: { path: { id } } })), [id], 2000);
  const jobs = usePoll(async () => ok(await api.GET('/api/v1/jobs')), [], 5000);
  const st = useRef(new MarketState());
  const [symbol, setSymbol] = useState<string>();
  const [panes, setPanes] = useState<[string, string]>(['ofi_l1', 'vpin']);
  useTicker(250);
  const trading = job.data !== undefined && job.data.kind !== 'features';
  // Only a paced job streams its book and tape (the server refuses the others' subscriptions).
  const open = useStream(job.data?.paced ? id : undefined, trading ? ['book', 'trades', 'orders', 'fills'] : ['book', 'trades'], (m) => {
    const data: unknown = m.data;
    if (!Array.isArray(data)) return;
    if (m.topic === 'book') for (const b of data as BookLevels[]) st.current.book(b);
    else if (m.topic === 'trades') for (const t of data as TapeTrade[]) st.current.trade(t);
    else if (m.topic === 'orders') st.current.orders.push(...(data as Row[]));
    else if (m.topic === 'fills') st.current.fills.push(...(data as Row[]));
  });
  const features = featureSource(jobs.data, job.data);
  useStream(features, ['features'], (m) => {
    if (Array.isArray(m.data)) st.current.features.push(...(m.data as Row[]));
  });
  const symbols = [...st.current.symbols].sort();
  const sym = symbol && symbols.includes(symbol) ? symbol : symbols[0];
  const book = sym ? st.current.books.get(sym) : undefined;
  return (
    <section>
      <p class="crumbs">
        <a href="#/jobs">Jobs</a> / <a href={`#/jobs/${encodeURIComponent(id)}`}>{id}</a> / market
      </p>
      <h1>
        Market {job.data && <StateBadge state={job.data.state} />}
        <span class={`live ${open ? 'on' : ''}`}>{open ? 'live' : 'offline'}</span>
      </h1>
      <ErrorBox error={job.error} />
      {job.data && !job.data.paced && (
        <p class="muted" data-testid="not-paced">
          Job {id} runs as fast as it can (no <code>[replay]</code>), so it streams no book or tape:
          the market shows paced jobs. Its rows are on its <a href={`#/jobs/${encodeURIComponent(id)}`}>job page</a>.
        </p>
      )}
      {job.data?.paced && (
        <div class="row">
          <label>
            Symbol{' '}
            <select value={sym} onChange={(e) => setSymbol((e.target as HTMLSelectElement).value)} data-testid="symbol">
              {symbols.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>
          {features ? (
            <>
              {[0, 1].map((i) => (
                <label key={i}>
                  {i === 0 ? 'Features' : 'and'}{' '}
                  <select
                    value={panes[i]}
                    data-testid={`feature-${i}`}
                    onChange={(e) => {
                      const next: [string, string] = [...panes];
                      next[i] = (e.target as HTMLSelectElement).value;
                      setPanes(next);
                    }}
                  >
                    {featureColumns(st.current.features, panes).map((c) => (
                      <option key={c}>{c}</option>
                    ))}
                  </select>
                </label>
              ))}
              <span class="muted">(1 s buckets of job {features})</span>
            </>
          ) : (
            <span class="muted">no running feature job: no features are shown</span>
          )}
        </div>
      )}
      {symbols.length === 0 && open && <p class="muted">Waiting for the book…</p>}
      <div class="market-layout">
        <div class="market-chart">
          <PriceChart state={st.current} symbol={sym} panes={panes} />
        </div>
        <div class="market-side">
          <h3>Book {book && <span class="muted">{nsTime(book.ts)}</span>}</h3>
          {book && <Ladder book={book} />}
          <h3>Tape</h3>
          <Tape trades={st.current.tape.filter((t) => t.symbol === sym).slice(0, 30)} />
        </div>
      </div>
    </section>
  );
}

/** The numeric columns of the feature rows (what a pane can show), the chosen ones first. */
function featureColumns(rows: Row[], chosen: string[]): string[] {
  const skip = new Set(['ts', 'mid', 'job', 'bucket', 'symbol', 'date']);
  const cols = new Set(chosen);
  const r = rows[rows.length - 1];
  if (r) for (const [k, v] of Object.entries(r)) if (!skip.has(k) && (typeof v === 'number' || v === null)) cols.add(k);
  return [...cols];
}

function PriceChart({ state, symbol, panes }: { state: MarketState; symbol?: string; panes: [string, string] }) {
  const el = useRef<HTMLDivElement>(null);
  const parts = useRef<{
    chart: IChartApi;
    candles: ISeriesApi<'Candlestick'>;
    mid: ISeriesApi<'Line'>;
    upper: ISeriesApi<'Line'>;
    lower: ISeriesApi<'Line'>;
    markers: ISeriesMarkersPluginApi<Time>;
  }>();
  useEffect(() => {
    if (!el.current) return;
    const chart = createChart(el.current, { ...themed(), timeScale: { timeVisible: true, secondsVisible: true, barSpacing: 8, rightOffset: 4 } });
    const candles = chart.addSeries(CandlestickSeries, { title: 'price' });
    const mid = chart.addSeries(LineSeries, { color: '#8a63d2', lineWidth: 1, title: 'mid' });
    const upper = chart.addSeries(LineSeries, { color: '#1f6feb', lineWidth: 1 }, 1);
    const lower = chart.addSeries(LineSeries, { color: '#d97706', lineWidth: 1 }, 2);
    const markers = createSeriesMarkers(candles, []);
    parts.current = { chart, candles, mid, upper, lower, markers };
    return () => {
      chart.remove();
      parts.current = undefined;
    };
  }, []);
  useEffect(() => {
    const p = parts.current;
    if (!p || !symbol) return;
    p.candles.setData(state.candles.get(symbol) ?? []);
    p.mid.setData(state.mids.get(symbol) ?? []);
    const fs = state.features.filter((f) => f.symbol === symbol && f.bucket === '1s');
    const line = (col: string) => {
      const out: { time: UTCTimestamp; value: number }[] = [];
      for (const f of fs) {
        const v = f[col];
        const time = Math.floor((f.ts as number) / 1e9) as UTCTimestamp;
        if (typeof v !== 'number' || (out.length && out[out.length - 1].time >= time)) continue;
        out.push({ time, value: v });
      }
      return out;
    };
    p.upper.applyOptions({ title: panes[0] });
    p.upper.setData(line(panes[0]));
    p.lower.applyOptions({ title: panes[1] });
    p.lower.setData(line(panes[1]));
    const marks: SeriesMarker<Time>[] = [];
    for (const o of state.orders.filter((o) => o.symbol === symbol)) {
      marks.push({
        time: Math.floor((o.ts as number) / 1e9) as UTCTimestamp,
        position: o.side === 'buy' ? 'belowBar' : 'aboveBar',
        shape: o.side === 'buy' ? 'arrowUp' : 'arrowDown',
        color: o.side === 'buy' ? '#1a7f37' : '#cf222e',
        size: 0.6,
      });
    }
    for (const f of state.fills.filter((f) => f.symbol === symbol)) {
      marks.push({
        time: Math.floor((f.ts as number) / 1e9) as UTCTimestamp,
        position: 'atPriceMiddle',
        price: f.price as number,
        shape: 'circle',
        color: f.side === 'buy' ? '#1a7f37' : '#cf222e',
      });
    }
    marks.sort((a, b) => (a.time as number) - (b.time as number));
    p.markers.setMarkers(marks);
  });
  return <div ref={el} class="chart tall" data-testid="price-chart" />;
}

function Ladder({ book }: { book: BookLevels }) {
  const max = Math.max(...book.bids.map((l) => l[1]), ...book.asks.map((l) => l[1]), 1e-12);
  const row = (side: 'bid' | 'ask', [p, s]: [number, number], i: number) => (
    <tr key={`${side}${i}`} class={side} data-price={p}>
      <td class="n">{price(p)}</td>
      <td class="n size">
        <div class="depth" style={{ width: `${(100 * s) / max}%` }} />
        <span>{num(s, 4)}</span>
      </td>
    </tr>
  );
  return (
    <table class="ladder compact" data-testid="ladder">
      <thead>
        <tr>
          <th class="n">Price</th>
          <th class="n">Size</th>
        </tr>
      </thead>
      <tbody>
        {[...book.asks].reverse().map((l, i) => row('ask', l as [number, number], i))}
        <tr class="spread">
          <td colSpan={2} class="muted">
            spread {book.asks[0] && book.bids[0] ? price(book.asks[0][0] - book.bids[0][0]) : '–'}
          </td>
        </tr>
        {book.bids.map((l, i) => row('bid', l as [number, number], i))}
      </tbody>
    </table>
  );
}

function Tape({ trades }: { trades: TapeTrade[] }) {
  return (
    <table class="tape compact" data-testid="tape">
      <thead>
        <tr>
          <th>Time</th>
          <th class="n">Price</th>
          <th class="n">Size</th>
        </tr>
      </thead>
      <tbody>
        {trades.map((t, i) => (
          <tr key={i} class={t.side === 'buy' ? 'bid' : 'ask'} data-ts={t.ts} data-price={t.price}>
            <td>{nsTime(t.ts)}</td>
            <td class="n">{price(t.price)}</td>
            <td class="n">{num(t.size, 4)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
