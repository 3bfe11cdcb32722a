"""A run's trace: typed records of every task, attempt and allocation, for the report.

`build` joins what a run left (plan.json, the journal, each task's `attempts` file and log)
with one `status` round and, where the cluster has accounting, one sacct call
(`clients.slurm.Slurm.usage`): allocated TRES × elapsed give CPU- and GPU-hours. Without
accounting the figures come from the wrapper's own timestamps and devices, and `missing`
names the columns that cannot be known. `hpcml report --json` writes `RunTrace.as_dict()`.

Example:

    tr = collect(RunDir.for_workflow("workflow.yaml"), None)
    tr.gpu_hours, [t.state for t in tr.failures()]
"""

from __future__ import annotations

import getpass
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml import __version__
from hpcml.clients.apptainer import Apptainer
from hpcml.clients.runner import LocalRunner
from hpcml.clients.slurm import Slurm, UsageRow
from hpcml.errors import HpcmlError
from hpcml.render.protocol import TASK_ATTEMPTS, TASK_GPU_SAMPLES, TASK_LOG
from hpcml.run.journal import read_journal
from hpcml.run.tasks import DONE_OK, FAILED

if TYPE_CHECKING:
    from hpcml.clients.runner import Runner
    from hpcml.config import Settings
    from hpcml.results import RunStatus
    from hpcml.run.planfile import PlanFile
    from hpcml.run.rundir import RunDir

#: Version of the `hpcml report --json` document.
TRACE_FORMAT = 1
#: Lines of a failed task's log kept in the report (successful tasks keep none: a sweep of
#: 10,000 tasks must stay a small file).
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Attempt:
    """One run of a task's command, as its wrapper recorded it (Unix seconds)."""

    number: int
    start: float
    end: float | None  # None while running, or when the wrapper was killed
    node: str
    job: str
    devices: tuple[str, ...]
    exit_code: int | None
    signal: str = ""  # the signal that ended it (TERM, USR2, … or REQUEUED from sacct), if one did
    preempted: bool = False  # SLURM preempted it (the wrapper's `end … preempted`): it ran again


@dataclass(frozen=True)
class Segment:
    """One bar of the timeline: `queued` or `run`, with how a run ended
    (`ok`, `failed`, `requeued`, `running`)."""

    kind: str
    start: float
    end: float
    outcome: str = ""


@dataclass(frozen=True)
class TaskTrace:
    """Everything the report shows of one task."""

    step: str
    index: int
    key: str
    point: Mapping[str, Any]
    state: str
    detail: str
    exit_code: int | None
    job: str | None
    submitted: float | None
    attempts: tuple[Attempt, ...]
    allocations: tuple[UsageRow, ...]
    log_tail: str = ""
    gpu_samples: int = 0

    @property
    def label(self) -> str:
        return f"{self.step}/{self.index}"

    @property
    def start(self) -> float | None:
        """When the first attempt (or allocation) started."""
        starts = [a.start for a in self.attempts] + [u.start for u in self.allocations if u.start]
        return min(starts) if starts else None

    @property
    def end(self) -> float | None:
        ends = [a.end for a in self.attempts if a.end] + [u.end for u in self.allocations if u.end]
        return max(ends) if ends else None

    @property
    def queue_wait_s(self) -> float | None:
        """From submission to the first start (requeue waits not included)."""
        submitted = min([u.submit for u in self.allocations if u.submit] or [self.submitted or 0]) or None
        start = self.start
        return max(0.0, start - submitted) if start is not None and submitted is not None else None

    @property
    def elapsed_s(self) -> float | None:
        """Seconds the task held an allocation (sacct), or ran (the wrapper's timestamps)."""
        if self.allocations:
            return float(sum(u.elapsed_s for u in self.allocations))
        done = [a for a in self.attempts if a.end is not None]
        return float(sum(a.end - a.start for a in done if a.end is not None)) if done else None

    @property
    def gpu_hours(self) -> float:
        """Allocated GPUs × elapsed (sacct), else devices seen by the wrapper × run time."""
        if self.allocations:
            return sum(u.gpus * u.elapsed_s for u in self.allocations) / 3600
        return sum(len(a.devices) * (a.end - a.start) for a in self.attempts if a.end is not None) / 3600

    @property
    def cpu_hours(self) -> float | None:
        """Allocated CPUs × elapsed; None without accounting (the wrapper cannot know)."""
        if not self.allocations:
            return None
        return sum(u.cpus * u.elapsed_s for u in self.allocations) / 3600

    @property
    def max_rss(self) -> int | None:
        values = [u.max_rss for u in self.allocations if u.max_rss is not None]
        return max(values) if values else None

    @property
    def req_mem(self) -> str:
        return self.allocations[-1].req_mem if self.allocations else ""

    @property
    def node(self) -> str:
        return self.attempts[-1].node if self.attempts else (self.allocations[-1].node if self.allocations else "")

    @property
    def devices(self) -> tuple[str, ...]:
        return self.attempts[-1].devices if self.attempts else ()

    @property
    def preempted(self) -> int:
        """How many times SLURM preempted the task: sacct's PREEMPTED allocations where there
        is accounting, the wrapper's preempted attempts otherwise (the larger count: a
        preempted checkpointing job hands its allocation back with a requeue, which sacct
        records as REQUEUED)."""
        return max(sum(1 for a in self.attempts if a.preempted),
                   sum(1 for u in self.allocations if u.state == "PREEMPTED"))

    def segments(self, now: float) -> tuple[Segment, ...]:
        """The task's timeline bars: queued from submission, each attempt, the wait for a
        requeue between attempts, and a live task's bar up to `now`."""
        out: list[Segment] = []
        last = self.submitted
        # Without the wrapper's records (it never started, or its files are gone) SLURM's
        # allocations stand in; one that never ran (cancelled while pending: no elapsed
        # time) ends the queued bar instead.
        runs = self.attempts or tuple(
            Attempt(i + 1, u.start, u.end, u.node, u.ref, (), u.exit_code, "REQUEUED" if u.state == "REQUEUED" else "")
            for i, u in enumerate(self.allocations)
            if u.start and u.elapsed_s > 0
        )
        if not runs and last is not None:
            # Queued until SLURM ended the job (cancelled while pending), or still queued
            # now: a job whose dependency can never be met stays pending a while after
            # status already calls its task "upstream failed".
            ends = [u.end for u in self.allocations if u.end]
            waiting = self.state in ("pending", "requeued") or bool(self.allocations)
            end = max(ends) if ends else (now if waiting else None)
            return (Segment("queued", last, end),) if end is not None and end >= last else ()
        for n, a in enumerate(runs):
            if last is not None and a.start > last:
                out.append(Segment("queued", last, a.start))
            end = a.end if a.end is not None else (now if self.state == "running" else a.start)
            if a.end is None and self.state == "running":
                outcome = "running"
            elif a.exit_code == 0:
                outcome = "ok"
            elif (n + 1 < len(runs) or self.state in ("requeued", "pending")) and (a.signal or a.preempted):
                # Ended by a signal and run again: requeued (a plain failure retried in its
                # allocation stays a failed attempt).
                outcome = "requeued"
            else:
                outcome = "failed"
            out.append(Segment("run", a.start, end, outcome))
            last = end
        if self.state in ("pending", "requeued") and last is not None and now > last:
            out.append(Segment("queued", last, now))
        return tuple(out)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "step": self.step,
            "index": self.index,
            "key": self.key,
            "point": dict(self.point),
            "state": self.state,
            "detail": self.detail,
            "exit_code": self.exit_code,
            "job": self.job,
            "submitted": self.submitted,
            "start": self.start,
            "end": self.end,
            "queue_wait_s": self.queue_wait_s,
            "elapsed_s": self.elapsed_s,
            "cpu_hours": self.cpu_hours,
            "gpu_hours": self.gpu_hours,
            "node": self.node,
            "devices": list(self.devices),
            "max_rss": self.max_rss,
            "req_mem": self.req_mem,
            "gpu_samples": self.gpu_samples,
            "preempted": self.preempted,
            "attempts": [
                {"number": a.number, "start": a.start, "end": a.end, "node": a.node, "job": a.job,
                 "devices": list(a.devices), "exit_code": a.exit_code, "signal": a.signal, "preempted": a.preempted}
                for a in self.attempts
            ],
            "allocations": [
                {"job": u.ref, "state": u.state, "submit": u.submit, "start": u.start, "end": u.end,
                 "elapsed_s": u.elapsed_s, "cpus": u.cpus, "gpus": u.gpus, "node": u.node, "max_rss": u.max_rss}
                for u in self.allocations
            ],
            "segments": [[s.kind, s.start, s.end, s.outcome] for s in self.segments(now)],
            "log_tail": self.log_tail,
        }


@dataclass(frozen=True)
class StepInfo:
    """A step of the DAG picture."""

    name: str
    needs: tuple[str, ...]
    image: str
    image_key: str
    tasks: int


@dataclass(frozen=True)
class ImageInfo:
    """An image the run used, with what the catalog says of its build (when it has it)."""

    name: str
    key: str
    sha256: str = ""
    created: str = ""
    host: str = ""
    user: str = ""
    build_seconds: float | None = None
    apptainer_version: str = ""


@dataclass(frozen=True)
class RunTrace:
    """A whole run for the report: tasks in DAG order, steps, images, provenance."""

    run: str
    workflow: str
    executor: str
    accounting: bool  # sacct answered: CPU-hours, memory and SLURM's own times are known
    now: float  # when the trace was taken (the end of a live task's bar)
    steps: tuple[StepInfo, ...]
    tasks: tuple[TaskTrace, ...]
    images: tuple[ImageInfo, ...] = ()
    provenance: Mapping[str, str] = field(default_factory=dict)
    spec: str = ""  # the workflow file as it was submitted

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    @property
    def first_submit(self) -> float | None:
        values = [t.submitted for t in self.tasks if t.submitted] + [t.start for t in self.tasks if t.start]
        return min(values) if values else None

    @property
    def last_end(self) -> float | None:
        values = [t.end for t in self.tasks if t.end]
        return max(values) if values else None

    @property
    def wall_s(self) -> float | None:
        """From the first submission to the last end."""
        a, b = self.first_submit, self.last_end
        return b - a if a is not None and b is not None else None

    @property
    def gpu_hours(self) -> float:
        return sum(t.gpu_hours for t in self.tasks)

    @property
    def cpu_hours(self) -> float | None:
        values = [t.cpu_hours for t in self.tasks if t.cpu_hours is not None]
        return sum(values) if self.accounting else None

    @property
    def missing(self) -> tuple[str, ...]:
        """Columns the report cannot fill, and why."""
        if self.accounting:
            return ()
        return ("cpu_hours", "max_rss", "req_mem")

    def failures(self) -> list[TaskTrace]:
        """Tasks that did not succeed and are not running, in DAG order."""
        return [t for t in self.tasks if t.state in FAILED]

    def ordered(self) -> list[TaskTrace]:
        """Tasks for the table: failures first (their own failure before upstream ones),
        then the rest in DAG order."""
        rank = {"upstream_failed": 1, "not_submitted": 1}
        return sorted(
            self.tasks,
            key=lambda t: (0, rank.get(t.state, 0)) if t.state in FAILED else (2 if t.state in DONE_OK else 1, 0),
        )

    def as_dict(self) -> dict[str, Any]:
        """The `hpcml report --json` document (docs/report.md)."""
        return {
            "format": TRACE_FORMAT,
            "run": self.run,
            "workflow": self.workflow,
            "executor": self.executor,
            "accounting": self.accounting,
            "missing": list(self.missing),
            "now": self.now,
            "counts": self.counts,
            "first_submit": self.first_submit,
            "last_end": self.last_end,
            "wall_s": self.wall_s,
            "cpu_hours": self.cpu_hours,
            "gpu_hours": self.gpu_hours,
            "steps": [
                {"name": s.name, "needs": list(s.needs), "image": s.image, "image_key": s.image_key, "tasks": s.tasks}
                for s in self.steps
            ],
            "images": [vars(i) for i in self.images],
            "provenance": dict(self.provenance),
            "tasks": [t.as_dict(self.now) for t in self.ordered()],
        }


# ---- reading a run's files -------------------------------------------------------------


def parse_attempts(text: str) -> tuple[Attempt, ...]:
    """The wrapper's `attempts` file (render/protocol.TASK_ATTEMPTS) → attempts in order.
    Torn or unknown lines are skipped; an attempt without its `end` line has `end` None."""
    started: dict[int, Attempt] = {}
    order: list[int] = []
    for line in text.splitlines():
        f = line.split()
        try:
            if len(f) >= 6 and f[0] == "start":
                n = int(f[2])
                devices = () if f[5] == "-" else tuple(d for d in f[5].split(",") if d)
                started[n] = Attempt(n, float(f[1]), None, f[3], f[4], devices, None)
                if n not in order:
                    order.append(n)
            elif len(f) >= 4 and f[0] == "end" and int(f[2]) in started:
                a = started[int(f[2])]
                signal = f[4] if len(f) > 4 and f[4] != "-" else ""
                preempted = len(f) > 5 and f[5] == "preempted"
                started[a.number] = Attempt(a.number, a.start, float(f[1]), a.node, a.job, a.devices, int(f[3]), signal,
                                            preempted)
        except ValueError:
            continue
    return tuple(started[n] for n in order)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 8192) -> str:
    """The last `lines` lines of a log (reading at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def submit_times(journal: Path, plan: PlanFile) -> dict[str, float]:
    """Task key → when its job was submitted, from the journal's `intent`/`submitted` pairs."""
    keys = {s.name: {t.index: t.key for t in s.tasks} for s in plan.steps}
    intents: dict[tuple[str, Any], list[int]] = {}
    out: dict[str, float] = {}
    for r in read_journal(journal):
        if r["event"] == "intent":
            intents[(r["step"], r.get("chunk"))] = list(r.get("indices", []))
        elif r["event"] == "submitted":
            for index in intents.get((r["step"], r.get("chunk")), []):
                key = keys.get(r["step"], {}).get(index)
                if key is not None:
                    out[key] = float(r["t"])
    return out


def build(
    run_dir: RunDir,
    plan: PlanFile,
    status: RunStatus,
    usage: Sequence[UsageRow] | None,
    *,
    now: float,
    images: Sequence[ImageInfo] = (),
    provenance: Mapping[str, str] | None = None,
) -> RunTrace:
    """The trace of one run from its files, one status round and (where there is
    accounting) the sacct rows of its jobs. Reads only the run's own files."""
    paths = run_dir.run(status.run_id)
    submitted = submit_times(paths.journal, plan)
    by_ref: dict[str, list[UsageRow]] = {}
    for row in usage or ():
        by_ref.setdefault(row.ref, []).append(row)
    point = {t.key: t.point for _s, t in plan.tasks()}
    tasks: list[TaskTrace] = []
    for st in status.tasks:
        folder = run_dir.task(st.step, st.key)
        attempts = _read_attempts(folder / TASK_ATTEMPTS)
        # A cached task ran in an earlier run: its records are not this run's cost.
        mine = st.state != "cached"
        tasks.append(
            TaskTrace(
                st.step, st.index, st.key, point.get(st.key, {}), st.state, st.detail, st.exit_code, st.job,
                submitted.get(st.key), attempts if mine else (),
                tuple(by_ref.get(st.job, ())) if (mine and st.job) else (),
                log_tail(folder / TASK_LOG) if st.state in FAILED else "",
                _count_lines(folder / TASK_GPU_SAMPLES),
            )
        )
    steps = tuple(StepInfo(s.name, s.needs, s.image, s.image_key, len(s.tasks)) for s in plan.steps)
    try:
        spec = paths.workflow.read_text(encoding="utf-8")
    except OSError:
        spec = ""
    return RunTrace(
        status.run_id, status.workflow, status.executor, usage is not None, now, steps, tuple(tasks),
        tuple(images), dict(provenance or {}), spec,
    )


def _read_attempts(path: Path) -> tuple[Attempt, ...]:
    try:
        return parse_attempts(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ()


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def provenance(settings: Settings, runner: Runner | None = None, *, slurm: bool = False) -> dict[str, str]:
    """What a run records at submission about how it ran (the journal's `run` record):
    versions (hpcml, Python, Apptainer, SLURM when it runs there), the submitting host and
    user, and the settings that change how a task runs. A version that cannot be asked for
    is `unknown`: provenance never stops a run."""
    run = runner or LocalRunner()
    try:
        apptainer = Apptainer(run, settings.apptainer).version()
    except HpcmlError:
        apptainer = "unknown"
    versions = {"apptainer_version": apptainer}
    if slurm:
        try:
            versions["slurm_version"] = Slurm(run).version()
        except HpcmlError:
            versions["slurm_version"] = "unknown"
    return {
        **versions,
        "hpcml": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "user": _user(),
        "apptainer": settings.apptainer,
        "exec_flags": " ".join(settings.exec_flags),
        "gpu_request": settings.gpu_request,
    }


def recorded_provenance(journal: Path) -> dict[str, str]:
    """The provenance of a run from its journal's `run` record (with the executor and why
    it was chosen; the reason names SLURM's version)."""
    for r in read_journal(journal):
        if r["event"] == "run":
            out = {str(k): str(v) for k, v in (r.get("provenance") or {}).items()}
            out["executor"] = str(r.get("executor", ""))
            out["executor_reason"] = str(r.get("reason", ""))
            out["submitted_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(r["t"])))
            return out
    return {}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER and no passwd entry (some containers)
        return ""
