"""Cost of `hpcml run --detach` and `hpcml status` for big sweeps on the real SLURM cluster,
and the CLI's start-up time.

For each size: submission wall time (workflow parse, plan, task files, sbatch; the image
is built before), then `hpcml status` and `hpcml status --json` as separate processes:
wall time, peak memory (max RSS) and the size of the JSON. The sweep is cancelled
right after. Also: `hpcml --help` and `hpcml status` in an empty directory (start-up cost).

    HPCML_EXEC_FLAGS=--userns HPCML_BUILD_FLAGS=--fakeroot .venv/bin/python bench/status.py [--tasks 2000 10000]  (multiples of 100)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcml.run import control, submit
from hpcml.run.rundir import RunDir
from sweeps import settings as sweep_settings
from sweeps import values, write_sweep

HPCML = str(Path(sys.executable).with_name("hpcml"))


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, stdout bytes) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by wait4
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, len(out)


def best(n: int, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    runs_ = [timed(argv, cwd, env) for _ in range(n)]
    return min(r[0] for r in runs_), max(r[1] for r in runs_), runs_[-1][2]


def sweep(tasks: int, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-status-") as tmp:
        root = Path(tmp)
        settings = sweep_settings(root)
        # A one-task run of the same image first: the image is built outside the timing.
        wf = write_sweep(root, "bench-status", "i: [-1], j: [-1]", "'true'", max_parallel=2)
        warm = submit.start(wf, settings, executor="slurm", detach=True)
        warm.close()
        control.cancel(RunDir(root / ".hpcml"), warm.run_id, warm.executor)
        cols = min(tasks, 100)
        write_sweep(root, "bench-status", f"i: [{values(tasks // cols)}], j: [{values(cols)}]", "'true'", max_parallel=2)
        t0 = time.perf_counter()
        started = submit.start(wf, settings, executor="slurm", detach=True)
        submit_s = time.perf_counter() - t0
        started.close()
        try:
            env = {**env, "HPCML_CATALOGS": str(root / "cat")}
            wall, rss, _ = best(3, [HPCML, "status"], root, env)
            jwall, jrss, size = best(3, [HPCML, "status", "--json"], root, env)
        finally:
            control.cancel(RunDir(root / ".hpcml"), started.run_id, started.executor)
        print(f"{tasks} tasks: run --detach {submit_s:.2f} s ({sum(map(len, started.jobs.values()))} sbatch); "
              f"status {wall:.2f} s, {rss:.0f} MiB; status --json {jwall:.2f} s, {jrss:.0f} MiB, {size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="*", default=[2000, 10000])
    args = parser.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-empty-") as empty:
        wall, rss, _ = best(5, [HPCML, "--help"], Path(empty), env)
        print(f"start-up: hpcml --help {wall * 1000:.0f} ms, {rss:.0f} MiB")
        wall, rss, _ = best(5, [HPCML, "status"], Path(empty), env)
        print(f"start-up: hpcml status (no runs) {wall * 1000:.0f} ms, {rss:.0f} MiB")
    for n in args.tasks:
        sweep(n, env)


if __name__ == "__main__":
    sys.exit(main())
