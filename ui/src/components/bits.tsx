//! Small pieces the pages share: a job state's badge, a figure card, an error box, a sparkline.

import type { ComponentChildren } from 'preact';

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

export function Card({
  label,
  value,
  sub,
  tone,
  testId,
}: {
  label: string;
  value: ComponentChildren;
  sub?: ComponentChildren;
  tone?: 'pos' | 'neg' | 'warn';
  testId?: string;
}) {
  return (
    <div class={`card ${tone ?? ''}`} data-testid={testId}>
      <div class="card-label">{label}</div>
      <div class="card-value">{value}</div>
      {sub && <div class="card-sub">{sub}</div>}
    </div>
  );
}

export function ErrorBox({ error }: { error: string | undefined }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      {error}
    </div>
  );
}

/** A line of the last values, scaled to its own range. */
export function Sparkline({
  values,
  width = 220,
  height = 40,
  label,
}: {
  values: number[];
  width?: number;
  height?: number;
  label?: string;
}) {
  if (values.length < 2) return <svg width={width} height={height} class="spark" aria-label={label} />;
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const span = hi - lo || 1;
  const d = values
    .map((v, i) => {
      const x = (i / (values.length - 1)) * (width - 2) + 1;
      const y = height - 2 - ((v - lo) / span) * (height - 4);
      return `${i === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join('');
  return (
    <svg width={width} height={height} class="spark" role="img" aria-label={label}>
      <path d={d} fill="none" stroke="currentColor" stroke-width="1.5" />
    </svg>
  );
}

/** Tabs over a set of names. */
export function Tabs({
  names,
  current,
  onPick,
}: {
  names: string[];
  current: string;
  onPick: (name: string) => void;
}) {
  return (
    <div class="tabs" role="tablist">
      {names.map((n) => (
        <button
          type="button"
          role="tab"
          key={n}
          aria-selected={n === current}
          class={n === current ? 'active' : ''}
          onClick={() => onPick(n)}
        >
          {n}
        </button>
      ))}
    </div>
  );
}
