"""Reconciliation before submitting: which tasks are still live in a job of an earlier run.

Jobs are found by name (`hpcml.<workflow>.<run>.<step>[.<chunk>]`, one query), and mapped to
task keys through that run's manifests and journal, so a run killed between sbatch and its
journal record is still found and depended on instead of submitted twice.
"""

from __future__ import annotations

from collections.abc import Callable

from hpcml.clients.runner import Runner
from hpcml.clients.slurm import Slurm
from hpcml.config import Settings
from hpcml.errors import SubmitError
from hpcml.executors.base import Executor
from hpcml.executors.choose import make_executor
from hpcml.render import jobs as _jobs
from hpcml.run.journal import read_journal
from hpcml.run.rundir import RunDir


def live_tasks(ex: Executor, run_dir: RunDir, workflow: str) -> dict[str, str]:
    """Task key → job ref of every live task of this workflow (one squeue call)."""
    return reconcile(ex, run_dir, workflow)[0]


def reconcile(ex: Executor, run_dir: RunDir, workflow: str) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """`live_tasks`, and for each live array job the keys of all the tasks it was submitted
    with (from its run's journal and manifest): a downstream job may wait for the whole
    array (`afterok:123`, one word) instead of each task (`afterok:123_0:…:123_2999`) when
    every one of them is live or complete. One squeue call."""
    live = ex.live_jobs(f"hpcml.{workflow}.")
    if not live:
        return {}, {}
    out: dict[str, str] = {}
    arrays: dict[str, frozenset[str]] = {}
    manifests: dict[tuple[str, str], dict[int, str]] = {}
    offsets: dict[str, dict[tuple[str, int | None], int]] = {}
    indices: dict[str, dict[tuple[str, int | None], list[int]]] = {}
    for job in live:
        parsed = _jobs.parse_job_name(job.name)
        if parsed is None or parsed[0] != workflow:
            continue
        _wf, run_id, step, chunk = parsed
        paths = run_dir.run(run_id)
        if (run_id, step) not in manifests:
            try:
                manifests[(run_id, step)] = _jobs.parse_manifest(paths.manifest(step).read_text())
            except OSError:
                manifests[(run_id, step)] = {}  # a job of another directory's run: not ours
        if run_id not in offsets:
            intents = [r for r in read_journal(paths.journal) if r["event"] == "intent"]
            offsets[run_id] = {(r["step"], r.get("chunk")): int(r.get("offset", 0)) for r in intents}
            indices[run_id] = {(r["step"], r.get("chunk")): [int(i) for i in r.get("indices", [])] for r in intents}
        offset = offsets[run_id].get((step, chunk), 0)
        index = offset + (job.array_task or 0)
        key = manifests[(run_id, step)].get(index)
        if key is not None:
            out.setdefault(key, job.ref)
        if job.array_task is not None and job.job_id not in arrays:
            members = [manifests[(run_id, step)].get(i) for i in indices[run_id].get((step, chunk), [])]
            if members and None not in members:
                arrays[job.job_id] = frozenset(k for k in members if k is not None)
    return out, arrays


def refuse_if_queued_on_slurm(
    run_dir: RunDir, workflow: str, settings: Settings, runner: Runner | None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Another executor must not take tasks that SLURM still holds: they would run twice.
    A controller that does not answer now is waited for (up to `slurm_wait_s`), never taken
    for "nothing is queued": only SLURM gone from this machine (no sbatch, no configuration)
    lets the tasks go without asking."""
    on_slurm = [r for r in run_dir.run_ids() if any(
        rec.get("event") == "run" and rec.get("executor") == "slurm" for rec in read_journal(run_dir.run(r).journal))]
    if not on_slurm or Slurm(runner).controller()[0] in ("absent", "unconfigured"):
        return
    live = live_tasks(make_executor("slurm", settings, runner, say), run_dir, workflow)
    if live:
        raise SubmitError(
            f"{len(live)} task(s) of workflow {workflow} are still queued or running on SLURM (run "
            f"{on_slurm[-1]}); a task taken by two executors would run twice: wait for them "
            "(`hpcml status`), cancel them (`hpcml cancel`), or run with --executor slurm"
        )
