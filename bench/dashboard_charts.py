"""How fast the dashboard's charts draw long runs: uPlot (the library frontend/src/components/
Chart.tsx wraps) in headless Debian Chromium, driven by Playwright.

For each series length it builds a chart of the job-detail page's loss panel (x = step, two loss
series with noise, 1 px lines, 1100 x 260 px), then times three things in the page itself with
performance.now(), from the call to uPlot's `draw` hook (uPlot draws in a microtask after the call):
  create   new uPlot(opts, data, el)         (first paint, what opening a job costs)
  update   setData() with one more step       (one live update from the SSE stream)
  cursor   setCursor() across 50 positions    (hovering: legend values follow the mouse)
The peer is 5,000 points: what the dashboard asks the API for (max_points=5000) on first load.

Usage: .venv/bin/python bench/dashboard_charts.py [--points 5000,50000,200000] [--repeats 7]
Needs frontend/node_modules (scripts/install.sh) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
UPLOT = REPO / "frontend" / "node_modules" / "uplot" / "dist"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

MEASURE = """
async ([n, repeats]) => {
  const steps = Array.from({length: n}, (_, i) => i + 1);
  const noise = (i, k) => Math.sin(i * 12.9898 + k) * 43758.5453 % 1;
  const target = steps.map(i => 3 + 6 / Math.sqrt(i) + 0.3 * noise(i, 1));
  const generic = steps.map(i => 3.5 + 4 / Math.sqrt(i) + 0.3 * noise(i, 2));
  let drawn = 0;  // uPlot draws in a microtask after create/setData; its draw hook ends the clock
  const opts = {width: 1100, height: 260, scales: {x: {time: false}},
    hooks: {draw: [() => { drawn = performance.now(); }]},
    series: [{label: "step"}, {label: "target", stroke: "#1c7ed6", width: 1},
             {label: "generic", stroke: "#f08c00", width: 1}]};
  const el = document.getElementById("c");
  const settle = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  const out = {create: [], update: [], cursor: []};
  for (let k = 0; k < repeats; k++) {
    el.innerHTML = "";
    drawn = 0;
    let t = performance.now();
    const u = new uPlot(opts, [steps, target, generic], el);
    await settle();
    out.create.push(drawn - t);
    const more = [[...steps, n + 1], [...target, 3], [...generic, 3.5]];
    drawn = 0;
    t = performance.now();
    u.setData(more);
    await settle();
    out.update.push(drawn - t);
    t = performance.now();
    for (let j = 0; j < 50; j++) u.setCursor({left: 20 + j * 20, top: 100});
    out.cursor.push((performance.now() - t) / 50);
    u.destroy();
    await settle();
  }
  return out;
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default="5000,50000,200000")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(x) for x in args.points.split(",")]
    results = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_content("<div id=c style='width:1100px'></div>")
        page.add_style_tag(path=str(UPLOT / "uPlot.min.css"))
        page.add_script_tag(path=str(UPLOT / "uPlot.iife.min.js"))
        version = browser.version
        for n in sizes:
            page.evaluate(MEASURE, [n, 1])  # warm-up: JIT, fonts
            runs = page.evaluate(MEASURE, [n, args.repeats])
            results[n] = {k: statistics.median(v) for k, v in runs.items()}
        browser.close()
    peer = results[sizes[0]]
    print(f"uPlot in headless Chromium {version}, median of {args.repeats} (ms)")
    print(f"{'points':>8} {'create':>8} {'update':>8} {'cursor':>8}  create/peer")
    for n, r in results.items():
        ratio = r["create"] / peer["create"]
        print(f"{n:>8} {r['create']:>8.1f} {r['update']:>8.1f} {r['cursor']:>8.2f}  {ratio:>6.1f}x")
    print(json.dumps({"chromium": version, "repeats": args.repeats, "ms": results}))


if __name__ == "__main__":
    main()
