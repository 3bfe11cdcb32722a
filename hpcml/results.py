"""The API's result types: what hpcml/api.py returns, and what the CLI renders.

They sit apart from api.py so that a stage can build one (render/compile returns a
CompileResult) without importing the API back: no module here imports api.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcml.model import Workflow
from hpcml.run.tasks import ACTIVE, DONE_OK, TaskState, summarize

if TYPE_CHECKING:
    from hpcml.run.trace import RunTrace


@dataclass(frozen=True)
class ValidationReport:
    """What `hpcml validate` reports for a valid file."""

    path: str
    workflow: Workflow

    @property
    def summary(self) -> str:
        """`workflow.yaml: ok (3 steps, 1 image)`."""
        wf = self.workflow
        steps, images = len(wf.steps), len(wf.images)
        return f"{self.path}: ok ({steps} step{'s' * (steps != 1)}, {images} image{'s' * (images != 1)})"


@dataclass(frozen=True)
class CompileResult:
    """What `hpcml compile` wrote: one definition file per image (in build order) and keys.json."""

    out_dir: str
    files: tuple[str, ...]
    keys_file: str


@dataclass(frozen=True)
class CatalogRow:
    """One image of one catalog, for `hpcml catalog list`."""

    catalog: str
    key: str
    name: str
    size: int
    created: str
    tags: tuple[str, ...]
    sif: str
    #: The newest scan's summary (images/scan.summary): when, counts by severity, packages,
    #: whether Python and OS packages were audited; None when never scanned.
    scan: dict[str, object] | None = None


@dataclass(frozen=True)
class ImageJobState:
    """One SLURM build job a run's tasks wait for (build_on = "slurm"): pending, building,
    done or failed; `log` is the job's output, `detail` its last lines when it failed."""

    image: str
    key: str
    job: str
    state: str
    log: str
    elapsed_s: float | None = None  # while building
    detail: str = ""
    adopted: bool = False  # another run's job

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "key": self.key, "job": self.job, "state": self.state, "log": self.log,
                "elapsed_s": self.elapsed_s, "detail": self.detail, "adopted": self.adopted}


@dataclass(frozen=True)
class RunStatus:
    """Every task of one run, in DAG order, with its state (and its image build jobs)."""

    run_id: str
    workflow: str
    executor: str
    tasks: tuple[TaskState, ...]
    accounting: bool = True
    images: tuple[ImageJobState, ...] = ()
    notes: tuple[str, ...] = ()  # one line each, e.g. accounting did not answer: causes unknown

    @property
    def finished(self) -> bool:
        """No task is pending, running or requeued."""
        return all(t.state not in ACTIVE for t in self.tasks)

    @property
    def ok(self) -> bool:
        """Every task completed (or was cached)."""
        return all(t.state in DONE_OK for t in self.tasks)

    @property
    def counts(self) -> dict[str, int]:
        """Tasks per state, in state order, zeros left out."""
        return summarize({t.key: t for t in self.tasks})

    @property
    def preempted(self) -> int:
        """Preemptions over every task (each requeued by SLURM, none a failure)."""
        return sum(t.preempted for t in self.tasks)

    def steps(self) -> dict[str, list[TaskState]]:
        """The tasks grouped by step, in DAG order."""
        out: dict[str, list[TaskState]] = {}
        for t in self.tasks:
            out.setdefault(t.step, []).append(t)
        return out

    def as_dict(self) -> dict[str, Any]:
        """The `hpcml status --json` document (docs/running.md)."""
        return {
            "run": self.run_id,
            "workflow": self.workflow,
            "executor": self.executor,
            "finished": self.finished,
            "ok": self.ok,
            "counts": self.counts,
            "preempted": self.preempted,
            "tasks": [t.as_dict() for t in self.tasks],
            "images": [i.as_dict() for i in self.images],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SnakemakeExport:
    """What `export_snakemake` wrote, and what Snakemake cannot express (said in the rules too)."""

    path: str
    rules: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class RunSummary:
    """One line of `hpcml runs`: a run and its task counts."""

    run_id: str
    workflow: str
    executor: str
    tasks: int
    counts: Mapping[str, int]
    finished: bool
    preempted: int = 0  # preemptions over every task: requeued by SLURM, not failures


@dataclass(frozen=True)
class RunOutcome:
    """What `run` did: the submission, and the final status when it watched."""

    run_id: str
    executor: str
    reason: str  # why this executor was chosen
    cached: int
    adopted: int  # tasks already queued by an earlier run, depended on instead of resubmitted
    submitted: int
    jobs: dict[str, list[str]]  # step → job ids of this run
    status: RunStatus | None  # None when detached

    @property
    def ok(self) -> bool:
        """True when watched and every task completed (or was cached), or when detached."""
        return self.status is None or self.status.ok


@dataclass(frozen=True)
class InitResult:
    """What `hpcml init` wrote: the directory, the template, the files (in writing order),
    the file it adopted (requirements or environment file, if any) and that file's entries
    it could not adopt."""

    directory: str
    template: str
    files: list[str]
    adopted: str | None
    not_adopted: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """A run's report: its trace (the data, `hpcml report --json`) and where the HTML went
    (None when only the data was asked for)."""

    trace: RunTrace
    path: str | None


@dataclass(frozen=True)
class RemoteOutcome:
    """How `hpcml --remote NAME …` ended: the exit status to leave with, what was synced
    (a hpcml.remote.sync.SyncReport, or None), and for a watched run its final status."""

    exit_code: int
    synced: Any = None
    status: RunStatus | None = None


@dataclass(frozen=True)
class RunRecordView:
    """`hpcml runs show`: what a run submitted (steps, task keys, images, jobs), its
    provenance (versions, host, settings) and its workflow as submitted."""

    run_id: str
    workflow: str
    path: str
    executor: str
    steps: tuple[Mapping[str, Any], ...]  # name, image, image_key, needs, jobs, tasks[index, key, point, cached, job]
    cached: int
    adopted: int
    provenance: Mapping[str, str]
    spec: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id, "workflow": self.workflow, "path": self.path, "executor": self.executor,
            "steps": [dict(s) for s in self.steps], "cached": self.cached, "adopted": self.adopted,
            "provenance": dict(self.provenance), "spec": self.spec,
        }


@dataclass(frozen=True)
class TaskChange:
    """A task whose key differs between two runs (`changed`, with what went into the key
    differently), or that only one of them has (`added`, `removed`)."""

    step: str
    index: int
    point: Mapping[str, Any]
    change: str
    reasons: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.step}/{self.index}"


@dataclass(frozen=True)
class RunDiff:
    """`hpcml runs diff A B`: tasks, images and settings that changed, and the workflow diff."""

    a: str
    b: str
    tasks: tuple[TaskChange, ...]
    images: tuple[tuple[str, str, str], ...]  # (image, key in a, key in b)
    settings: tuple[tuple[str, str, str], ...]  # (name, value in a, value in b)
    spec: str  # unified diff of the two workflow snapshots
    unchanged: int  # tasks with the same key in both

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "unchanged": self.unchanged,
            "tasks": [{"task": c.label, "step": c.step, "index": c.index, "point": dict(c.point), "change": c.change,
                       "reasons": list(c.reasons)} for c in self.tasks],
            "images": [{"image": n, "a": x, "b": y} for n, x, y in self.images],
            "settings": [{"name": n, "a": x, "b": y} for n, x, y in self.settings],
            "spec": self.spec,
        }


@dataclass(frozen=True)
class Check:
    """One `hpcml doctor` check: "pass", "warn", "fail" or "skip", what was found, and the fix."""

    id: str  # e.g. "apptainer.build", "catalog:/srv/hpcml/images"
    title: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorReport:
    """`hpcml doctor`: every check in order; `ok` when none failed (warnings are allowed)."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail", "skip")}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "checks": [c.as_dict() for c in self.checks]}
