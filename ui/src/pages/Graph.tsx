//! Graph monitor: a job's dataflow laid out with dagre (operators as nodes, with the stages
//! inside them; channels as edges), each node with records/s, busy % and frontier lag, coloured
//! by how busy it is, updated each second over the stream; a node's per-worker figures (skew)
//! and its history on click.

import { useMemo, useRef, useState } from 'preact/hooks';
import { Graph, layout } from '@dagrejs/dagre';
import type { GraphEdge, GraphNode, GraphView, JobView } from '../api/client';
import { useStream } from '../lib/hooks';
import { num, pct } from '../lib/format';
import { ErrorBox, Sparkline, StateBadge } from '../components/bits';

const NODE_W = 200;
const NODE_H = 74;
/** Seconds of history kept per node. */
const HISTORY = 120;

interface Point {
  x: number;
  y: number;
}
interface Laid {
  nodes: Map<string, Point>;
  edges: Map<string, Point[]>;
  width: number;
  height: number;
}

const edgeKey = (e: { source: string; target: string }) => `${e.source}->${e.target}`;

/** Lays the graph out left to right; only its shape matters, so figures never move it. */
export function layOut(nodes: { id: string }[], edges: { source: string; target: string }[]): Laid {
  const g = new Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 24, ranksep: 60, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  for (const e of edges) if (e.source !== e.target) g.setEdge(e.source, e.target);
  layout(g);
  const out: Laid = { nodes: new Map(), edges: new Map(), width: 0, height: 0 };
  for (const id of g.nodes()) {
    const n = g.node(id) as unknown as Point;
    out.nodes.set(id, { x: n.x, y: n.y });
  }
  for (const e of g.edges()) {
    const pts = (g.edge(e) as unknown as { points?: Point[] }).points ?? [];
    out.edges.set(`${e.v}->${e.w}`, pts);
  }
  const label = g.graph() as unknown as { width?: number; height?: number };
  out.width = label.width ?? 400;
  out.height = label.height ?? 200;
  return out;
}

/** Green when idle through amber to red when always busy. */
export function busyColour(busy: number): string {
  const b = Math.max(0, Math.min(1, busy));
  return `hsl(${Math.round(130 * (1 - b))}, 65%, 42%)`;
}

interface Sample {
  inPerS: number;
  outPerS: number;
  busy: number;
}

/** The monitor for a graph that changes over time (the live page and the benchmark share it). */
export function GraphMonitor({ view, history }: { view: GraphView; history: Map<string, Sample[]> }) {
  const [picked, setPicked] = useState<string | undefined>(undefined);
  const shape = view.nodes.map((n) => n.id).join(',') + '|' + view.edges.map(edgeKey).join(',');
  const laid = useMemo(() => layOut(view.nodes, view.edges), [shape]);
  const node = view.nodes.find((n) => n.id === picked);
  return (
    <div class="graph-layout">
      <div class={`graph-canvas${view.nodes.length <= 12 ? ' fit' : ''}`}>
        <svg
          data-testid="graph-svg"
          viewBox={`0 0 ${laid.width} ${laid.height}`}
          width={laid.width}
          height={laid.height}
          role="img"
          aria-label="The job's dataflow graph"
        >
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
              <path d="M0,0 L10,5 L0,10 z" class="edge-head" />
            </marker>
          </defs>
          {view.edges.map((e) => (
            <EdgeView key={edgeKey(e)} edge={e} points={laid.edges.get(edgeKey(e)) ?? []} />
          ))}
          {view.nodes.map((n) => {
            const p = laid.nodes.get(n.id);
            return p ? (
              <NodeView key={n.id} node={n} at={p} picked={n.id === picked} onPick={() => setPicked(n.id)} />
            ) : null;
          })}
        </svg>
      </div>
      <aside class="graph-side">
        {node ? (
          <NodeDetail node={node} history={history.get(node.id) ?? []} />
        ) : (
          <p class="muted">Click an operator for its per-worker figures and its history.</p>
        )}
      </aside>
    </div>
  );
}

function NodeView({ node, at, picked, onPick }: { node: GraphNode; at: Point; picked: boolean; onPick: () => void }) {
  const x = at.x - NODE_W / 2;
  const y = at.y - NODE_H / 2;
  const lag = node.frontier_lag_ms;
  return (
    <g
      class={`gnode${picked ? ' picked' : ''}`}
      transform={`translate(${x},${y})`}
      onClick={onPick}
      data-node={node.id}
      data-testid="graph-node"
    >
      <title>{`${node.name} (${node.id}): busy ${pct(node.busy_ratio)}`}</title>
      <rect width={NODE_W} height={NODE_H} rx="6" class="gnode-box" />
      <rect width="6" height={NODE_H} rx="3" fill={busyColour(node.busy_ratio)} />
      <rect x="6" y={NODE_H - 5} width={(NODE_W - 6) * Math.min(1, node.busy_ratio)} height="5" fill={busyColour(node.busy_ratio)} />
      <text x="14" y="18" class="gnode-name">
        {node.name}
        <tspan class="gnode-id"> {node.id}</tspan>
      </text>
      <text x="14" y="34" class="gnode-stages">
        {node.stages.join(' · ')}
      </text>
      <text x="14" y="50" class="gnode-fig" data-field="rate">
        in {num(node.records_in_per_s)}/s · out {num(node.records_out_per_s)}/s
      </text>
      <text x="14" y="64" class="gnode-fig">
        busy {pct(node.busy_ratio)}
        {lag !== null && lag !== undefined ? ` · lag ${num(lag, 1)} ms` : ''}
      </text>
    </g>
  );
}

function EdgeView({ edge, points }: { edge: GraphEdge; points: Point[] }) {
  if (points.length < 2) return null;
  const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join('');
  const mid = points[Math.floor(points.length / 2)];
  return (
    <g class="gedge">
      <path d={d} marker-end="url(#arrow)" />
      <text x={mid.x} y={mid.y - 4} text-anchor="middle">
        {num(edge.records_per_s)}/s
      </text>
    </g>
  );
}

function NodeDetail({ node, history }: { node: GraphNode; history: Sample[] }) {
  const rates = node.per_worker.map((w) => w.records_in_per_s);
  const mean = rates.reduce((a, b) => a + b, 0) / Math.max(1, rates.length);
  const max = Math.max(0, ...rates);
  const skew = mean > 0 ? max / mean : undefined;
  return (
    <div data-testid="node-detail">
      <h3>
        {node.name} <span class="muted">{node.id}</span>
      </h3>
      <p class="muted">{node.stages.join(' · ') || 'no stages'}</p>
      <p>
        {num(node.records_in)} in · {num(node.records_out)} out · busy {num(node.busy_ms)} ms
      </p>
      <h4>Per worker{skew !== undefined && <span class="muted"> · skew {skew.toFixed(2)}x (max / mean)</span>}</h4>
      <table class="compact" data-testid="per-worker">
        <thead>
          <tr>
            <th>Worker</th>
            <th class="n">In/s</th>
            <th>Share</th>
            <th class="n">Busy</th>
            <th class="n">Lag ms</th>
          </tr>
        </thead>
        <tbody>
          {node.per_worker.map((w) => (
            <tr key={w.worker}>
              <td>{w.worker}</td>
              <td class="n">{num(w.records_in_per_s)}</td>
              <td>
                <div class="bar">
                  <div style={{ width: `${max > 0 ? (100 * w.records_in_per_s) / max : 0}%` }} />
                </div>
              </td>
              <td class="n">{pct(w.busy_ratio)}</td>
              <td class="n">{num(w.frontier_lag_ms ?? undefined, 1)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h4>Records in/s, last {history.length} s</h4>
      <Sparkline values={history.map((h) => h.inPerS)} label="records in per second" />
      <h4>Busy</h4>
      <Sparkline values={history.map((h) => h.busy)} label="busy share" />
    </div>
  );
}

/** Appends a graph's figures to each node's history. */
export function record(history: Map<string, Sample[]>, view: GraphView) {
  for (const n of view.nodes) {
    const h = history.get(n.id) ?? [];
    h.push({ inPerS: n.records_in_per_s, outPerS: n.records_out_per_s, busy: n.busy_ratio });
    if (h.length > HISTORY) h.shift();
    history.set(n.id, h);
  }
}

export function GraphPage({ id }: { id: string }) {
  const [view, setView] = useState<GraphView>();
  const [job, setJob] = useState<JobView>();
  const history = useRef(new Map<string, Sample[]>());
  const open = useStream(id, ['graph', 'job'], (m) => {
    if (m.topic === 'graph' && m.data) {
      const v = m.data as GraphView;
      record(history.current, v);
      setView(v);
    } else if (m.topic === 'job' && m.data) {
      setJob(m.data as JobView);
    }
  });
  return (
    <section>
      <p class="crumbs">
        <a href="#/jobs">Jobs</a> / <a href={`#/jobs/${encodeURIComponent(id)}`}>{id}</a> / graph
      </p>
      <h1>
        {job?.name ?? id} {job && <StateBadge state={job.state} />}
        <span class={`live ${open ? 'on' : ''}`} title={open ? 'Live' : 'Not connected'}>
          {open ? 'live' : 'offline'}
        </span>
      </h1>
      {job && (
        <p class="muted" data-testid="graph-summary">
          {num(job.events)} events · {num(job.events_per_s)} events/s · {view?.workers ?? 0} workers
        </p>
      )}
      {!view && <ErrorBox error={open ? undefined : 'Waiting for the stream…'} />}
      {view && <GraphMonitor view={view} history={history.current} />}
    </section>
  );
}
