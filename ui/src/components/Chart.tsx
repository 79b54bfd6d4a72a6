//! Charts on lightweight-charts (TradingView's): a time chart of lines with optional
//! horizontal lines (an alert, a halt), themed from the page's CSS colours.

import { useEffect, useRef } from 'preact/hooks';
import { createChart, LineSeries, type IChartApi, type ISeriesApi, type UTCTimestamp } from 'lightweight-charts';
import type { Point } from '../lib/portfolio';

/** The chart options that follow the page's theme. */
export function themed() {
  const css = getComputedStyle(document.documentElement);
  const v = (n: string) => css.getPropertyValue(n).trim();
  return {
    layout: { background: { color: 'transparent' }, textColor: v('--fg') || '#333' },
    grid: { vertLines: { color: v('--grid') || '#eee' }, horzLines: { color: v('--grid') || '#eee' } },
    timeScale: { timeVisible: true, secondsVisible: true },
    autoSize: true,
  };
}

export interface LineDef {
  name: string;
  colour: string;
  points: Point[];
}

/** Lines over time; `levels` draws dashed horizontal lines (value and title). */
export function LineChart({
  lines,
  levels,
  height = 220,
  percent,
  testId,
}: {
  lines: LineDef[];
  levels?: { value: number; title: string; colour: string }[];
  height?: number;
  percent?: boolean;
  testId?: string;
}) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi>();
  const series = useRef(new Map<string, ISeriesApi<'Line'>>());
  useEffect(() => {
    if (!el.current) return;
    chart.current = createChart(el.current, themed());
    return () => {
      chart.current?.remove();
      chart.current = undefined;
      series.current.clear();
    };
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    for (const l of lines) {
      let s = series.current.get(l.name);
      if (!s) {
        s = c.addSeries(LineSeries, {
          color: l.colour,
          lineWidth: 2,
          title: l.name,
          priceFormat: percent ? { type: 'percent', precision: 2 } : { type: 'price', precision: 2, minMove: 0.01 },
        });
        for (const lv of levels ?? []) {
          s.createPriceLine({ price: lv.value, color: lv.colour, lineStyle: 2, lineWidth: 1, title: lv.title, axisLabelVisible: true });
        }
        series.current.set(l.name, s);
      }
      s.setData(l.points.map((p) => ({ time: p.time as UTCTimestamp, value: p.value })));
    }
  }, [lines]);
  return <div ref={el} class="chart" style={{ height: `${height}px` }} data-testid={testId} />;
}

/**
 * A portfolio's equity and its drawdown (a share, drawn as a negative percentage) side by
 * side; `alert` and `halt` draw the risk limits on the drawdown.
 */
export function EquityCharts({
  equity,
  drawdown,
  alert,
  halt,
  testIds,
}: {
  equity: Point[];
  drawdown: Point[];
  alert?: number;
  halt?: number;
  testIds: [string, string];
}) {
  const levels = [
    ...(alert !== undefined ? [{ value: -100 * alert, title: 'alert', colour: '#d97706' }] : []),
    ...(halt !== undefined ? [{ value: -100 * halt, title: 'halt', colour: '#cf222e' }] : []),
  ];
  return (
    <div class="two">
      <div>
        <h3>Equity</h3>
        <LineChart lines={[{ name: 'equity', colour: '#1f6feb', points: equity }]} testId={testIds[0]} />
      </div>
      <div>
        <h3>Drawdown</h3>
        <LineChart
          percent
          lines={[{ name: 'drawdown', colour: '#cf222e', points: drawdown.map((p) => ({ time: p.time, value: -100 * p.value })) }]}
          levels={levels}
          testId={testIds[1]}
        />
      </div>
    </div>
  );
}
