"""A run's record (`hpcml runs show`) and what changed between two runs (`hpcml runs diff`):
the answer to "why did this rerun?".

Both read only the run directory: each run's plan.json (task keys, image keys, points,
upstream keys), its workflow snapshot and journal, and the task directories' `cmd.sh`
(the filled command a key was computed from). Tasks of two runs are matched by step and
matrix point; a task whose key changed is explained by what went into its key: its
command, its image, its upstream tasks, else the rest of its key (environment, resources,
secrets' names).

Example:

    d = diff(run_dir, "20261201-…", "20261202-…")
    [(c.label, c.reasons) for c in d.tasks]   # [("evaluate/0", ("command",))]
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpcml.render.protocol import TASK_COMMAND
from hpcml.results import RunDiff, RunRecordView, TaskChange
from hpcml.run.status import load_run, resolve_run
from hpcml.run.trace import recorded_provenance

if TYPE_CHECKING:
    from hpcml.run.planfile import PlanFile, PlanTask
    from hpcml.run.rundir import RunDir

#: Content keys and digests inside paths of a filled command.
_KEYS = re.compile(r"\b[0-9a-f]{16,64}\b")
#: Provenance entries that differ between any two runs and say nothing about results.
_NOT_SETTINGS = frozenset({"submitted_at", "executor_reason"})


def show(run_dir: RunDir, run: str | None) -> RunRecordView:
    """The record of a run (default: the latest): what was submitted, its keys, images,
    versions and settings."""
    run_id = resolve_run(run_dir, run)
    rec = load_run(run_dir, run_id)
    paths = run_dir.run(run_id)
    jobs: dict[str, list[str]] = {}
    for step, t in rec.plan.tasks():
        ref = rec.refs.get(t.key)
        job = ref.split("_", 1)[0] if ref else None
        if job and job not in jobs.setdefault(step.name, []):
            jobs[step.name].append(job)
    steps = tuple(
        {
            "name": s.name,
            "image": s.image,
            "image_key": s.image_key,
            "needs": list(s.needs),
            "jobs": jobs.get(s.name, []),
            "tasks": [
                {"index": t.index, "key": t.key, "point": dict(t.point), "cached": t.key in rec.plan.cached,
                 "job": rec.refs.get(t.key)}
                for t in s.tasks
            ],
        }
        for s in rec.plan.steps
    )
    return RunRecordView(
        run_id, rec.plan.workflow, rec.plan.path, rec.executor, steps, len(rec.plan.cached), len(rec.plan.adopted),
        recorded_provenance(paths.journal), _read(paths.workflow),
    )


def diff(run_dir: RunDir, a: str, b: str) -> RunDiff:
    """What changed from run `a` to run `b` (ids or unique prefixes)."""
    ida, idb = resolve_run(run_dir, a), resolve_run(run_dir, b)
    pa, pb = load_run(run_dir, ida).plan, load_run(run_dir, idb).plan
    ta, tb = _by_point(pa), _by_point(pb)
    keys_a = {t.key: (s, t) for (s, _p), t in ta.items()}
    keys_b = {t.key: (s, t) for (s, _p), t in tb.items()}
    changes: list[TaskChange] = []
    for where, tb_task in tb.items():
        step, _point = where
        ta_task = ta.get(where)
        if ta_task is None:
            changes.append(TaskChange(step, tb_task.index, dict(tb_task.point), "added", ()))
        elif ta_task.key != tb_task.key:
            reasons = _reasons(run_dir, step, ta_task, tb_task, _image_key(pa, step), _image_key(pb, step), keys_a, keys_b)
            changes.append(TaskChange(step, tb_task.index, dict(tb_task.point), "changed", reasons))
    for where, ta_task in ta.items():
        if where not in tb:
            changes.append(TaskChange(where[0], ta_task.index, dict(ta_task.point), "removed", ()))
    images = {s.image: s.image_key for s in pa.steps}
    images_b = {s.image: s.image_key for s in pb.steps}
    image_changes = tuple(
        (name, images.get(name, ""), images_b.get(name, ""))
        for name in sorted(set(images) | set(images_b))
        if images.get(name) != images_b.get(name)
    )
    prov_a = recorded_provenance(run_dir.run(ida).journal)
    prov_b = recorded_provenance(run_dir.run(idb).journal)
    settings = tuple(
        (k, prov_a.get(k, ""), prov_b.get(k, ""))
        for k in sorted(set(prov_a) | set(prov_b))
        if k not in _NOT_SETTINGS and prov_a.get(k) != prov_b.get(k)
    )
    spec = "".join(
        difflib.unified_diff(
            _read(run_dir.run(ida).workflow).splitlines(keepends=True),
            _read(run_dir.run(idb).workflow).splitlines(keepends=True),
            f"{ida}/workflow.yaml", f"{idb}/workflow.yaml",
        )
    )
    unchanged = sum(1 for w, t in tb.items() if w in ta and ta[w].key == t.key)
    return RunDiff(ida, idb, tuple(changes), image_changes, settings, spec, unchanged)


def _reasons(
    run_dir: RunDir,
    step: str,
    ta: PlanTask,
    tb: PlanTask,
    image_a: str,
    image_b: str,
    keys_a: Mapping[str, Any],
    keys_b: Mapping[str, Any],
) -> tuple[str, ...]:
    reasons: list[str] = []
    # The filled command names upstream outputs by their keys: compare it without them, so
    # a new upstream is not also reported as a new command.
    cmd_a = _KEYS.sub("<key>", _read(run_dir.task(step, ta.key) / TASK_COMMAND))
    cmd_b = _KEYS.sub("<key>", _read(run_dir.task(step, tb.key) / TASK_COMMAND))
    if cmd_a and cmd_b and cmd_a != cmd_b:
        reasons.append("command")
    if image_a != image_b:
        reasons.append("image")
    if set(ta.upstream) != set(tb.upstream):
        ups = sorted({keys_b[u][0] for u in tb.upstream if u in keys_b and u not in ta.upstream}
                     | {keys_a[u][0] for u in ta.upstream if u in keys_a and u not in tb.upstream})
        reasons.append("upstream" + (f" ({', '.join(ups)})" if ups else ""))
    if not reasons:
        reasons.append("other key inputs (environment, resources, secrets' names)" if cmd_a and cmd_b else "command or environment")
    return tuple(reasons)


def _by_point(plan: PlanFile) -> dict[tuple[str, str], PlanTask]:
    return {(s.name, json.dumps(dict(t.point), sort_keys=True, default=str)): t for s, t in plan.tasks()}


def _image_key(plan: PlanFile, step: str) -> str:
    s = plan.step(step)
    return s.image_key if s else ""


def _read(path: Any) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return ""
