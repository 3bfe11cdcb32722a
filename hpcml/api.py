"""The library API: every CLI command, the Snakemake helpers and the tests go through here."""

from __future__ import annotations

import os as _os
import time as _time
from dataclasses import dataclass as _dataclass
from pathlib import Path as _Path
from typing import Callable

from hpcml.spec import checker as _spec
from hpcml.config import Settings as _Settings
from hpcml.errors import RunInterrupted
from hpcml.model import Plan as _Plan
from hpcml.model import Workflow
from hpcml.run.submit import RunStatus, RunSummary
from hpcml.run.rundir import RunDir as _RunDir

# ---- spec: load / validate -------------------------------------------------------------


@_dataclass(frozen=True)
class ValidationReport:
    """What `hpcml validate` reports for a valid file."""

    path: str
    workflow: Workflow

    @property
    def summary(self) -> str:
        wf = self.workflow
        steps, images = len(wf.steps), len(wf.images)
        return f"{self.path}: ok ({steps} step{'s' * (steps != 1)}, {images} image{'s' * (images != 1)})"


def load(path: str | _os.PathLike[str]) -> Workflow:
    """Load and validate a workflow file; raises SpecError with every problem found."""
    return _spec.load(path)


def validate(path: str | _os.PathLike[str]) -> ValidationReport:
    """Validate a workflow file without planning or building anything.

    Example: ``validate("workflow.yaml").summary`` → ``"workflow.yaml: ok (3 steps, 1 image)"``.
    """
    return ValidationReport(_os.fspath(path), _spec.load(path))


def schema() -> dict[str, object]:
    """The JSON Schema of workflow.yaml (Draft 2020-12), for editors."""
    from hpcml.spec.schema import json_schema

    return json_schema()


# ---- plan / compile ----------------------------------------------------------------------


@_dataclass(frozen=True)
class CompileResult:
    """What `hpcml compile` wrote: one definition file per image (in build order) and keys.json."""

    out_dir: str
    files: tuple[str, ...]
    keys_file: str


def plan(path: str | _os.PathLike[str], resolve_catalog=None) -> _Plan:  # noqa: ANN001
    """Load, validate and plan a workflow: step order, tasks, image graph and keys.

    `resolve_catalog(name, tag) -> key` resolves `catalog:` bases; without it their
    literal reference stands in for the key. Example: ``plan("workflow.yaml").step_order``.
    """
    from hpcml import plan as _plan_mod

    return _plan_mod.build(_spec.load(path), resolve_catalog)


def compile(path: str | _os.PathLike[str], out_dir: str | _os.PathLike[str]) -> CompileResult:  # noqa: A001
    """Write `<image>.def` for every image and `keys.json` into `out_dir`.

    Nothing is written when the workflow is invalid. A parent image is referenced as
    `From: <out_dir>/<parent>.sif` (absolute); build from the workflow directory, since
    `%files` sources are relative to it (see docs/plan.md).
    """
    from hpcml.render.compile import compile_plan

    return compile_plan(plan(path), _os.fspath(out_dir))


# ---- images / catalog --------------------------------------------------------------------


@_dataclass(frozen=True)
class CatalogRow:
    """One image of one catalog, for `hpcml catalog list`."""

    catalog: str
    key: str
    name: str
    size: int
    created: str
    tags: tuple[str, ...]
    sif: str


def load_settings(overrides: dict[str, object] | None = None) -> _Settings:
    """The configuration (files, HPCML_* environment, then `overrides`); see docs/configuration.md."""
    from hpcml import config

    return config.load(overrides)


def _catalogs(s: _Settings | None):  # noqa: ANN202
    from hpcml.images import ensure as images

    return images.catalog_path(s or load_settings())


def build(
    path: str | _os.PathLike[str],
    names: list[str] | None = None,
    *,
    jobs: int | None = None,
    progress=None,  # noqa: ANN001 - images.Progress
    settings: _Settings | None = None,
):  # noqa: ANN201 - images.BuildReport
    """Build every missing image of a workflow (or `names` and their parents).

    Returns an images.BuildReport; failures are in `report.failed`, not raised, so a
    caller can show them all. Example: ``build("workflow.yaml", ["torch"], jobs=4)``.
    """
    from hpcml.images import ensure as images
    from hpcml import plan as _plan_mod

    s = settings or load_settings()
    cats = images.catalog_path(s)
    plan_ = _plan_mod.build(_spec.load(path), lambda name, tag: cats.find(f"{name}:{tag or 'latest'}").key)
    return images.build_images(plan_, s, names=names, jobs=jobs, progress=progress)


def catalog_list(s: _Settings | None = None) -> list[CatalogRow]:
    """Every complete image in every catalog of the search path, in search order."""
    rows = []
    for cat in _catalogs(s).catalogs:
        tags = cat.tags()
        for e in cat.entries():
            m = e.manifest
            rows.append(CatalogRow(str(cat.root), m.key, m.name, m.size, m.created,
                                   tuple(tags.get(m.key, ())), str(e.sif)))
    return rows


def catalog_show(ref: str, s: _Settings | None = None) -> dict[str, object]:
    """The manifest of `ref` (name[:tag] or key prefix) plus where it lives and its tags."""
    import json

    entry = _catalogs(s).find(ref)
    doc: dict[str, object] = json.loads(entry.manifest.to_json())
    doc["catalog"], doc["sif"] = str(entry.catalog.root), str(entry.sif)
    doc["tags"] = entry.catalog.tags().get(entry.key, [])
    return doc


def catalog_path(ref: str, s: _Settings | None = None) -> str:
    """The SIF path of `ref`, after its integrity (and signature) check."""
    cats = _catalogs(s)
    entry = cats.find(ref)
    cats.check(entry)
    entry.catalog.touch_used(entry.key)
    return str(entry.sif)


def catalog_tag(ref: str, name_tag: str, s: _Settings | None = None, in_catalog: str | None = None) -> str:
    """Tag the image `ref` as NAME[:TAG]; returns the key.

    The tag goes into `in_catalog` when given (the image must be there: push it first), else
    into the first catalog holding the image. A tag is only seen by those who search that
    catalog, so a lab tag needs `in_catalog` when the image is also in your own cache.
    """
    from hpcml.images.catalog import Catalog

    entry = _catalogs(s).find(ref)
    name, _, tag = name_tag.partition(":")
    target = Catalog(_os.path.abspath(_os.path.expanduser(in_catalog))) if in_catalog else entry.catalog
    target.set_tag(name, tag or "latest", entry.key)
    return entry.key


def catalog_push(ref: str, dest: str | None = None, s: _Settings | None = None) -> str:
    """Copy `ref` into catalog `dest` (default: the last of the search path, the lab's).

    Returns the SIF path there. Fails clearly when `dest` is read-only."""
    from hpcml.images.catalog import Catalog

    cats = _catalogs(s)
    target = Catalog(_os.path.abspath(_os.path.expanduser(dest))) if dest else cats.catalogs[-1]
    return str(cats.copy(cats.find(ref), target).sif)


def catalog_pull(ref: str, s: _Settings | None = None) -> str:
    """Copy `ref` from wherever it is into the first writable catalog (your cache)."""
    cats = _catalogs(s)
    return str(cats.copy(cats.find(ref), cats.writable()).sif)


def catalog_verify(s: _Settings | None = None):  # noqa: ANN201 - list[catalog.VerifyResult]
    """Rehash every image of every catalog (and check signatures when required)."""
    return _catalogs(s).verify_all()


def catalog_gc(days: float, dry_run: bool = True, s: _Settings | None = None):  # noqa: ANN201
    """Untagged images unused for `days`, incomplete publishes and old failed logs, per
    writable catalog: listed (dry run) or removed. Returns list[catalog.GcItem]."""
    items = []
    for cat in _catalogs(s).catalogs:
        if cat.exists() and cat.writable() is None:
            items += cat.gc(days, dry_run=dry_run)
    return items


# ---- run / status / logs / cancel / runs -------------------------------------------------


@_dataclass(frozen=True)
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


def run_dir(directory: str | _os.PathLike[str] | None = None, workflow: str | _os.PathLike[str] | None = None) -> _RunDir:
    """The `.hpcml` directory of a workflow file, or of a directory (default: the current one)."""
    if workflow is not None:
        return _RunDir.for_workflow(workflow)
    return _RunDir(_Path(_os.path.abspath(_os.fspath(directory or "."))) / ".hpcml")


def run(
    path: str | _os.PathLike[str],
    *,
    executor: str | None = None,
    watch: bool = True,
    settings: _Settings | None = None,
    on_message=None,  # noqa: ANN001 - Callable[[str], None]
    on_update=None,  # noqa: ANN001 - Callable[[RunStatus], None]
    poll_s: float = 2.0,
    detach: bool = False,
    on_image=None,  # noqa: ANN001 - Callable[[images.ImageEvent], None]
) -> RunOutcome:
    """Build or reuse the images and submit every task that is not complete or queued.

    With `watch`, follow the run until every task has ended (an executor that is not
    detached, like the local one, is always watched). Ctrl-C (KeyboardInterrupt) while
    starting or watching raises RunInterrupted, which says what became of the run: SLURM
    jobs keep running (`hpcml cancel` stops them), local ones are cancelled. `on_image` gets each
    images.ImageEvent (cached, building, done, failed) while the images are ensured.
    Example: ``run("workflow.yaml", watch=False).jobs`` → ``{"prepare": ["101"], …}``.
    """
    from hpcml.run import submit as runs

    s = settings or load_settings()
    try:
        started = runs.start(path, s, executor=executor, on_message=on_message, detach=detach, on_image=on_image)
    except KeyboardInterrupt:  # before an executor was chosen; later ones arrive as RunInterrupted
        raise RunInterrupted(submitted=0, executor=executor or "", tasks_cancelled=False) from None
    try:
        final = None
        if watch or not started.executor.detached:
            try:
                final = runs.watch(started, on_update or (lambda _s: None), min_s=poll_s)
            except KeyboardInterrupt:
                jobs = sum(map(len, started.jobs.values()))
                raise runs.interrupted(started.run_dir, started.run_id, started.executor, jobs) from None
        return RunOutcome(
            started.run_id,
            started.executor.name,
            started.reason,
            started.cached,
            started.adopted,
            started.submitted,
            started.jobs,
            final,
        )
    finally:
        started.close()


def status(
    run: str | None = None, *, directory: str | None = None, workflow: str | None = None, settings: _Settings | None = None
) -> RunStatus:
    """Every task of a run (default: the latest) with its state, from one polling round."""
    from hpcml.run import submit as runs

    return runs.status(run_dir(directory, workflow), run, settings=settings)


def logs(target: str, *, run: str | None = None, directory: str | None = None, workflow: str | None = None) -> list[tuple[str, str]]:
    """(task, log path) for `STEP` (every task) or `STEP/INDEX` of a run (default: latest)."""
    from hpcml.run import submit as runs

    return [(label, str(p)) for label, p in runs.task_logs(run_dir(directory, workflow), target, run)]


def follow_log(
    target: str,
    *,
    write: Callable[[str], None],
    run: str | None = None,
    directory: str | None = None,
    workflow: str | None = None,
    sleep: Callable[[float], None] = _time.sleep,
) -> None:
    """Pass the log of one task (`STEP/INDEX`) to `write`, then what is appended to it, until
    the task is no longer pending, running or requeued (`hpcml logs -f`). StateError unless
    `target` names exactly one task.

    Example: ``follow_log("train/3", write=sys.stdout.write)``.
    """
    from hpcml.run import submit as runs

    runs.follow_task_log(run_dir(directory, workflow), target, run, write, sleep=sleep)


def cancel(
    run: str | None = None, *, directory: str | None = None, workflow: str | None = None, settings: _Settings | None = None
) -> tuple[str, list[str]]:
    """Cancel every unfinished job of a run (default: latest) with one call: (run id, job ids)."""
    from hpcml.run import submit as runs

    return runs.cancel(run_dir(directory, workflow), run, settings=settings)


def runs_history(*, directory: str | None = None, workflow: str | None = None) -> list[RunSummary]:
    """Every run of a workflow directory, oldest first."""
    from hpcml.run import submit as runs

    return runs.history(run_dir(directory, workflow))
