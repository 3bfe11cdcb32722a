"""Benchmark: the HTML report of a 10,002-task run, rendered and opened in headless Chromium.

The run is synthetic (no SLURM needed): prepare → a 10,000-task GPU sweep, where every
hundredth task was requeued once and every thousandth failed → evaluate (upstream failed),
with sacct-like allocations. The bench prints the time to render the HTML in Python, the
file's size, the time the page's own script took in Chromium (timeline drawn, first page
of the table built: `data-render-ms`), and the whole `chromium --dump-dom` process's wall
time. Figures only: nothing is asserted (the issue's budget: under 3 s and under 5 MB).

    .venv/bin/python bench/report.py [--tasks N] [--screenshot out.png]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcml.clients.slurm import UsageRow
from hpcml.render.report import render
from hpcml.run.trace import Attempt, ImageInfo, RunTrace, StepInfo, TaskTrace

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def synthetic(n: int) -> RunTrace:
    """prepare → sweep of `n` GPU tasks (2 GPUs, so they run two at a time) → evaluate."""
    t0 = 1_800_000_000.0
    tasks = [TaskTrace("prepare", 0, "p" * 64, {}, "completed", "", 0, "100", t0,
                       (Attempt(1, t0 + 2, t0 + 30, "gpu01", "100", (), 0),),
                       (UsageRow("100", None, "COMPLETED", 0, t0, t0 + 2, t0 + 30, 28, 2, 0, "gpu01", 1 << 28, "1G"),))]
    for i in range(n):
        start = t0 + 30 + (i // 2) * 20
        end = start + 15 + i % 5
        attempts = [Attempt(1, start, end, f"gpu{i % 8:02d}", f"101_{i}", (str(i % 2),), 0 if i % 1000 else 3)]
        allocs = [UsageRow("101", i, "COMPLETED", 0, t0, start, end, int(end - start), 4, 1, f"gpu{i % 8:02d}", 3 << 30, "16G")]
        state = "completed"
        if i % 100 == 7:  # requeued once, resumed later
            attempts[0] = Attempt(1, start, end, attempts[0].node, f"101_{i}", ("0",), 140)
            attempts.append(Attempt(2, end + 160, end + 170, "gpu03", f"101_{i}", ("1",), 0))
            allocs.insert(0, UsageRow("101", i, "REQUEUED", 0, t0, start, end, int(end - start), 4, 1, "gpu03", None, "16G"))
        if i % 1000 == 0:
            state = "failed"
        tasks.append(TaskTrace("sweep", i, f"{i:064x}", {"lr": 10 ** -(1 + i % 4), "seed": i}, state,
                               "exit 3" if state == "failed" else "", 3 if state == "failed" else 0, f"101_{i}", t0,
                               tuple(attempts), tuple(allocs),
                               "Traceback (most recent call last):\n  ...\nFloatingPointError: loss is nan" if state == "failed" else ""))
    tasks.append(TaskTrace("evaluate", 0, "e" * 64, {}, "upstream_failed", "", None, "102", t0, (), ()))
    steps = (StepInfo("prepare", (), "torch", "k" * 64, 1), StepInfo("sweep", ("prepare",), "torch", "k" * 64, n),
             StepInfo("evaluate", ("sweep",), "torch", "k" * 64, 1))
    end = max(t.end or 0 for t in tasks)
    return RunTrace("20270115-080000-abcd", "cifar-sweep", "slurm", True, end, steps, tuple(tasks),
                    (ImageInfo("torch", "k" * 64, "s" * 64, "2027-01-15T07:00:00Z", "login1", "ana", 312.0, "1.3.4"),),
                    {"hpcml": "0.1.0", "executor": "slurm"}, "hpcml: 1\nname: cifar-sweep\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the page")
    args = parser.parse_args()
    tr = synthetic(args.tasks)
    t = time.perf_counter()
    html = render(tr)
    render_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        print(f"tasks: {len(tr.tasks)}; HTML: {len(html.encode()) / 2**20:.2f} MiB; rendered in Python in {render_s:.2f} s")
        browser = shutil.which("chromium")
        if browser is None:
            print("chromium not installed: no browser figures (slurm/testbed/up installs it)")
            return
        t = time.perf_counter()
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t
        ms = re.search(r'data-render-ms="(\d+)"', done.stdout)
        rows = len(re.findall(r"<tr data-task=", done.stdout))
        print(f"chromium: page script {int(ms.group(1)) / 1000 if ms else float('nan'):.2f} s "
              f"(timeline + first {rows} table rows); whole process (start, parse, script, dump) {wall:.2f} s")
        if args.screenshot:
            subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile2", "--window-size=1280,1500",
                            f"--screenshot={args.screenshot.resolve()}", page.as_uri()], capture_output=True, timeout=300)
            print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    sys.exit(main())
