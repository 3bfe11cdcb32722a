"""Time limits on the real SLURM testbed (with accounting): a checkpointing step is
signalled, requeues itself, resumes from its checkpoint and completes; a step without
checkpointing ends TIMEOUT and says so. Both run side by side to keep the tier short
(SLURM's requeue waits ~160 s before restarting a job; a 1-minute limit ends at ~80 s).
The same run carries the report's realistic example (a GPU sweep with a requeue and a
failure): its trace against sacct, and its HTML page in headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hpcml import api
from browser import dump_dom, read_report, screenshot
from hpcml.config import Settings
from test_run_slurm import catalog, outs, ran, settings, write_workflow  # noqa: F401 - fixtures

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# The first attempt works (counts seconds in `n`) until SLURM's checkpoint signal, saves
# `n` and exits; the requeued attempt resumes from `n` and finishes at once. slurmctld
# checks time limits every 30 s and sends `--signal=SIG@G` once the time left is below G +
# 30 s: with a 1-minute limit and 30 s grace that is at any time, also right as a requeued
# attempt starts (before its command can run: measured, twice in a row, spending the
# retries). With 2 minutes the signal comes 60-90 s into each attempt.
CHECKPOINTED = """\
  ckpt:
    resources: {time: 2m}
    retries: 2
    checkpoint: {signal: USR2, grace: 30}
    run: |
      if [ -f {out}/n ]; then
        echo "resuming at $(cat {out}/n)"
        echo x >> {out}/ran
        exit 0
      fi
      n=0
      echo "resuming at $n"
      trap 'echo $n > {out}/n; echo "checkpoint at $n"; exit 99' USR2
      while [ $n -lt 300 ]; do n=$((n+1)); sleep 1; done
"""

# The realistic example beside them, in the same run (a requeue costs ~2.5 minutes, so it
# shares this one): prepare → a GPU sweep where lr=1 checkpoints and is requeued and lr=2
# fails → evaluate (upstream failed). Its report is opened in headless Chromium. SLURM sends
# `--signal` from its 30 s time-limit sweep (see above): 2 minutes and 60 s grace put it
# 30-60 s into the attempt, and at least 60 s before the limit.
SWEEP = """\
  prepare:
    run: echo data > {out}/data.txt
  sweep:
    needs: [prepare]
    matrix: {lr: [1, 2, 3]}
    resources: {partition: gpu, gpus: 1, time: 2m}
    retries: 2
    checkpoint: {signal: USR2, grace: 60}
    run: |
      if [ {lr} = 2 ]; then echo "loss is nan at lr={lr}" >&2; exit 3; fi
      if [ {lr} = 1 ] && [ ! -f {out}/n ]; then
        trap 'echo 1 > {out}/n; echo "checkpoint"; exit 99' USR2
        n=0; while [ $n -lt 300 ]; do n=$((n+1)); sleep 1; done
      fi
      cat {in.prepare}/data.txt > {out}/r.txt
  evaluate:
    needs: [sweep]
    run: cat {in.sweep}/*/r.txt
"""

SLOW = """\
  slow:
    resources: {time: 1m}
    run: sleep 150; echo x >> {out}/ran
"""


def test_checkpoint_requeue_and_timeout(tmp_path: Path, settings: Settings) -> None:
    wf = write_workflow(tmp_path / "limits", "limits", CHECKPOINTED + SWEEP + SLOW)
    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=2)
    states = {t.step: t for t in outcome.status.tasks}
    check_report(wf, tmp_path)
    assert not outcome.ok  # slow timed out

    ckpt = states["ckpt"]
    assert ckpt.state == "completed", ckpt
    out = outs(wf, "ckpt")[0]
    log = (out.parent / "log").read_text()
    assert "checkpoint at" in log and "scontrol requeue" in log
    resumed = [int(l.split()[-1]) for l in log.splitlines() if l.startswith("resuming at")]
    saved = [int(l.split()[-1]) for l in log.splitlines() if l.startswith("checkpoint at")]
    assert resumed[0] == 0 and resumed[-1] == saved[-1], log  # the last attempt started from the checkpoint
    assert ran(out) == 1
    assert ckpt.attempt >= 2

    slow = states["slow"]
    assert slow.state == "timeout", slow
    assert ran(outs(wf, "slow")[0]) == 0


def sacct_gpu_hours(job_ids: set[str]) -> float:
    """Σ gres/gpu of AllocTRES × ElapsedRaw over every allocation (requeues included),
    read straight from sacct."""
    done = subprocess.run(
        ["sacct", "-X", "--duplicates", "-P", "-n", "-j", ",".join(sorted(job_ids)), "-o", "JobID,AllocTRES,ElapsedRaw"],
        capture_output=True, text=True, check=True,
    )
    total = 0
    for line in done.stdout.splitlines():
        _job, tres, elapsed = line.split("|")
        gpus = sum(int(part.split("=")[1]) for part in tres.split(",") if part.startswith("gres/gpu"))
        total += gpus * int(elapsed or 0)
    return total / 3600


def check_report(wf: Path, tmp_path: Path) -> None:
    """The report of the run: a trace joined with sacct, and the page in headless Chromium."""
    out = tmp_path / "report.html"
    # slurmdbd records a job's usage a moment after it ends: wait for it before reading.
    run_jobs = {t.job.split("_")[0] for t in api.status(workflow=str(wf)).tasks if t.job}
    for _ in range(60):
        if sacct_gpu_hours(run_jobs) > 0:
            break
        time.sleep(1)
    report = api.report(workflow=str(wf), output=out)
    tr = report.trace
    assert tr.accounting and not tr.missing
    tasks = {t.label: t for t in tr.tasks}
    assert tasks["sweep/1"].state == "failed" and tasks["evaluate/0"].state in ("upstream_failed", "cancelled")
    requeued = tasks["sweep/0"]
    assert requeued.state == "completed" and len(requeued.attempts) >= 2, requeued
    assert len(requeued.allocations) >= 2  # sacct keeps the requeued allocation
    outcomes = [s.outcome for s in requeued.segments(tr.now) if s.kind == "run"]
    assert outcomes[0] == "requeued" and outcomes[-1] == "ok"
    assert all(t.attempts[0].devices for t in tr.tasks if t.step == "sweep")
    jobs = {t.job.split("_")[0] for t in tr.tasks if t.job}
    assert tr.gpu_hours == pytest.approx(sacct_gpu_hours(jobs), abs=1e-9) and tr.gpu_hours > 0

    page = read_report(dump_dom(out))
    assert {task for task, _ in page.rows} == set(tasks)
    assert page.rows[0] == ("sweep/1", "failed") and page.failures[0] == "sweep/1"
    assert {task for task, _ in page.bars} == set(tasks)  # evaluate: queued until cancelled
    assert ("sweep/0", "requeued") in page.bars and ("sweep/1", "failed") in page.bars
    png = screenshot(out, tmp_path / "report.png")
    if os.environ.get("HPCML_ARTIFACTS"):  # kept for people (CI uploads it; docs/report.png)
        Path(os.environ["HPCML_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(os.environ["HPCML_ARTIFACTS"]) / "report.png")
        shutil.copy(out, Path(os.environ["HPCML_ARTIFACTS"]) / "report.html")
