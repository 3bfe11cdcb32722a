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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcml import config, runs
from hpcml.state import RunDir

WORKFLOW = """\
hpcml: 1
name: bench-status
images:
  bb:
    from: scratch
    shell: sh
    files: {{busybox: /bin/sh}}
defaults:
  image: bb
  resources: {{time: 5m, cpus: 1, mem: 50M}}
steps:
  sweep:
    matrix: {{i: [{rows}], j: [{cols}]}}
    max_parallel: 2
    run: 'true'
"""

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
        shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "busybox")
        wf = root / "workflow.yaml"
        settings = config.load({"catalogs": str(root / "cat"), "cache_dir": str(root / "cache")})
        # A one-task run of the same image first: the image is built outside the timing.
        wf.write_text(WORKFLOW.format(rows="-1", cols="-1"))
        warm = runs.start(wf, settings, executor="slurm", detach=True)
        warm.close()
        runs.cancel(RunDir(root / ".hpcml"), warm.run_id, warm.executor)
        # Two axes: a workflow may hold at most 10,000 values, and one axis of 10,000 is at that limit.
        cols = min(tasks, 100)
        wf.write_text(WORKFLOW.format(rows=", ".join(map(str, range(tasks // cols))), cols=", ".join(map(str, range(cols)))))
        t0 = time.perf_counter()
        started = runs.start(wf, settings, executor="slurm", detach=True)
        submit_s = time.perf_counter() - t0
        started.close()
        try:
            env = {**env, "HPCML_CATALOGS": str(root / "cat")}
            wall, rss, _ = best(3, [HPCML, "status"], root, env)
            jwall, jrss, size = best(3, [HPCML, "status", "--json"], root, env)
        finally:
            runs.cancel(RunDir(root / ".hpcml"), started.run_id, started.executor)
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
