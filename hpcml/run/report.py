"""Gathering a run's report: one status round, one sacct call where there is accounting,
the run's files (run/trace.py), and writing the HTML (render/report.py) atomically.

Example:

    tr = collect(RunDir.for_workflow("workflow.yaml"), None, images=lookup)
    write_html(tr, Path("report.html"))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcml.clients.slurm import UsageRow, split_job_id
from hpcml.executors.slurm import SlurmExecutor
from hpcml.fsutil import atomic_write
from hpcml.run import trace
from hpcml.run.status import executor_of, load_run, resolve_run, status

if TYPE_CHECKING:
    from hpcml.config import Settings
    from hpcml.executors.base import Executor
    from hpcml.run.rundir import RunDir
    from hpcml.run.trace import ImageInfo, RunTrace


def collect(
    run_dir: RunDir,
    run: str | None,
    *,
    settings: Settings | None = None,
    executor: Executor | None = None,
    images: Callable[[str, str], ImageInfo] | None = None,
    now: float | None = None,
) -> RunTrace:
    """The trace of a run (default: the latest). `images(name, key)` says what the catalog
    knows of each image the run used."""
    run_id = resolve_run(run_dir, run)
    rec = load_run(run_dir, run_id)
    ex = executor or executor_of(rec, settings)
    st = status(run_dir, run_id, ex)
    usage = _usage(ex, list(rec.refs.values()))
    seen: dict[str, str] = {}
    for step in rec.plan.steps:
        seen.setdefault(step.image, step.image_key)
    infos = [images(name, key) if images else trace.ImageInfo(name, key) for name, key in seen.items()]
    return trace.build(
        run_dir, rec.plan, st, usage, now=time.time() if now is None else now, images=infos,
        provenance=trace.recorded_provenance(run_dir.run(run_id).journal),
    )


def _usage(ex: Executor, refs: Sequence[str]) -> list[UsageRow] | None:
    """One sacct call for every job of the run; None without SLURM accounting."""
    if not isinstance(ex, SlurmExecutor):
        return None
    jobs = sorted({job for ref in refs for job, _task in split_job_id(ref)}, key=int)
    return ex.slurm.usage(jobs) if jobs else []


def write_html(tr: RunTrace, path: Path) -> Path:
    """Render the report of `tr` into `path` (atomically: a reader never sees half of it)."""
    from hpcml.render.report import render  # start-up speed: only the report needs it

    atomic_write(Path(path), render(tr))
    return Path(path)
