"""Preemption on the real testbed: partition `low` (PreemptMode=REQUEUE, GraceTime=20) gives
way to a job of partition `high`. One run holds a checkpointing task and a plain one, both
with `retries: 0`; a plain `sbatch -p high` that needs the whole node preempts both at once.
The checkpointing task saves, hands its allocation back, resumes from its checkpoint and
completes; the plain one is requeued by SLURM and runs again from scratch; neither spends a
retry, and status, `hpcml runs` and the report say "preempted ×1" rather than failed.
Both tasks share the one preemption, so the tier pays SLURM's requeue wait (~30 s) once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcml import api
from hpcml.config import Settings
from test_run_slurm import catalog, outs, ran, settings, write_workflow  # noqa: F401 - fixtures

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# `ckpt` counts seconds in `n` until the checkpoint signal (SLURM sends the job's own
# --signal at once on preemption), saves `n` and exits; run again, it resumes from `n`.
# `plain` never ends by itself the first time: only a rerun from scratch completes it.
STEPS = """\
  ckpt:
    resources: {partition: low}
    retries: 0
    checkpoint: {signal: USR1, grace: 15}
    run: |
      echo x >> {out}/ran
      if [ -f {out}/n ]; then echo "resuming at $(cat {out}/n)"; echo "resumed $(cat {out}/n)" > {out}/result; exit 0; fi
      n=0
      trap 'echo $n > {out}/n; echo "checkpoint at $n"; exit 99' USR1
      touch {out}/started
      while [ $n -lt 600 ]; do n=$((n+1)); sleep 1; done
  plain:
    resources: {partition: low}
    retries: 0
    run: |
      echo x >> {out}/ran
      touch {out}/started
      if [ "$(wc -l < {out}/ran)" -ge 2 ]; then echo again > {out}/result; exit 0; fi
      sleep 600
"""


def _sacct_states(cluster, job: str) -> list[str]:  # noqa: ANN001 - testbed.SlurmCluster
    """Every instance of `job` as accounting recorded it (`sacct -D`), oldest first."""
    done = cluster.run("sacct", "-X", "-D", "-n", "-P", "-j", job, "-o", "JobID,State")
    return [line.split("|")[1].split()[0] for line in done.stdout.splitlines() if line.split("|")[0] == job]


def _wait(what: str, ok, timeout: float, step: float = 1.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def test_preempted_tasks_are_requeued_resume_and_spend_no_retry(tmp_path: Path, settings: Settings,
                                                                 slurm_cluster) -> None:  # noqa: ANN001
    wf = write_workflow(tmp_path / "preempt", "preempt", STEPS)
    outcome = api.run(wf, executor="slurm", settings=settings, watch=False)
    task_out = {step: outs(wf, step)[0] for step in ("ckpt", "plain")}
    jobs = {step: outcome.jobs[step][0] for step in ("ckpt", "plain")}
    high = None
    try:
        _wait("both low tasks to start", lambda: all((o / "started").exists() for o in task_out.values()), 240)
        time.sleep(2)  # the checkpointing task counts a little before it is preempted
        # Needs both CPUs of the node: SLURM preempts both low jobs for it.
        high = slurm_cluster.sbatch("-p", "high", "-c", "2", "--mem=100M", "-J", "hpcml-test-high",
                                    "-o", str(tmp_path / "high.out"), "--wrap", "sleep 2")
        seen: list[str] = []

        def requeued_and_seen() -> bool:
            st = {t.step: t for t in api.status(workflow=str(wf), settings=settings).tasks}
            seen.extend(t.label for t in st.values())
            return all(t.state in ("requeued", "pending") and t.preempted == 1 for t in st.values())

        # While they wait to run again: requeued (preempted ×1), never failed or cancelled.
        _wait("both tasks requeued", requeued_and_seen, 120, step=0.5)
        assert not any(label.startswith(("failed", "cancelled", "preempted", "lost")) for label in seen), seen
        assert "requeued (preempted ×1)" in seen
        assert slurm_cluster.wait(high, timeout=180) == "COMPLETED"
        final = api.watch_status(workflow=str(wf), settings=settings, on_update=lambda _st: None)
    finally:
        if high is not None:
            slurm_cluster.run("scancel", high)
    states = {t.step: t for t in final.tasks}
    for step in ("ckpt", "plain"):
        t = states[step]
        assert t.state == "completed" and t.preempted == 1, t  # retries: 0, and still completed
        assert t.label == "completed (preempted ×1)"
        taskdir = task_out[step].parent
        assert (taskdir / "preempted").read_text() == "1\n"
        assert not (taskdir / "tries").exists()  # no retry spent
        assert t.attempt == 2
    assert final.ok and final.preempted == 2

    ckpt_log = (task_out["ckpt"].parent / "log").read_text()
    saved = int((task_out["ckpt"] / "n").read_text())
    assert saved > 0 and f"checkpoint at {saved}" in ckpt_log
    assert (task_out["ckpt"] / "result").read_text() == f"resumed {saved}\n"  # from its checkpoint
    assert ran(task_out["ckpt"]) == 2 and ran(task_out["plain"]) == 2  # the plain one from scratch
    assert (task_out["plain"] / "result").read_text() == "again\n"
    assert "SLURM is preempting or requeueing job" in ckpt_log and "retries untouched" in ckpt_log

    # Accounting: the checkpointing job handed its allocation back (REQUEUED); SLURM ended the
    # plain one at the end of GraceTime (PREEMPTED); each ran once more and completed.
    _wait("sacct's records", lambda: all(len(_sacct_states(slurm_cluster, j)) == 2 and
                                         _sacct_states(slurm_cluster, j)[-1] == "COMPLETED" for j in jobs.values()), 60)
    assert _sacct_states(slurm_cluster, jobs["ckpt"]) == ["REQUEUED", "COMPLETED"]
    assert _sacct_states(slurm_cluster, jobs["plain"]) == ["PREEMPTED", "COMPLETED"]

    # `hpcml status`, `hpcml runs` and the report say it too.
    cli = [sys.executable, "-m", "hpcml.cli"]
    table = subprocess.run([*cli, "status", "--workflow", str(wf)], capture_output=True, text=True, timeout=120)
    assert "completed (preempted ×1)" in table.stdout, table.stdout + table.stderr
    history = subprocess.run([*cli, "runs", "--workflow", str(wf)], capture_output=True, text=True, timeout=120)
    assert "preempted ×2" in history.stdout, history.stdout + history.stderr
    report = api.report(workflow=str(wf), output=tmp_path / "report.html", settings=settings)
    assert {t.label: t.preempted for t in report.trace.tasks} == {"ckpt/0": 1, "plain/0": 1}
    assert "ckpt/0 ×1" in (tmp_path / "report.html").read_text()
