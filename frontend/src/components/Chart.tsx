// A uPlot chart as a React component. uPlot draws to a canvas and copes with 50,000-point series;
// the plot is built once per series layout and new data only goes through setData(), so live
// updates do not rebuild it. Vertical markers (the loss spike, the stage transition) are drawn by
// a small plugin on top of the series.

import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Aligned } from "../lib/series";

export interface SeriesStyle {
  label: string;
  color: string;
  dash?: number[];
  /** draw points only (a scatter plot), no line */
  pointsOnly?: boolean;
  /** a line with a point at each value */
  showPoints?: boolean;
  width?: number;
}

export interface Marker {
  x: number;
  label: string;
  color: string;
}

export interface ChartProps {
  title: string;
  data: Aligned;
  series: SeriesStyle[];
  xLabel?: string;
  yLabel?: string;
  markers?: Marker[];
  height?: number;
  logY?: boolean;
  /** log-scale x axis (amounts of data that double from point to point) */
  logX?: boolean;
  /** fixed x range, e.g. [0, 1] for a fraction */
  xRange?: [number, number];
  /** where the x axis has ticks (default: uPlot's choice) */
  xTicks?: number[];
  formatY?: (v: number) => string;
  testId?: string;
  /** charts with the same key move their cursors together (one page's charts over one x) */
  syncKey?: string;
  /** ticks at whole numbers only (steps); default: when the x axis is "step" */
  integerX?: boolean;
  /** write each series' label beside each of its points (a scatter of named runs) */
  labelPoints?: boolean;
}

// tick spacings uPlot may choose from on a whole-number axis: 1, 2, 5, 10, 20, 50, ...
const INTEGER_INCREMENTS = Array.from({ length: 30 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));

function markerPlugin(markers: { current: Marker[] }): uPlot.Plugin {
  return {
    hooks: {
      draw: (u: uPlot) => {
        const ctx = u.ctx;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.font = `${12 * devicePixelRatio}px system-ui, sans-serif`;
        for (const m of markers.current) {
          const x = u.valToPos(m.x, "x", true);
          if (!Number.isFinite(x) || x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = m.color;
          ctx.fillStyle = m.color;
          ctx.lineWidth = devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(m.label, x + 4 * devicePixelRatio, top + 14 * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

function pointLabelPlugin(series: SeriesStyle[]): uPlot.Plugin {
  return {
    hooks: {
      draw: (u: uPlot) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        series.forEach((s, k) => {
          const ys = u.data[k + 1];
          ctx.fillStyle = s.color;
          u.data[0].forEach((xv, j) => {
            const yv = ys?.[j];
            if (yv === null || yv === undefined) return;
            const x = u.valToPos(xv, "x", true);
            const y = u.valToPos(yv, "y", true);
            if (!Number.isFinite(x) || !Number.isFinite(y)) return;
            // right of the point, or left of it where the label would leave the plot
            const right = x + 7 * devicePixelRatio + ctx.measureText(s.label).width <= u.bbox.left + u.bbox.width;
            ctx.textAlign = right ? "left" : "right";
            ctx.fillText(s.label, right ? x + 7 * devicePixelRatio : x - 7 * devicePixelRatio, y - 6 * devicePixelRatio);
          });
        });
        ctx.restore();
      },
    },
  };
}

export function Chart(props: ChartProps) {
  const { title, data, series, xLabel = "step", yLabel, markers = [], height = 260 } = props;
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const markerRef = useRef<Marker[]>(markers);
  markerRef.current = markers;
  const layout = JSON.stringify([
    series,
    xLabel,
    yLabel,
    height,
    props.logY,
    props.logX,
    props.xRange,
    props.xTicks,
    props.syncKey,
    props.integerX,
    props.labelPoints,
  ]);

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    const fmt = props.formatY;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      plugins: [markerPlugin(markerRef), ...(props.labelPoints ? [pointLabelPlugin(series)] : [])],
      cursor: { focus: { prox: 16 }, ...(props.syncKey ? { sync: { key: props.syncKey } } : {}) },
      legend: { live: true },
      scales: {
        x: { time: false, distr: props.logX ? 3 : 1, ...(props.xRange ? { range: props.xRange } : {}) },
        y: { distr: props.logY ? 3 : 1 },
      },
      axes: [
        {
          label: xLabel,
          stroke: "#5b6472",
          grid: { stroke: "#eef0f3" },
          ...((props.integerX ?? xLabel === "step") && !props.xTicks ? { incrs: INTEGER_INCREMENTS } : {}),
          ...(props.xTicks
            ? {
                splits: () => props.xTicks as number[],
                // a log axis labels only powers of ten by default; label every tick given
                filter: (_u: uPlot, splits: number[]) => splits,
                values: (_u: uPlot, vals: (number | null)[]) =>
                  vals.map((v) => (v === null ? "" : String(+v.toPrecision(3)))),
              }
            : {}),
        },
        {
          label: yLabel,
          stroke: "#5b6472",
          grid: { stroke: "#eef0f3" },
          size: 64,
          values: fmt ? (_u, vals) => vals.map((v) => (v === null ? "" : fmt(v))) : undefined,
        },
      ],
      series: [
        { label: xLabel },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width ?? 1.5,
          dash: s.dash,
          spanGaps: true,
          value: fmt ? (_u: uPlot, v: number | null) => (v === null ? "—" : fmt(v)) : undefined,
          ...(s.pointsOnly
            ? { paths: () => null, points: { show: true, size: 9, fill: s.color } }
            : { points: s.showPoints ? { show: true, size: 8, fill: s.color } : { show: false } }),
        })),
      ],
    };
    const u = new uPlot(opts, data as uPlot.AlignedData, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // rebuilt only when the layout changes; data goes through setData below
  }, [layout]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  useEffect(() => {
    // uPlot cannot redraw a plot that has never had data (its axes are not measured yet)
    if (data[0].length) plot.current?.redraw(false);
  }, [JSON.stringify(markers)]);

  const points = data[0].length;
  return (
    <figure className="chart" data-testid={props.testId} data-points={points} data-x-last={points ? data[0][points - 1] : undefined}>
      <figcaption>{title}</figcaption>
      <div ref={holder} className="chart-canvas" />
      {points === 0 && <p className="chart-empty">No data points yet.</p>}
    </figure>
  );
}
