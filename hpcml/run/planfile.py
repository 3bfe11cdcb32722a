"""plan.json of a run: what status, cancel, logs, history and reconciliation know of the run
without re-reading its workflow. One writer (`dumps`) and one typed loader (`load`).

The document carries `format` (PLAN_FORMAT). The loader reads every format up to this
one, including the runs written before the field was named `format` (`"version": 1`, the
same shape), and refuses a newer one with a message that says to upgrade hpcml, rather
than misreading a run a newer hpcml started in the same directory.

Example:

    pf = load(run_dir.run(run_id).plan, run_id)
    [t.key for t in pf.step("train").tasks]
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcml.errors import StateError
from hpcml.model import Plan, Scalar

#: Shape of plan.json that this hpcml writes, and the newest it reads.
PLAN_FORMAT = 1


@dataclass(frozen=True)
class PlanTask:
    """One task: its index in the step, content key, matrix point and upstream task keys."""

    index: int
    key: str
    point: Mapping[str, Scalar]
    upstream: tuple[str, ...]


@dataclass(frozen=True)
class PlanStep:
    """One step, its image and its tasks in index order."""

    name: str
    image: str
    image_key: str
    array: bool  # submitted as a job array (a matrix step)
    needs: tuple[str, ...]
    tasks: tuple[PlanTask, ...]


@dataclass(frozen=True)
class PlanFile:
    """A run's plan.json: steps in DAG order, and what was cached or adopted at submission."""

    format: int
    run: str
    workflow: str  # the workflow's name
    path: str  # the workflow file
    steps: tuple[PlanStep, ...]
    cached: frozenset[str]  # task keys complete before the run
    adopted: Mapping[str, str]  # task key → job ref of an earlier run, depended on

    def step(self, name: str) -> PlanStep | None:
        """The step called `name`, or None."""
        return next((s for s in self.steps if s.name == name), None)

    def tasks(self) -> Iterator[tuple[PlanStep, PlanTask]]:
        """Every (step, task), in DAG order."""
        for step in self.steps:
            for task in step.tasks:
                yield step, task


def from_plan(plan: Plan, run_id: str, cached: set[str], adopted: Mapping[str, str]) -> PlanFile:
    """The plan file of a new run of `plan`."""
    steps = tuple(
        PlanStep(
            name=name,
            image=sp.step.image,
            image_key=sp.image_key,
            array=sp.is_array,
            needs=tuple(sp.step.needs),
            tasks=tuple(PlanTask(t.index, t.key, dict(t.point), tuple(t.upstream)) for t in sp.tasks),
        )
        for name, sp in ((n, plan.steps[n]) for n in plan.step_order)
    )
    return PlanFile(PLAN_FORMAT, run_id, plan.workflow.name, plan.workflow.path, steps, frozenset(cached), dict(adopted))


def dumps(pf: PlanFile) -> str:
    """The text of plan.json."""
    doc = {
        "format": pf.format,
        "run": pf.run,
        "workflow": pf.workflow,
        "path": pf.path,
        "steps": [
            {
                "name": s.name,
                "image": s.image,
                "image_key": s.image_key,
                "array": s.array,
                "needs": list(s.needs),
                "tasks": [
                    {"index": t.index, "key": t.key, "point": dict(t.point), "upstream": list(t.upstream)}
                    for t in s.tasks
                ],
            }
            for s in pf.steps
        ],
        "cached": sorted(pf.cached),
        "adopted": dict(pf.adopted),
    }
    return json.dumps(doc, indent=1, sort_keys=True)


def load(path: Path, run_id: str) -> PlanFile:
    """Read and check the plan.json at `path` (of run `run_id`); StateError when it cannot be
    read, is malformed, or has a format newer than this hpcml reads."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StateError(f"run {run_id}: cannot read {path}: {err}") from err
    return parse(doc, run_id, path)


def parse(doc: object, run_id: str, path: Path | str = "plan.json") -> PlanFile:
    """The PlanFile of a decoded plan.json document (see `load`)."""
    if not isinstance(doc, dict):
        raise StateError(f"run {run_id}: {path} is not a plan file (not a JSON object)")
    # Runs written before the field was named `format` carry `"version": 1`: the same shape.
    fmt = doc.get("format", doc.get("version"))
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise StateError(f"run {run_id}: {path} has no valid format number ({fmt!r})")
    if fmt > PLAN_FORMAT:
        raise StateError(f"run {run_id}'s plan.json has format {fmt}; this hpcml reads up to {PLAN_FORMAT}: upgrade hpcml")
    try:
        steps = tuple(_step(s) for s in doc["steps"])
        return PlanFile(
            fmt, str(doc.get("run", run_id)), str(doc["workflow"]), str(doc.get("path", "")), steps,
            frozenset(str(k) for k in doc.get("cached", [])), {str(k): str(v) for k, v in doc.get("adopted", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise StateError(f"run {run_id}: {path} is malformed ({type(err).__name__}: {err})") from err


def _step(s: dict[str, Any]) -> PlanStep:
    tasks = s["tasks"]
    if not isinstance(tasks, list):
        raise TypeError(f"tasks of step {s.get('name')!r} is not a list")
    return PlanStep(
        name=str(s["name"]),
        image=str(s.get("image", "")),
        image_key=str(s.get("image_key", "")),
        array=bool(s["array"]),
        needs=tuple(str(n) for n in s.get("needs", [])),
        tasks=tuple(
            PlanTask(int(t["index"]), str(t["key"]), dict(t.get("point", {})), tuple(str(u) for u in t.get("upstream", [])))
            for t in tasks
        ),
    )
