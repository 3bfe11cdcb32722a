"""The state of a run: which run is meant, what its plan and journal say, one polling round
(`status`), and following it to the end (`watch`).

Example:

    st = status(RunDir.for_workflow("workflow.yaml"))
    st.counts    # {"completed": 3, "running": 2}
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcml import config
from hpcml.config import Settings
from hpcml.errors import StateError
from hpcml.executors.base import Executor
from hpcml.executors.choose import make_executor
from hpcml.render.buildjob import STARTED
from hpcml.results import ImageJobState, RunStatus
from hpcml.run import planfile
from hpcml.run.journal import Journal, read_journal
from hpcml.run.planfile import PlanFile
from hpcml.run.rundir import RunDir
from hpcml.run.tasks import DONE_OK, FAILED, RUNNING_STATES, JobRecord, TaskState, derive_state, read_task_files

if TYPE_CHECKING:
    from hpcml.run.submit import RunStarted

log = logging.getLogger(__name__)


def resolve_run(run_dir: RunDir, run: str | None) -> str:
    """The run id asked for (a unique prefix is enough), or the latest run (of the workflow
    file the run directory was named by, if it was)."""
    ids = run_dir.workflow_runs()
    if not ids:
        where = f"of {run_dir.workflow_file} " if run_dir.workflow_file else ""
        raise StateError(
            f"no runs {where}in {run_dir.path}; start one with `hpcml run WORKFLOW`, or name the workflow's "
            "directory with -C DIR (or --workflow FILE)"
        )
    if run is None:
        return ids[-1]
    matches = [r for r in ids if r.startswith(run)]
    if len(matches) != 1:
        what = "no run" if not matches else "several runs"
        raise StateError(f"{what} matching {run!r} in {run_dir.path}; runs: {', '.join(ids[-5:])}")
    return matches[0]


@dataclass(frozen=True)
class RunRecord:
    """What a run's files say of it: its plan, executor, each task's job, and whether the
    user cancelled it."""

    plan: PlanFile
    executor: str
    refs: dict[str, str]  # task key → job ref
    cancelled: bool
    builds: tuple[dict[str, Any], ...] = ()  # the journal's `build` records (run/buildjobs.py)


def load_run(run_dir: RunDir, run_id: str) -> RunRecord:
    """Read a run's plan.json (through the typed loader) and its journal; StateError when
    the plan cannot be read or was written by a newer hpcml."""
    paths = run_dir.run(run_id)
    plan = planfile.load(paths.plan, run_id)
    keys_by_step = {s.name: {t.index: t.key for t in s.tasks} for s in plan.steps}
    array = {s.name: s.array for s in plan.steps}
    refs: dict[str, str] = dict(plan.adopted)
    executor = "slurm"
    intents: dict[tuple[str, int | None], list[int]] = {}  # (step, chunk) → task indices
    builds: list[dict[str, Any]] = []
    for r in read_journal(paths.journal):
        if r["event"] == "build":
            builds.append(r)
        elif r["event"] == "run":
            executor = r.get("executor", executor)
        elif r["event"] == "intent":
            intents[(r["step"], r.get("chunk"))] = list(r.get("indices", []))
        elif r["event"] == "submitted":
            for index in intents.get((r["step"], r.get("chunk")), []):
                key = keys_by_step[r["step"]][index]
                refs[key] = f"{r['job_id']}_{index - int(r.get('offset', 0))}" if array[r["step"]] else r["job_id"]
    return RunRecord(plan, executor, refs, (paths.root / "cancelled").exists(), tuple(builds))


def executor_of(rec: RunRecord, settings: Settings | None, on_message: Callable[[str], None] | None = None) -> Executor:
    """The executor that ran `rec`, made from `settings` (default: the configuration);
    `on_message` gets its notes (SLURM: waiting for a controller that does not answer)."""
    return make_executor(rec.executor, settings or config.load(), on_message=on_message)


def status(run_dir: RunDir, run: str | None = None, executor: Executor | None = None, settings: Settings | None = None,
           on_message: Callable[[str], None] | None = None) -> RunStatus:
    """The state of every task of a run (default: the latest) from one observation round."""
    run_id = resolve_run(run_dir, run)
    rec = load_run(run_dir, run_id)
    executor = executor or executor_of(rec, settings, on_message)
    build_ids = {str(b["job_id"]) for b in rec.builds}
    seen = executor.observe(sorted(set(rec.refs.values()) | build_ids)) if rec.refs or build_ids else None
    records = dict(seen.records) if seen else {}
    images = image_states(rec.builds, records, cancelled=rec.cancelled)
    failed_images = {i.image: i for i in images if i.state == "failed"}
    cached = rec.plan.cached
    states: dict[str, TaskState] = {}
    for step, t in rec.plan.tasks():
        files = read_task_files(run_dir.task(step.name, t.key))
        ref = rec.refs.get(t.key)
        record = records.get(ref) if ref else None
        # An upstream task never submitted (sbatch refused, or left out of a narrowed run)
        # did not fail: its downstream is "not submitted" too, not "upstream failed".
        bad_up = [states[u].state for u in t.upstream
                  if u in states and states[u].state in FAILED and states[u].state != "not_submitted"]
        # Downstream of tasks the user cancelled is cancelled too, not "upstream failed".
        up_failed = bool(bad_up) and not (rec.cancelled and set(bad_up) == {"cancelled"})
        state, detail = derive_state(
            files,
            cached=t.key in cached,
            submitted=ref is not None or t.key in cached,
            record=record,
            upstream_failed=up_failed,
            cancelled_by_user=rec.cancelled,
            causes_unknown=bool(seen and seen.note),
        )
        if step.image in failed_images and state not in DONE_OK and state != "running" and not rec.cancelled:
            # Its image was never built: SLURM cancels (or holds) the task; say why.
            bad = failed_images[step.image]
            state, detail = "image_failed", f"image {bad.image}, build job {bad.job}"
        states[t.key] = TaskState(step.name, t.index, t.key, state, files.exit_code, ref, detail, files.attempt,
                                  files.preempted)
    return RunStatus(run_id, rec.plan.workflow, rec.executor, tuple(states.values()), seen.accounting if seen else True,
                     images, (seen.note,) if seen and seen.note else ())


def image_states(builds: Sequence[Mapping[str, Any]], records: Mapping[str, JobRecord],
                 now: float | None = None, cancelled: bool = False) -> tuple[ImageJobState, ...]:
    """Each build job's state: pending, building (with the time since it started), done, or
    failed (its own failure or its parent's; with the last lines of its output), or
    cancelled when the user cancelled the run. Builds are journaled parents first, so a
    parent's state is known before its child's."""
    now = time.time() if now is None else now
    out: dict[str, ImageJobState] = {}
    for b in builds:
        name, job, log = str(b["image"]), str(b["job_id"]), str(b.get("output", ""))
        record = records.get(job)
        published = os.path.exists(str(b.get("sif", "")))
        elapsed = None
        if record is not None and record.state == "PENDING" and not published:
            state, detail = "pending", record.reason
        elif record is not None and record.state in RUNNING_STATES:
            state, detail = "building", ""
            started = build_started(log)
            elapsed = None if started is None else max(0.0, now - started)
        elif published:
            state, detail = "done", ""
        elif cancelled and not b.get("adopted"):
            state, detail = "cancelled", "hpcml cancel"
        else:
            state = "failed"
            parent = out.get(str(b.get("parent") or ""))
            if parent is not None and parent.state == "failed":
                detail = f"its parent image {parent.image} failed to build"
            else:
                why = f"job state {record.state}" if record is not None else "the job ended without publishing it"
                detail = f"{why}\n{log_tail(log)}".rstrip()
        out[name] = ImageJobState(name, str(b["key"]), job, state, log, elapsed, detail, bool(b.get("adopted")))
    return tuple(out.values())


def build_started(log: str) -> float | None:
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return None
    try:
        return float(first[len(STARTED):]) if first.startswith(STARTED) else None
    except ValueError:
        return None


def log_tail(log: str, lines: int = 15) -> str:
    """The last lines of a build job's output ("" when there is none yet)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def watch(
    started: RunStarted,
    on_update: Callable[[RunStatus], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    min_s: float | None = None,
    max_s: float = 30.0,
) -> RunStatus:
    """Poll until every task has ended, backing off while nothing changes.

    The pause starts at `min_s` (default: the executor's `poll_s`) and grows up to the
    smaller of `max_s` and the executor's `max_poll_s`."""
    st = _poll(started.run_dir, started.run_id, started.executor, on_update, sleep=sleep, min_s=min_s, max_s=max_s)
    if started.lock is not None:
        try:
            Journal(started.run_dir.run(started.run_id).journal).append("finished", counts=st.counts, ok=st.ok,
                                                                     preempted=st.preempted)
        except OSError as err:  # a full disk: the run is over all the same; `runs` says "not watched to the end"
            log.warning("could not record the end of run %s: %s", started.run_id, err)
    return st


def follow(
    run_dir: RunDir,
    run: str | None,
    on_update: Callable[[RunStatus], None],
    *,
    executor: Executor | None = None,
    settings: Settings | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_s: float = 30.0,
    on_message: Callable[[str], None] | None = None,
) -> RunStatus:
    """`hpcml status --watch`: follow a run (default: the latest) someone else submitted,
    detached or watched elsewhere, until every task has ended. Writes nothing."""
    run_id = resolve_run(run_dir, run)
    executor = executor or executor_of(load_run(run_dir, run_id), settings, on_message)
    return _poll(run_dir, run_id, executor, on_update, sleep=sleep, min_s=None, max_s=max_s)


def _poll(
    run_dir: RunDir,
    run_id: str,
    executor: Executor,
    on_update: Callable[[RunStatus], None],
    *,
    sleep: Callable[[float], None],
    min_s: float | None,
    max_s: float,
) -> RunStatus:
    floor = executor.poll_s if min_s is None else min_s
    delay = floor
    # Backing off spares slurmctld; looking at local processes costs nothing, so a local
    # run is not left waiting up to max_s after its last task ended.
    max_s = min(max_s, executor.max_poll_s)
    last: dict[str, int] | None = None
    while True:
        st = status(run_dir, run_id, executor)
        on_update(st)
        if st.finished:
            return st
        delay = floor if st.counts != last else min(delay * 1.5, max_s)
        last = st.counts
        sleep(delay)
