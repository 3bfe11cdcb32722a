"""The library API: every CLI command, the Snakemake helpers and the tests go through here.

Start-up speed: `hpcml --help` and `hpcml validate` import this module, so the heavier
stages (planning, images, submission, executors) are imported inside the functions that
use them, each marked `# start-up speed`. The result types live in hpcml/results.py.

Longer than ~400 lines on purpose: it is the one surface every caller uses, a short
function per command or helper, each calling into the stage that does the work.
"""

from __future__ import annotations

import json as _json
import os as _os
import re as _re
import shutil as _shutil
import time as _time
from collections.abc import Callable, Iterator
from pathlib import Path as _Path
from typing import TYPE_CHECKING

from hpcml import config as _config
from hpcml.config import Settings as _Settings
from hpcml.errors import BuildError, CatalogError, ConfigError, HpcmlError, RunInterrupted
from hpcml.fsutil import atomic_write as _atomic_write
from hpcml.model import Plan as _Plan
from hpcml.model import Workflow
from hpcml.results import (
    CatalogRow,
    CompileResult,
    DoctorReport,
    InitResult,
    RemoteOutcome,
    Report,
    RunDiff,
    RunOutcome,
    RunRecordView,
    RunStatus,
    RunSummary,
    SnakemakeExport,
    ValidationReport,
)
from hpcml.run.rundir import RunDir as _RunDir
from hpcml.spec import checker as _spec

if TYPE_CHECKING:
    from hpcml.images.catalog import GcItem
    from hpcml.images.ensure import BuildReport, ImageEvent
    from hpcml.images.scan import ScanOutcome
    from hpcml.images.search import CatalogPath, VerifyResult
    from hpcml.run.notify import Sent
    from hpcml.run.buildjobs import BuildJob
    from hpcml.run.progress import ProgressTracker
    from hpcml.run.trace import ImageInfo
    from hpcml.run.select import Selection

# ---- spec: load / validate -------------------------------------------------------------


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
    from hpcml.spec.schema import json_schema  # start-up speed

    return json_schema()


# ---- plan / compile ----------------------------------------------------------------------


def plan(path: str | _os.PathLike[str], resolve_catalog: Callable[[str, str | None], str] | None = None, *,
         settings: _Settings | None = None) -> _Plan:
    """Load, validate and plan a workflow: step order, tasks, image graph and keys.

    `resolve_catalog(name, tag) -> key` resolves `catalog:` bases; without it their
    literal reference stands in for the key. The build settings that enter image keys
    (build_flags, build_binds) are read from `settings`, loaded when not given.
    Example: ``plan("workflow.yaml").step_order``.
    """
    from hpcml import plan as _plan_mod  # start-up speed

    return _plan_mod.build(_spec.load(path), resolve_catalog, build_options=_build_options(settings or load_settings()))


def _build_options(s: _Settings) -> tuple[str, ...]:
    from hpcml import plan as _plan_mod  # start-up speed

    return _plan_mod.key_build_options(s.build_flags, s.build_binds)


def compile(path: str | _os.PathLike[str], out_dir: str | _os.PathLike[str]) -> CompileResult:
    """Write `<image>.def` for every image and `keys.json` into `out_dir`.

    Nothing is written when the workflow is invalid. A parent image is referenced as
    `From: <out_dir>/<parent>.sif` (absolute); build from the workflow directory, since
    `%files` sources are relative to it (see docs/plan.md).
    """
    from hpcml.render.compile import compile_plan  # start-up speed

    return compile_plan(plan(path), _os.fspath(out_dir))


# ---- images / catalog --------------------------------------------------------------------


def load_settings(overrides: dict[str, object] | None = None) -> _Settings:
    """The configuration (files, HPCML_* environment, then `overrides`); see docs/configuration.md."""
    return _config.load(overrides)


def _catalogs(s: _Settings | None) -> CatalogPath:
    from hpcml.images import ensure as images  # start-up speed

    return images.catalog_path(s or load_settings())


def build(
    path: str | _os.PathLike[str],
    names: list[str] | None = None,
    *,
    jobs: int | None = None,
    progress: Callable[[ImageEvent], None] | None = None,
    settings: _Settings | None = None,
    scan: bool = False,
) -> BuildReport:
    """Build every missing image of a workflow (or `names` and their parents).

    Returns an images.BuildReport; failures are in `report.failed`, not raised, so a
    caller can show them all. With `scan` (or the setting scan_on_publish) the images are
    scanned afterwards ("scanned" progress events). Example: ``build("workflow.yaml", ["torch"], jobs=4)``.
    """
    from hpcml import plan as _plan_mod  # start-up speed
    from hpcml.images import ensure as images  # start-up speed

    s = settings or load_settings()
    cats = images.catalog_path(s)
    plan_ = _plan_mod.build(_spec.load(path), lambda name, tag: cats.find(f"{name}:{tag or 'latest'}").key,
                            build_options=_build_options(s))
    return images.build_images(plan_, s, names=names, jobs=jobs, progress=progress, scan=scan)


def build_jobs(
    path: str | _os.PathLike[str],
    names: list[str] | None = None,
    *,
    on_message: Callable[[str], None] | None = None,
    settings: _Settings | None = None,
) -> list[BuildJob]:
    """`hpcml build --build-on slurm`: one SLURM build job per missing image (of `names`
    and their parents; all by default), chained parent first; returns at once. Images a
    live job already builds are not submitted again (that job is returned, `adopted`)."""
    from hpcml import plan as _plan_mod  # start-up speed
    from hpcml.images import ensure as images  # start-up speed
    from hpcml.run.buildjobs import submit_builds  # start-up speed

    s = settings or load_settings()
    cats = images.catalog_path(s)
    plan_ = _plan_mod.build(_spec.load(path), lambda name, tag: cats.find(f"{name}:{tag or 'latest'}").key,
                            build_options=_build_options(s))
    wanted = names if names is not None else list(plan_.image_order)
    images.select(plan_, wanted)  # unknown names: the error that lists the images
    builds = submit_builds(plan_, s, wanted, runner=None, say=on_message or (lambda _m: None),
                           workflow_path=_Path(path))
    return list(builds.jobs.values())


def build_image_job(
    path: str | _os.PathLike[str],
    image: str,
    key: str,
    *,
    progress: Callable[[ImageEvent], None] | None = None,
    settings: _Settings | None = None,
    settings_json: str | None = None,
) -> BuildReport:
    """What a SLURM build job does (`hpcml _build-image`, build_on = "slurm"): build and
    publish `image` of the workflow at `path` with the login node's build code, unless a
    catalog has it. Raises BuildError when the workflow no longer gives the image `key`
    (edited since the job was submitted: the tasks waiting for that key must not get another).
    `settings_json`: the submitter's build settings (run/buildjobs.settings_json), used as given.
    """
    from hpcml import plan as _plan_mod  # start-up speed
    from hpcml.images import ensure as images  # start-up speed
    from hpcml.run.buildjobs import settings_from_json  # start-up speed

    s = settings_from_json(settings_json) if settings_json is not None else settings or load_settings()
    cats = images.catalog_path(s)
    plan_ = _plan_mod.build(_spec.load(path), lambda name, tag: cats.find(f"{name}:{tag or 'latest'}").key,
                            build_options=_build_options(s))
    if image not in plan_.images:
        raise BuildError(f"{path} has no image {image!r} any more; rerun `hpcml run`")
    if plan_.images[image].key != key:
        raise BuildError(f"image {image} of {path} changed since this build job was submitted (key {key[:12]}, "
                         f"now {plan_.images[image].key[:12]}); rerun `hpcml run` to build the new one")
    return images.build_images(plan_, s, names=[image], jobs=1, progress=progress)


def doctor(
    workflow: str | _os.PathLike[str] | None = None,
    *,
    gpu: bool = False,
    image: str | None = None,
    partition: str | None = None,
    settings: _Settings | None = None,
) -> DoctorReport:
    """`hpcml doctor`: every preflight check (docs/doctor.md). With `workflow`, its steps'
    partitions and GPU requests are checked against the cluster; with `gpu`, a short job on
    a GPU partition runs `image` (a SIF path, or NAME[:TAG] from a catalog; default: the
    image of the workflow's first GPU step) with `--nv`."""
    from hpcml import doctor as _doctor  # start-up speed
    from hpcml.clients.runner import LocalRunner  # start-up speed

    s = settings or load_settings()
    steps = list(_spec.load(workflow).steps.values()) if workflow is not None else []
    sif = None
    if gpu and image is not None:
        sif = _os.path.abspath(image) if _os.path.isfile(image) else str(_catalogs(s).find(image).sif)
    elif gpu and workflow is not None:
        sif = _gpu_step_sif(workflow, s)
    return _doctor.run(s, LocalRunner(), steps=steps, gpu=gpu, gpu_sif=sif, gpu_partition=partition)


def _gpu_step_sif(workflow: str | _os.PathLike[str], s: _Settings) -> str | None:
    """The SIF of the workflow's first GPU step's image, when a catalog has it."""
    p = cached_plan(workflow, s)
    image = next((sp.step.image for sp in p.steps.values() if sp.step.resources.gpus > 0), None)
    if image is None:
        return None
    entry = _catalogs(s).lookup(p.images[image].key)
    if entry is None:
        raise CatalogError(f"doctor --gpu: image {image} of {workflow} is in no catalog yet; build it first "
                           f"(`hpcml build {workflow} {image}`) or pass --image")
    return str(entry.sif)


def catalog_list(s: _Settings | None = None) -> list[CatalogRow]:
    """Every complete image in every catalog of the search path, in search order, with the
    summary of its newest scan (None when never scanned)."""
    from hpcml.images import scan as _scan  # start-up speed

    rows = []
    cats = _catalogs(s)
    for cat in cats.catalogs:
        tags = cat.tags()
        for e in cat.entries():
            m = e.manifest
            try:
                found = _scan.read_record(cats, e)
                scan = _scan.summary(found[0] if found else None)
            except CatalogError as err:
                scan = {"error": str(err)}
            rows.append(CatalogRow(str(cat.root), m.key, m.name, m.size, m.created,
                                   tuple(tags.get(m.key, ())), str(e.sif), scan))
    return rows


def catalog_show(ref: str, s: _Settings | None = None) -> dict[str, object]:
    """The manifest of `ref` (name[:tag] or key prefix) plus where it lives, its tags and
    its newest scan (`scan`: the whole scan record, findings included; None if never scanned)."""
    from dataclasses import asdict  # start-up speed

    from hpcml.images import scan as _scan  # start-up speed

    cats = _catalogs(s)
    entry = cats.find(ref)
    doc: dict[str, object] = _json.loads(entry.manifest.to_json())
    doc["catalog"], doc["sif"] = str(entry.catalog.root), str(entry.sif)
    doc["tags"] = entry.catalog.tags().get(entry.key, [])
    found = _scan.read_record(cats, entry)
    doc["scan"] = asdict(found[0]) if found else None
    return doc


def catalog_scan(
    refs: list[str] | None = None,
    *,
    all_images: bool = False,
    stale_s: float | None = None,
    settings: _Settings | None = None,
) -> Iterator[ScanOutcome]:
    """Scan images (`refs`, or every image with `all_images`): an SBOM (CycloneDX JSON) and
    a vulnerability audit each, stored beside the manifest. Yields one images.scan.ScanOutcome
    per image as it is done; with `stale_s`, images scanned less than that long ago are
    skipped. Needs the `scan` extra. Example: ``list(catalog_scan(["numpy"]))[0].record.counts``.
    """
    from hpcml.images import scan as _scan  # start-up speed

    s = settings or load_settings()
    return _scan.scan_images(s, refs or [], all_images=all_images, stale_s=stale_s, cats=_catalogs(s))


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
    from hpcml.images.catalog import Catalog  # start-up speed

    entry = _catalogs(s).find(ref)
    name, _, tag = name_tag.partition(":")
    target = Catalog(_os.path.abspath(_os.path.expanduser(in_catalog))) if in_catalog else entry.catalog
    target.set_tag(name, tag or "latest", entry.key)
    return entry.key


def catalog_push(ref: str, dest: str | None = None, s: _Settings | None = None) -> str:
    """Copy `ref` into catalog `dest` (default: the last of the search path, the lab's).

    Returns the SIF path there. Fails clearly when `dest` is read-only."""
    from hpcml.images.catalog import Catalog  # start-up speed

    cats = _catalogs(s)
    target = Catalog(_os.path.abspath(_os.path.expanduser(dest))) if dest else cats.catalogs[-1]
    return str(cats.copy(cats.find(ref), target).sif)


def catalog_pull(ref: str, s: _Settings | None = None) -> str:
    """Copy `ref` from wherever it is into the first writable catalog (your cache)."""
    cats = _catalogs(s)
    return str(cats.copy(cats.find(ref), cats.writable()).sif)


def catalog_verify(s: _Settings | None = None) -> list[VerifyResult]:
    """Rehash every image of every catalog (and check signatures when required)."""
    return _catalogs(s).verify_all()


def catalog_gc(days: float, dry_run: bool = True, s: _Settings | None = None) -> list[GcItem]:
    """Untagged images unused for `days`, incomplete publishes and old failed logs, per
    writable catalog: listed (dry run) or removed. Returns list[catalog.GcItem]."""
    items = []
    for cat in _catalogs(s).catalogs:
        if cat.exists() and cat.writable() is None:
            items += cat.gc(days, dry_run=dry_run)
    return items


# ---- run / status / logs / cancel / runs -------------------------------------------------


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
    on_message: Callable[[str], None] | None = None,
    on_update: Callable[[RunStatus], None] | None = None,
    poll_s: float | None = None,
    detach: bool = False,
    on_image: Callable[[ImageEvent], None] | None = None,
    selection: Selection | None = None,
) -> RunOutcome:
    """Build or reuse the images and submit every task that is not complete or queued.

    `selection` (run/select.Selection: `--only`, `--from`, `--until`, `--force`) narrows
    the tasks that may run and names those to rerun despite the cache; a selected task
    whose upstream output is neither complete nor being made refuses the run (SubmitError).

    With `watch`, follow the run until every task has ended (an executor that is not
    detached, like the local one, is always watched). Ctrl-C (KeyboardInterrupt) while
    starting or watching raises RunInterrupted, which says what became of the run: SLURM
    jobs keep running (`hpcml cancel` stops them), local ones are cancelled. `on_image` gets each
    images.ImageEvent (cached, building, done, failed) while the images are ensured.
    `poll_s` is the first pause between polls while watching (default: the executor's).
    Example: ``run("workflow.yaml", watch=False).jobs`` → ``{"prepare": ["101"], …}``.
    """
    from hpcml.run import control, submit  # start-up speed
    from hpcml.run import status as run_status  # start-up speed

    s = settings or load_settings()
    try:
        started = submit.start(path, s, executor=executor, on_message=on_message, detach=detach, on_image=on_image,
                               selection=selection)
    except KeyboardInterrupt:  # before the lock was taken; later ones arrive as RunInterrupted
        raise RunInterrupted(submitted=0, executor=executor or "", tasks_cancelled=False) from None
    try:
        final = None
        if watch or not started.executor.detached:
            try:
                final = run_status.watch(started, on_update or (lambda _s: None), min_s=poll_s)
            except KeyboardInterrupt:
                jobs = sum(map(len, started.jobs.values()))
                raise control.interrupted(started.run_dir, started.run_id, started.executor, jobs) from None
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


_run_workflow = run  # `retry` takes a parameter named `run`


def retry(
    run: str | None = None,
    *,
    directory: str | None = None,
    workflow: str | None = None,
    executor: str | None = None,
    watch: bool = True,
    settings: _Settings | None = None,
    on_message: Callable[[str], None] | None = None,
    on_update: Callable[[RunStatus], None] | None = None,
    poll_s: float | None = None,
    detach: bool = False,
    on_image: Callable[[ImageEvent], None] | None = None,
) -> RunOutcome:
    """`hpcml retry`: submit again only the tasks of `run` (default: the latest) that ended
    without completing, with the same keys, on the run's executor unless `executor` says
    otherwise. A new run; StateError while the run has tasks queued or running or when
    nothing failed, SubmitError when the workflow was edited since (the keys differ).

    Example: ``retry(watch=False).submitted`` → ``2``.
    """
    from hpcml.run import control  # start-up speed
    from hpcml.run.select import Selection  # start-up speed

    s = settings or load_settings()
    target = control.retry_target(run_dir(directory, workflow), run, settings=s)
    if on_message is not None:
        shown = ", ".join(target.labels[:8]) + (f" and {len(target.labels) - 8} more" if len(target.labels) > 8 else "")
        on_message(f"retry of run {target.run_id}: {shown}")
    return _run_workflow(target.workflow, executor=executor or target.executor, watch=watch, settings=s,
                         on_message=on_message, on_update=on_update, poll_s=poll_s, detach=detach, on_image=on_image,
                         selection=Selection(keys=target.keys))


def status(
    run: str | None = None, *, directory: str | None = None, workflow: str | None = None, settings: _Settings | None = None,
    on_message: Callable[[str], None] | None = None,
) -> RunStatus:
    """Every task of a run (default: the latest) with its state, from one polling round.
    `on_message` gets notes such as a wait for a SLURM controller that does not answer."""
    from hpcml.run import status as run_status  # start-up speed

    return run_status.status(run_dir(directory, workflow), run, settings=settings, on_message=on_message)


def watch_status(
    run: str | None = None,
    *,
    on_update: Callable[[RunStatus], None],
    directory: str | None = None,
    workflow: str | None = None,
    settings: _Settings | None = None,
    on_message: Callable[[str], None] | None = None,
) -> RunStatus:
    """Follow a run (default: the latest) until every task has ended, passing each polling
    round to `on_update` (`hpcml status --watch`: re-attach to a detached run); `on_message`
    gets notes (a wait for a SLURM controller that does not answer)."""
    from hpcml.run import status as run_status  # start-up speed

    return run_status.follow(run_dir(directory, workflow), run, on_update, settings=settings, on_message=on_message)


def run_progress(*, directory: str | None = None, workflow: str | None = None) -> ProgressTracker:
    """A tracker that turns each RunStatus of a run into what the live view shows: bars per
    step, elapsed time and ETA, GPUs in use, new failures (see run/progress.py)."""
    from hpcml.run.progress import ProgressTracker  # start-up speed

    return ProgressTracker(run_dir(directory, workflow))


def logs(target: str, *, run: str | None = None, directory: str | None = None, workflow: str | None = None) -> list[tuple[str, str]]:
    """(task, log path) for `STEP` (every task) or `STEP/INDEX` of a run (default: latest),
    or ("image:NAME", its build job's output) for `image:NAME`."""
    from hpcml.run import control  # start-up speed

    return [(label, str(p)) for label, p in control.task_logs(run_dir(directory, workflow), target, run)]


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
    from hpcml.run import control  # start-up speed

    control.follow_task_log(run_dir(directory, workflow), target, run, write, sleep=sleep)


def cancel(
    run: str | None = None, *, directory: str | None = None, workflow: str | None = None, settings: _Settings | None = None
) -> tuple[str, list[str]]:
    """Cancel every unfinished job of a run (default: latest) with one call: (run id, job ids)."""
    from hpcml.run import control  # start-up speed

    return control.cancel(run_dir(directory, workflow), run, settings=settings)


def runs_history(*, directory: str | None = None, workflow: str | None = None) -> list[RunSummary]:
    """Every run of a workflow directory, oldest first."""
    from hpcml.run import control  # start-up speed

    return control.history(run_dir(directory, workflow))


def report(
    run: str | None = None,
    *,
    output: str | _os.PathLike[str] | None = None,
    html: bool = True,
    directory: str | None = None,
    workflow: str | None = None,
    settings: _Settings | None = None,
) -> Report:
    """A run's report (default: the latest): its trace and, with `html`, the self-contained
    HTML page written to `output` (default: `.hpcml/runs/<id>/report.html`). One status
    round and one sacct call (where there is accounting). See docs/report.md.

    Example: ``report(output="report.html").trace.gpu_hours``.
    """
    from hpcml.run import report as run_report  # start-up speed

    s = settings or load_settings()
    rd = run_dir(directory, workflow)
    tr = run_report.collect(rd, run, settings=s, images=_image_info(s))
    if not html:
        return Report(tr, None)
    path = _Path(output) if output is not None else rd.run(tr.run).root / "report.html"
    return Report(tr, str(run_report.write_html(tr, path)))


def notify(hpcml_dir: str, run: str, event: str, *, settings: _Settings | None = None) -> Sent:
    """Inside a run's notification job (`hpcml _notify`): write the run's report and send
    the message of `event` once (run/notify.py)."""
    from hpcml.run import notify as run_notify  # start-up speed

    rd = _RunDir(_Path(hpcml_dir))
    rep = report(run, directory=str(rd.path.parent), settings=settings)
    return run_notify.send(rd.run(rep.trace.run), event, rep.trace, rep.path or "")


def _image_info(s: _Settings) -> Callable[[str, str], ImageInfo]:
    """What the catalogs know of an image's build, for the report (unchecked lookups)."""
    from hpcml.run.trace import ImageInfo  # start-up speed

    try:
        cats = _catalogs(s)
    except CatalogError:
        cats = None

    def look(name: str, key: str) -> ImageInfo:
        entry = cats.lookup(key) if cats is not None else None
        if entry is None:
            return ImageInfo(name, key)
        m = entry.manifest
        return ImageInfo(name, key, m.sha256, m.created, m.host, m.user, m.build_seconds, m.apptainer_version)

    return look


def runs_show(run: str | None = None, *, directory: str | None = None, workflow: str | None = None) -> RunRecordView:
    """The record of a run (default: the latest): steps, task keys, images, jobs,
    versions and settings, and its workflow as submitted. Reads only the run directory."""
    from hpcml.run import records  # start-up speed

    return records.show(run_dir(directory, workflow), run)


def runs_diff(a: str, b: str, *, directory: str | None = None, workflow: str | None = None) -> RunDiff:
    """What changed between runs `a` and `b`: tasks whose key changed and why (command,
    image, upstream, other key inputs), images, settings, and the workflow diff.

    Example: ``[c.label for c in runs_diff(old, new).tasks]`` → ``["evaluate/0"]``.
    """
    from hpcml.run import records  # start-up speed

    return records.diff(run_dir(directory, workflow), a, b)


# ---- init: a starter project ------------------------------------------------------------


def init(directory: str | _os.PathLike[str] = ".", template: str | None = None) -> InitResult:
    """Write a starter project (workflow.yaml and src/) into `directory`; never overwrites.

    Adopts a requirements.txt or environment.yml found there. Example:
    ``init("proj", "gpu-train").files`` → ``["proj/workflow.yaml", "proj/src/evaluate.py", …]``.
    """
    from hpcml import init as _init  # start-up speed: only `hpcml init` needs the templates

    return _init.init_project(directory, template or _init.starter.DEFAULT_TEMPLATE)


def init_templates() -> dict[str, str]:
    """The starter templates of `init`: name → one-line description."""
    from hpcml.render import starter  # start-up speed: see init

    return dict(starter.TEMPLATES)


# ---- shell completion --------------------------------------------------------------------


def completion_names(
    section: str, *, workflow: str | None = None, directory: str | None = None
) -> list[str]:
    """Step or image names (`section` "steps" or "images") for shell completion; never raises.

    Read from `workflow`, else DIRECTORY/workflow.yaml, else the workflow file of the
    directory's latest run (a copy is kept in each run directory).
    """
    from hpcml.spec import outline  # start-up speed: only completion reads loosely

    rd = run_dir(directory, workflow)
    candidates = [workflow] if workflow else [str(rd.path.parent / "workflow.yaml")]
    try:
        latest = rd.latest_run()
    except OSError:
        latest = None
    if latest:
        candidates.append(str(rd.run(latest).workflow))
    for path in candidates:
        found = outline.names(path, section)
        if found:
            return found
    return []


def completion_runs(*, workflow: str | None = None, directory: str | None = None) -> list[str]:
    """Run ids of a workflow directory, newest first, for shell completion; never raises."""
    try:
        return list(reversed(run_dir(directory, workflow).workflow_runs()))
    except (OSError, ValueError, HpcmlError):
        return []


# ---- remote: the same commands on a cluster over SSH (docs/remote.md) ------------------------


def remote_invoke(
    name: str,
    command: tuple[str, ...],
    params: dict[str, object],
    *,
    out: Callable[[bytes], object],
    err: Callable[[bytes], object],
    on_message: Callable[[str], None] | None = None,
    on_update: Callable[[RunStatus], None] | None = None,
    cwd: str | None = None,
    tty: bool = False,
    settings: _Settings | None = None,
    env: dict[str, str] | None = None,
    poll_s: float = 2.0,
) -> RemoteOutcome:
    """Run the parsed command `command` (e.g. ("status",)) with its `params` on the remote
    `name` of the configuration: validated and planned here, done on the cluster. The
    cluster's output goes to `out`/`err` as it comes; `on_message` gets the laptop's notes
    (sync, reconnects); `on_update` each polling round of a watched run.

    Example: ``remote_invoke("cluster", ("runs",), {"as_json": True}, out=w, err=w).exit_code``.
    """
    from hpcml.remote import invoke as _invoke  # start-up speed: paramiko only for remotes
    from hpcml.remote.settings import find as _find  # start-up speed

    s = settings or load_settings()
    try:
        remote = _find(s.remotes, name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    environ = _os.environ if env is None else env
    home = _Path(environ.get("HOME") or _Path.home())
    streams = _invoke.Streams(out, err, on_message or (lambda _m: None), on_update or (lambda _s: None))
    return _invoke.invoke(remote, home, command, params, streams, cwd=_Path(cwd) if cwd else None,
                          tty=tty, env=environ, poll_s=poll_s)


# ---- Snakemake: helpers for Snakefiles and `hpcml export snakemake` -----------------------

#: Plans by (workflow path, mtime_ns, size, catalogs): a Snakefile whose rules ask about one
#: workflow many times parses it once per process.
_SNAKEMAKE_PLANS: dict[tuple[str, int, int, tuple[str, ...]], _Plan] = {}


def cached_plan(path: str | _os.PathLike[str], settings: _Settings | None = None) -> _Plan:
    """plan() with `catalog:` bases resolved, memoised by the file's path, mtime and size."""
    from hpcml import plan as _plan_mod  # start-up speed

    s = settings or load_settings()
    full = _os.path.abspath(_os.fspath(path))
    try:
        st = _os.stat(full)
    except OSError:
        _spec.load(full)  # raises the loader's own error for a missing or unreadable file
        raise
    ident = (full, st.st_mtime_ns, st.st_size, tuple(s.catalogs), _build_options(s))
    if ident not in _SNAKEMAKE_PLANS:
        cats = _catalogs(s)
        _SNAKEMAKE_PLANS[ident] = _plan_mod.build(
            _spec.load(full), lambda name, tag: cats.find(f"{name}:{tag or 'latest'}").key,
            build_options=_build_options(s))
    return _SNAKEMAKE_PLANS[ident]


def image_sif(
    ref: str,
    *,
    workflow: str | _os.PathLike[str] | None = None,
    build: bool = True,
    progress: Callable[[ImageEvent], None] | None = None,
    settings: _Settings | None = None,
) -> str:
    """The absolute SIF path of an image, after its integrity (and signature) check.

    With `workflow`, `ref` is an image name of that file: the image with its current key,
    built when no catalog has it (unless `build` is False: then CatalogError naming it).
    Without, `ref` is a catalog reference: a full key, a key prefix or NAME[:TAG].
    Example: ``image_sif("trainer", workflow="workflow.yaml")``.
    """
    s = settings or load_settings()
    cats = _catalogs(s)
    if workflow is None:
        entry = cats.lookup(ref) if _re.fullmatch(r"[0-9a-f]{64}", ref) else cats.find(ref)
        if entry is None:
            raise CatalogError(f"no image with key {ref[:12]}… in the catalogs ({', '.join(s.catalogs)}); "
                               "build it with `hpcml build WORKFLOW` from the workflow it was exported from")
    else:
        p = cached_plan(workflow, s)
        if ref not in p.images:
            raise CatalogError(f"no image {ref!r} in {p.workflow.path}; images: {', '.join(p.image_order)}")
        entry = cats.lookup(p.images[ref].key)
        if entry is None:
            if not build:
                raise CatalogError(
                    f"image {ref!r} of {p.workflow.path} (key {p.images[ref].key[:12]}) is in no catalog "
                    f"({', '.join(s.catalogs)}) and building is off; build it with "
                    f"`hpcml build {p.workflow.path} {ref}`")
            from hpcml.images import ensure as images  # start-up speed

            report = images.build_images(p, s, names=[ref], progress=progress)
            if report.failed:
                raise BuildError(images.failure_message(report))
            entry = cats.lookup(p.images[ref].key)
            assert entry is not None
    cats.check(entry)
    entry.catalog.touch_used(entry.key)
    return str(entry.sif)


def step_resources(
    step: str, *, workflow: str | _os.PathLike[str], settings: _Settings | None = None
) -> dict[str, str | int]:
    """A step's resources in snakemake-executor-plugin-slurm's names (`slurm_partition`,
    `runtime` in minutes, `mem_mb`, `cpus_per_task`, `gres`, …), for `resources: **…`.

    GPUs are asked as `gres` unless the `gpu_request` setting is `gpus-per-node`.
    """
    from hpcml.render.snakefile import slurm_resources  # start-up speed

    s = settings or load_settings()
    p = cached_plan(workflow, s)
    if step not in p.steps:
        raise HpcmlError(f"no step {step!r} in {p.workflow.path}; steps: {', '.join(p.step_order)}")
    style = "gpus-per-node" if s.gpu_request == "gpus-per-node" else "gres"
    return slurm_resources(p.steps[step].step.resources, style)


def step_container_shell(
    image: str,
    command: str,
    *,
    workflow: str | _os.PathLike[str],
    gpus: int = 0,
    gpu_vendor: str = "nvidia",
    build: bool = True,
    progress: Callable[[ImageEvent], None] | None = None,
    settings: _Settings | None = None,
) -> str:
    """Bash for a Snakemake `shell:` that runs `command` in a workflow image with hpcml's
    binding: `apptainer exec --cleanenv` with the site's exec flags, the working directory
    bound and current, and for `gpus > 0` `--nv` (`--rocm`) plus the job's
    CUDA_VISIBLE_DEVICES. The image is integrity-checked (built if missing) now.
    """
    from hpcml.render.snakefile import ContainerCall, container_command  # start-up speed

    s = settings or load_settings()
    sif = image_sif(image, workflow=workflow, build=build, progress=progress, settings=s)
    shell = cached_plan(workflow, s).workflow.images[image].shell
    call = ContainerCall(sif=sif, shell=shell, gpus=gpus, gpu_vendor=gpu_vendor, apptainer=s.apptainer,
                         exec_flags=tuple(s.exec_flags))
    return container_command(call, command)


def export_snakemake(
    path: str | _os.PathLike[str],
    out: str | _os.PathLike[str],
    *,
    build: bool = True,
    progress: Callable[[ImageEvent], None] | None = None,
    settings: _Settings | None = None,
    command_line: str = "hpcml export snakemake",
) -> SnakemakeExport:
    """Write a Snakefile running the workflow's DAG under Snakemake (atomically; nothing is
    written when the workflow has errors or an image cannot be had).

    The images the steps use are built first when missing (unless `build` is False: then
    CatalogError). Example: ``export_snakemake("workflow.yaml", "Snakefile").notes``.
    """
    from hpcml.render.snakefile import ExportSpec, render_snakefile  # start-up speed

    s = settings or load_settings()
    p = cached_plan(path, s)
    for name in dict.fromkeys(p.steps[n].step.image for n in p.step_order):
        image_sif(name, workflow=path, build=build, progress=progress, settings=s)
    out_abs = _os.path.abspath(_os.fspath(out))
    rel = _os.path.relpath(p.workflow.root, _os.path.dirname(out_abs))
    style = "gpus-per-node" if s.gpu_request == "gpus-per-node" else "gres"
    apptainer = s.apptainer
    if _os.path.isabs(apptainer) and _shutil.which(_os.path.basename(apptainer)) == apptainer:
        apptainer = _os.path.basename(apptainer)  # the same program by name: no site path in the file
    exported = render_snakefile(ExportSpec(p, rel, command_line, apptainer, tuple(s.exec_flags), style))
    _atomic_write(out_abs, exported.text, parents=True)
    return SnakemakeExport(out_abs, tuple(p.step_order), exported.notes)
