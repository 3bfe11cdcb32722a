"""Submission and polling cost of a 1,000-task sweep on the real SLURM cluster.

Prints: sbatch calls for the sweep (target 1: one job array), submission wall time, and
slurmctld RPCs per `hpcml status` round measured with `sdiag` (target: at most 2 per round,
whatever the number of tasks). The sweep is cancelled afterwards. Numbers include any
other client talking to slurmctld at the same time: run it on a quiet cluster.

    HPCML_EXEC_FLAGS=--userns HPCML_BUILD_FLAGS=--fakeroot .venv/bin/python bench/submit.py [--tasks 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from hpcml.run import control, submit
from hpcml.run import status as run_status
from hpcml.executors.slurm import SlurmExecutor
from hpcml.clients.runner import LocalRunner
from hpcml.run.rundir import RunDir
from sweeps import settings as sweep_settings
from sweeps import values, write_sweep

_RPC = re.compile(r"^\s+([A-Z_]+)\s+\(\s*\d+\)\s+count:(\d+)")


def rpc_counts() -> dict[str, int]:
    """slurmctld's RPC counters by message type (from `sdiag`)."""
    done = LocalRunner().run(["sdiag"], timeout=60)
    if not done.ok:
        raise SystemExit(f"sdiag failed: {done.tail()}")
    section = done.stdout.split("by message type", 1)[-1].split("by user", 1)[0]
    return {m.group(1): int(m.group(2)) for line in section.splitlines() if (m := _RPC.match(line))}


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-submit-") as tmp:
        root = Path(tmp)
        wf = write_sweep(root, "bench-submit", f"i: [{values(args.tasks)}]", "echo {i} > {out}/r", max_parallel=50)
        settings = sweep_settings(root)

        t0 = time.perf_counter()
        started = submit.start(wf, settings, executor="slurm")
        submit_s = time.perf_counter() - t0
        ex = started.executor
        assert isinstance(ex, SlurmExecutor)
        print(f"tasks: {args.tasks}")
        print(f"sbatch calls: {ex.sbatch_calls}")
        print(f"submission wall time (images, files, sbatch): {submit_s:.2f} s")

        per_round = []
        try:
            for _ in range(args.rounds):
                before = rpc_counts()
                t1 = time.perf_counter()
                st = run_status.status(RunDir(root / ".hpcml"), started.run_id, ex)
                took = time.perf_counter() - t1
                calls = diff(rpc_counts(), before)
                calls.pop("REQUEST_STATS_INFO", None)  # sdiag's own request
                per_round.append(sum(calls.values()))
                print(f"status round: {sum(calls.values())} slurmctld RPCs {calls}, {took:.2f} s, {st.counts}")
                time.sleep(2)
        finally:
            control.cancel(RunDir(root / ".hpcml"), started.run_id, ex)
            started.close()
        print(f"max slurmctld RPCs per polling round: {max(per_round)} (target <= 2)")


if __name__ == "__main__":
    sys.exit(main())
