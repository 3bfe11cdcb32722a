"""What a user does to a run once it is submitted: cancel it, read or follow its logs, list
the runs of a directory; and what an interrupted `hpcml run` leaves behind.

Example:

    run_id, jobs = cancel(RunDir.for_workflow("workflow.yaml"))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcml.config import Settings
from hpcml.errors import RunInterrupted, StateError
from hpcml.executors.base import Executor
from hpcml.results import RunSummary
from hpcml.run.durable import atomic_write
from hpcml.run.journal import read_journal
from hpcml.run.rundir import RunDir
from hpcml.run.status import executor_of, load_run, resolve_run, status
from hpcml.run.tasks import ACTIVE, FAILED, derive_state, read_exit_code, read_task_files
from hpcml.render.protocol import TASK_LOG


def cancel(run_dir: RunDir, run: str | None = None, executor: Executor | None = None, settings: Settings | None = None) -> tuple[str, list[str]]:
    """Cancel every job of a run with one call; returns (run id, job ids cancelled)."""
    run_id = resolve_run(run_dir, run)
    rec = load_run(run_dir, run_id)
    executor = executor or executor_of(rec, settings)
    # A task with an exit code has ended (failed ones too): its job is not cancelled, and a
    # run with nothing left is not marked cancelled (its failures stay failures).
    task_dirs = {t.key: run_dir.task(step.name, t.key) for step, t in rec.plan.tasks()}
    unfinished = {ref for key, ref in rec.refs.items() if read_exit_code(task_dirs[key]) is None}
    # An array this run submitted is cancelled by its job id, one word for all its tasks
    # (3,000 task ids made a 29 KB scancel line); tasks it adopted from another run's
    # array only one by one, since the rest of that array is not this run's.
    adopted = set(rec.plan.adopted.values())
    job_ids = sorted({ref if ref in adopted else ref.partition("_")[0] for ref in unfinished})
    # Its own build jobs of images not yet published; not another run's (adopted), which
    # that run still waits for.
    job_ids += [str(b["job_id"]) for b in rec.builds if not b.get("adopted") and not os.path.exists(str(b.get("sif", "")))]
    if not job_ids:
        return run_id, []
    atomic_write(run_dir.run(run_id).root / "cancelled", time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    executor.cancel(job_ids)
    return run_id, job_ids


def interrupted(run_dir: RunDir, run_id: str | None, ex: Executor, jobs: int) -> RunInterrupted:
    """The error for a run interrupted after submitting `jobs` jobs. An executor that is not
    detached (local) cannot keep its tasks once `hpcml run` ends: they are cancelled here."""
    cancelled = False
    if jobs and run_id is not None and not ex.detached:
        cancel(run_dir, run_id, ex)
        cancelled = True
    return RunInterrupted(submitted=jobs, executor=ex.name, tasks_cancelled=cancelled, run_id=run_id)


#: `hpcml logs image:NAME`: the build job's output instead of a task's log.
IMAGE_PREFIX = "image:"


def task_logs(run_dir: RunDir, target: str, run: str | None = None) -> list[tuple[str, Path]]:
    """(label, log path) of `STEP` (all its tasks) or `STEP/INDEX` in a run (default latest),
    or of the build job of `image:NAME` (build_on = "slurm")."""
    run_id = resolve_run(run_dir, run)
    rec = load_run(run_dir, run_id)
    if target.startswith(IMAGE_PREFIX):
        image = target[len(IMAGE_PREFIX):]
        found = [b for b in rec.builds if b["image"] == image]
        if not found:
            built = ", ".join(str(b["image"]) for b in rec.builds) or "none (its images were in a catalog, or built here)"
            raise StateError(f"run {run_id} has no build job of image {image!r}; build jobs: {built}")
        return [(target, Path(str(found[-1]["output"])))]
    name, _, index = target.partition("/")
    step = rec.plan.step(name)
    if step is None:
        raise StateError(f"no step {name!r} in run {run_id}; steps: {', '.join(s.name for s in rec.plan.steps)}")
    tasks = step.tasks
    if index:
        tasks = tuple(t for t in tasks if str(t.index) == index)
        if not tasks:
            raise StateError(f"step {name} has no task {index!r}; tasks: 0..{len(step.tasks) - 1}")
    return [(f"{name}/{t.index}", run_dir.task(name, t.key) / TASK_LOG) for t in tasks]


def history(run_dir: RunDir) -> list[RunSummary]:
    """Every run of this directory (of its workflow file, if named by one), oldest first."""
    out = []
    for run_id in run_dir.workflow_runs():
        try:
            rec = load_run(run_dir, run_id)
        except StateError:
            continue
        finished = [r for r in read_journal(run_dir.run(run_id).journal) if r["event"] == "finished"]
        counts: dict[str, int]
        preempted = 0
        if finished:
            counts = dict(finished[-1].get("counts", {}))
            preempted = int(finished[-1].get("preempted", 0))
        else:
            # Not watched to the end: only the files speak (no executor is asked here).
            rest = "cancelled" if rec.cancelled else "unfinished"
            counts = {}
            for step, t in rec.plan.tasks():
                files = read_task_files(run_dir.task(step.name, t.key))
                label = rest if files.exit_code is None else derive_state(files, cached=t.key in rec.plan.cached)[0]
                counts[label] = counts.get(label, 0) + 1
                preempted += files.preempted
        n = sum(len(s.tasks) for s in rec.plan.steps)
        out.append(RunSummary(run_id, rec.plan.workflow, rec.executor, n, counts, bool(finished), preempted))
    return out


def follow_task_log(
    run_dir: RunDir,
    target: str,
    run: str | None,
    write: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    settings: Settings | None = None,
) -> None:
    """Write the log of one task (`STEP/INDEX`, or a step of one task) and what is appended
    to it until the task is no longer pending, running or requeued."""
    run_id = resolve_run(run_dir, run)
    found = task_logs(run_dir, target, run_id)
    if len(found) != 1:
        raise StateError(f"--follow needs one task: STEP/INDEX (step {target} has {len(found)} tasks)")
    label, path = found[0]
    executor = executor_of(load_run(run_dir, run_id), settings)

    def done() -> bool:
        st = status(run_dir, run_id, executor)
        if label.startswith(IMAGE_PREFIX):
            return any(i.state not in ("pending", "building") for i in st.images if f"{IMAGE_PREFIX}{i.image}" == label)
        return any(t.state not in ACTIVE for t in st.tasks if f"{t.step}/{t.index}" == label)

    follow(path, done, write, sleep)


def follow(path: Path, done: Callable[[], bool], write: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Write `path` and keep writing what is appended until `done()` (like tail -f)."""
    pos = 0
    while True:
        finished = done()
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except FileNotFoundError:
            chunk = ""
        if chunk:
            write(chunk)
        if finished:
            return
        sleep(1.0)


@dataclass(frozen=True)
class RetryTarget:
    """What `hpcml retry` resubmits: the run's workflow file, its executor, and the keys of
    the tasks of that run that ended without completing (failed, timed out, cancelled, lost,
    left behind by a failure upstream …)."""

    run_id: str
    workflow: str
    executor: str
    keys: frozenset[str]
    labels: tuple[str, ...]  # `train/3`, for messages


def retry_target(run_dir: RunDir, run: str | None = None, settings: Settings | None = None) -> RetryTarget:
    """The tasks of `run` (default: the latest) to retry, from one status round; StateError
    when the run still has tasks queued or running, or none to retry."""
    st = status(run_dir, run, settings=settings)
    rec = load_run(run_dir, st.run_id)
    active = [t for t in st.tasks if t.state in ACTIVE]
    if active:
        raise StateError(f"run {st.run_id} still has {len(active)} task(s) queued or running; wait for them "
                         f"(`hpcml status --watch {st.run_id}`) or cancel them (`hpcml cancel {st.run_id}`) first")
    bad = [t for t in st.tasks if t.state in FAILED]
    if not bad:
        raise StateError(f"run {st.run_id}: nothing to retry (every task completed)")
    return RetryTarget(st.run_id, rec.plan.path, rec.executor, frozenset(t.key for t in bad),
                       tuple(f"{t.step}/{t.index}" for t in bad))
