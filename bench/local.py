"""Overhead of the local executor: a sweep of tiny tasks, and an idle wait.

Prints: wall time per task of a sweep of `true` tasks (each still starts a busybox
container), the CPU time hpcml's own process spent per task (scheduler, watch loop and
status rounds; the tasks' processes are not counted), and the CPU hpcml burns per second
while it only waits for one long task (target: close to 0 — no busy loop).

    HPCML_EXEC_FLAGS=--userns HPCML_BUILD_FLAGS=--fakeroot .venv/bin/python bench/local.py [--tasks 300] [--idle 10]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from hpcml.results import RunStatus
from hpcml.run import status as run_status
from hpcml.run import submit
from sweeps import settings as sweep_settings
from sweeps import values, write_sweep

def self_cpu() -> float:
    """CPU seconds of this process (all its threads), not of its children."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_once(root: Path, tasks: int, command: str) -> tuple[float, float, float, RunStatus]:
    """(wall of start, wall of start+watch, hpcml's own CPU seconds, final status)."""
    wf = write_sweep(root, "bench-local", f"i: [{values(tasks)}]", command)
    settings = sweep_settings(root)
    # Build the image first so that only the run is measured.
    submit.start(wf, settings, executor="local").close()
    for t in (root / ".hpcml" / "tasks").rglob("exitcode"):
        t.unlink()  # the warm-up ran the tasks: make them run again
    cpu0, t0 = self_cpu(), time.perf_counter()
    started = submit.start(wf, settings, executor="local")
    submit_s = time.perf_counter() - t0
    try:
        final = run_status.watch(started, on_update=lambda _s: None)
    finally:
        started.close()
    return submit_s, time.perf_counter() - t0, self_cpu() - cpu0, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds the idle task sleeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-local-") as tmp:
        for name in ("sweep", "idle"):
            (Path(tmp) / name).mkdir()
        submit_s, wall, cpu, final = run_once(Path(tmp) / "sweep", args.tasks, "'true'")
        print(f"sweep: {args.tasks} tasks, {final.counts}")
        print(f"submission (task files, scripts): {submit_s:.2f} s")
        print(f"wall time: {wall:.1f} s = {wall / args.tasks * 1000:.0f} ms per task")
        print(f"hpcml's own CPU: {cpu:.2f} s = {cpu / args.tasks * 1000:.1f} ms per task")
        _s, wall, cpu, final = run_once(Path(tmp) / "idle", 1, f"sleep {args.idle:g}")
        print(f"idle wait: {wall:.1f} s for one `sleep {args.idle:g}` task, hpcml's own CPU {cpu:.2f} s "
              f"= {cpu / wall * 100:.1f}% of one core ({final.counts})")


if __name__ == "__main__":
    sys.exit(main())
