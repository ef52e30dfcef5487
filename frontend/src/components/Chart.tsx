// A uPlot chart as a React component. uPlot draws to a canvas and copes with 50,000-point series;
// the plot is built once per series layout and new data only goes through setData(), so live
// updates do not rebuild it. Vertical markers (the loss spike, the stage transition) are drawn by
// a small plugin on top of the series.
//
// Charts over steps get integer ticks, and charts that share an x axis (the same xLabel) share
// the cursor: hovering step 120 on one shows step 120 on all of them. Line charts offer
// smoothing (a debiased moving average, as TensorBoard draws it) and a log y axis.

import { useEffect, useMemo, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { type Aligned, INTEGER_INCREMENTS, smoothAligned } from "../lib/series";

const SMOOTHING = 0.8;

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
  /** format of the y axis ticks, when shorter than formatY (the learning rate's) */
  formatYTick?: (v: number) => string;
  /** x is a whole number (steps); default: when xLabel is "step" */
  integerX?: boolean;
  /** no smoothing and log-scale controls (scatter plots, charts of a fixed shape) */
  plain?: boolean;
  testId?: string;
}

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

export function Chart(props: ChartProps) {
  const { title, data, series, xLabel = "step", yLabel, markers = [], height = 260 } = props;
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const markerRef = useRef<Marker[]>(markers);
  markerRef.current = markers;
  const [smooth, setSmooth] = useState(false);
  const [logScale, setLogScale] = useState(false);
  const logY = props.logY || logScale;
  const integerX = props.integerX ?? xLabel === "step";
  const shown = useMemo(() => (smooth ? smoothAligned(data, SMOOTHING) : data), [data, smooth]);
  const layout = JSON.stringify([
    series,
    xLabel,
    yLabel,
    height,
    logY,
    props.logX,
    props.xRange,
    props.xTicks,
  ]);

  useEffect(() => {
    const el = holder.current;
    if (!el) return;
    const fmt = props.formatY;
    const tick = props.formatYTick ?? fmt;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      plugins: [markerPlugin(markerRef)],
      cursor: { focus: { prox: 16 }, sync: { key: `x:${xLabel}` } },
      legend: { live: true },
      scales: {
        x: { time: false, distr: props.logX ? 3 : 1, ...(props.xRange ? { range: props.xRange } : {}) },
        y: { distr: logY ? 3 : 1 },
      },
      axes: [
        {
          label: xLabel,
          stroke: "#5b6472",
          grid: { stroke: "#eef0f3" },
          ...(integerX && !props.xTicks ? { incrs: INTEGER_INCREMENTS } : {}),
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
          values: tick ? (_u, vals) => vals.map((v) => (v === null ? "" : tick(v))) : undefined,
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
    const u = new uPlot(opts, shown as uPlot.AlignedData, el);
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
    plot.current?.setData(shown as uPlot.AlignedData);
  }, [shown]);

  useEffect(() => {
    // uPlot cannot redraw a plot that has never had data (its axes are not measured yet)
    if (data[0].length) plot.current?.redraw(false);
  }, [JSON.stringify(markers)]);

  const points = data[0].length;
  return (
    <figure
      className="chart"
      data-testid={props.testId}
      data-points={points}
      data-smoothed={smooth}
      data-log-y={logY}
    >
      <figcaption>
        {title}
        {!props.plain && (
          <span className="chart-controls">
            <label>
              <input type="checkbox" checked={smooth} onChange={(e) => setSmooth(e.target.checked)} />
              smooth
            </label>
            {!props.logY && (
              <label>
                <input type="checkbox" checked={logScale} onChange={(e) => setLogScale(e.target.checked)} />
                log y
              </label>
            )}
          </span>
        )}
      </figcaption>
      <div ref={holder} className="chart-canvas" />
      {points === 0 && <p className="chart-empty">No data points yet.</p>}
    </figure>
  );
}
