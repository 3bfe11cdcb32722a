"""Submitting a run: prepare `.hpcml/`, then submit every task that is neither complete nor
live, step by step in DAG order.

`start()` does, under the run directory's lock:

1. classify every task: complete (exit code 0: cached), live in an earlier run's job
   (adopted: found with one squeue by job name and that run's manifest), or to submit;
2. ensure the images of the steps that have work (or, with build_on = "slurm", submit
   a build job per missing image: run/buildjobs.py), render one job script per step (per
   chunk at MaxArraySize), write task directories, manifests and the secrets file;
3. per step in DAG order: journal an intent, sbatch with `afterok` on the live jobs of the
   upstream tasks and on the build jobs of the step's image, journal the job id.

A rerun after a crash (even `kill -9` between sbatch and the journal) first waits for an
sbatch the dead run left running (run/inflight.py), then finds the jobs of the dead run by
name and depends on them instead of submitting them again. Following the
run once submitted is run/status.py's `watch`.

Example:

    started = start("workflow.yaml", settings)
    final = watch(started, on_update=print)
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import plan as _plan
from hpcml.clients.runner import LocalRunner, Runner
from hpcml.clients.slurm import ClusterRefused, Slurm, max_array_size
from hpcml.config import Settings
from hpcml.errors import SubmitError
from hpcml.executors.base import Executor, StepJob
from hpcml.executors.choose import choose_executor, make_executor
from hpcml.images import ensure as _images
from hpcml.model import Notify, Plan, StepPlan, Task
from hpcml.render import jobs as _jobs
from hpcml.render.gpus import GpuStyle, style_from_config
from hpcml.run.control import interrupted
from hpcml.run.durable import DurableBatch, atomic_write
from hpcml.run import planfile
from hpcml.run import select as _select
from hpcml.run.buildjobs import Builds, build_journal_fields, submit_builds
from hpcml.run.inflight import wait_for_orphans
from hpcml.run.journal import Journal
from hpcml.run.reconcile import live_tasks, reconcile, refuse_if_queued_on_slurm
from hpcml.run import notify as _notify
from hpcml.run.trace import provenance
from hpcml.run.rundir import RunDir, RunLock, RunPaths, new_run_id
from hpcml.run.taskdir import prepare_task, step_shell
from hpcml.run.tasks import read_exit_code
from hpcml.spec import checker as _spec

#: ensure_images(plan, settings, image names) → image name → SIF path.
EnsureImages = Callable[[Plan, Settings, Sequence[str]], dict[str, str]]


@dataclass
class RunStarted:
    """What `start` did. The lock stays held (for `watch`) until `close()`."""

    run_id: str
    run_dir: RunDir
    workflow: str
    executor: Executor
    reason: str  # why this executor
    jobs: dict[str, list[str]]  # step → job ids submitted by this run
    cached: int
    adopted: int
    submitted: int
    lock: RunLock | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release the run directory's lock."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


@dataclass(frozen=True)
class _Context:
    """What `start` settled before taking the lock: everything the locked part reads."""

    plan: Plan
    path: Path
    run_dir: RunDir
    settings: Settings
    executor: Executor
    reason: str  # why this executor
    secrets: Mapping[str, str]
    runner: Runner | None
    ensure_images: EnsureImages
    say: Callable[[str], None]
    chosen: _select.Chosen = _select.Chosen(None, frozenset())
    selection: _select.Selection | None = None


@dataclass(frozen=True)
class _Cluster:
    gpu_style: GpuStyle
    max_array: int


@dataclass(frozen=True)
class _Submission:
    """One new run while its jobs are submitted."""

    run_id: str
    paths: RunPaths
    journal: Journal
    sifs: Mapping[str, str]  # image → SIF
    cluster: _Cluster
    adopted: Mapping[str, str]  # task key → job ref of an earlier run
    todo: Mapping[str, Sequence[Task]]  # step → tasks to submit
    builds: Builds  # the image build jobs the tasks wait for (build_on = "slurm")
    whole: frozenset[str] = frozenset()  # array jobs of earlier runs whose every task is live or complete


@dataclass
class _Progress:
    """How far `start` got: read when it is interrupted."""

    run_id: str | None = None
    jobs: int = 0  # jobs submitted so far
    submitted: list[str] = field(default_factory=list)  # `prep (job 123)`, for messages


def start(
    path: str | os.PathLike[str],
    settings: Settings,
    *,
    executor: str | None = None,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
    ensure_images: EnsureImages | None = None,
    on_message: Callable[[str], None] | None = None,
    detach: bool = False,
    on_image: _images.Progress | None = None,
    selection: _select.Selection | None = None,
) -> RunStarted:
    """Submit every task of the workflow at `path` that is neither complete nor live (of
    those `selection` lets run: run/select.py; its forced tasks even when complete).

    Raises SpecError for an invalid workflow, SubmitError/BuildError/StateError otherwise,
    and RunInterrupted on KeyboardInterrupt once the lock is taken; nothing is written to
    the run directory before the workflow, secrets and images are ok, nor when a selected
    task needs an upstream output nobody has or makes. `on_image` gets every
    images.ImageEvent (cached, building, done, …) while images are ensured.
    """
    env = os.environ if env is None else env
    say = on_message or (lambda _m: None)
    full = _plan.build(_spec.load(path), _catalog_resolver(settings, runner),
                       build_options=_plan.key_build_options(settings.build_flags, settings.build_binds))
    chosen = _select.choose(full, selection)
    plan = _select.subplan(full, chosen)
    run_dir = RunDir.for_workflow(path)
    # Refused here, not when the first job script is rendered: nothing may be written first.
    _jobs.check_run_path(str(run_dir.path.parent), "workflow directory")
    for catalog in settings.catalogs:  # its SIF paths go into job scripts and From: lines
        _jobs.check_path(os.path.abspath(os.path.expanduser(catalog)), "catalog")
    secrets = _read_secrets(plan, env, _notify.effective(plan.workflow.notify, settings))
    name, reason = choose_executor(executor, settings, Slurm(runner), env)
    ex = make_executor(name, settings, runner, on_message=say)
    say(f"executor: {name} ({reason})")
    if detach and not ex.detached:
        raise SubmitError(
            f"--detach: the {name} executor runs tasks inside `hpcml run` (there is no daemon), so they "
            "would end with it; run it in tmux/screen or with nohup, or use SLURM"
        )
    ex.ready()  # SLURM: a controller that does not answer is waited for, before anything is written
    ex.check_plan(plan)  # a step that can never run here fails before any image build
    ensure = ensure_images or functools.partial(_ensure_images, progress=on_image)
    ctx = _Context(plan, Path(path), run_dir, settings, ex, reason, secrets, runner, ensure, say, chosen, selection)
    if selection is not None and selection.narrowed:
        say(f"selection: {', '.join(plan.step_order)} ({selection.describe()}; the other steps are left out)")
    lock = RunLock(run_dir)
    lock.acquire()
    progress = _Progress()
    try:
        return _start_locked(ctx, lock, progress)
    except KeyboardInterrupt:
        lock.release()
        raise interrupted(run_dir, progress.run_id, ex, progress.jobs) from None
    except OSError as err:
        lock.release()
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise SubmitError(_disk_full(err, run_dir, progress)) from None
    except ClusterRefused as err:
        lock.release()
        raise SubmitError(_refused(err, progress)) from None
    except BaseException:
        lock.release()
        raise


def _start_locked(ctx: _Context, lock: RunLock, progress: _Progress) -> RunStarted:
    wf = ctx.plan.workflow
    if ctx.runner is None or isinstance(ctx.runner, LocalRunner):  # an sbatch over SSH runs elsewhere
        # Before any look for live jobs: an sbatch of a killed run may still create one.
        wait_for_orphans(ctx.run_dir.path / "runs", say=ctx.say, timeout_s=ctx.settings.slurm_wait_s)
    if ctx.executor.name != "slurm":
        refuse_if_queued_on_slurm(ctx.run_dir, wf.name, ctx.settings, ctx.runner, ctx.say)
    if _lacks_upstream(ctx, _complete(ctx), {}):
        # Refused before any image is built unless a live job makes what is missing.
        _refuse_missing_upstream(ctx, _complete(ctx), live_tasks(ctx.executor, ctx.run_dir, wf.name))
    sifs, builds = _ensure_busy_images(ctx)
    adopted, arrays = reconcile(ctx.executor, ctx.run_dir, wf.name)
    cached = _complete(ctx)
    todo = _todo(ctx, cached, adopted)
    _refuse_missing_upstream(ctx, cached, adopted)
    sub = _open_run(ctx, sifs, cached, adopted, todo, builds, whole_arrays(arrays, cached, adopted))
    progress.run_id = sub.run_id
    jobs = _submit_steps(ctx, sub, progress)
    _submit_notify(ctx, sub, jobs)
    submitted = sum(map(len, todo.values()))
    return RunStarted(sub.run_id, ctx.run_dir, wf.name, ctx.executor, ctx.reason, jobs, len(cached), len(adopted), submitted, lock)


def _complete(ctx: _Context) -> set[str]:
    """Keys of the tasks whose exit code is 0 (a forced task never counts as complete)."""
    return {t.key for sp in ctx.plan.steps.values() for t in sp.tasks
            if t.key not in ctx.chosen.forced and read_exit_code(ctx.run_dir.task(t.step, t.key)) == 0}


def _todo(ctx: _Context, cached: set[str], adopted: Mapping[str, str]) -> dict[str, list[Task]]:
    """Per step, the tasks to submit: those the selection lets run that are neither
    complete nor live in an earlier run's job."""
    return {step: [t for t in sp.tasks if ctx.chosen.may_run(t.key) and t.key not in cached and t.key not in adopted]
            for step, sp in ctx.plan.steps.items()}


def _refuse_missing_upstream(ctx: _Context, cached: set[str], adopted: Mapping[str, str]) -> None:
    """SubmitError when a task to submit reads an upstream output that is neither complete,
    nor being made by a live job, nor submitted by this run (a narrowed run only)."""
    missing = _lacks_upstream(ctx, cached, adopted)
    if missing:
        raise SubmitError(_select.missing_message(missing, ctx.selection))


def _lacks_upstream(ctx: _Context, cached: set[str], adopted: Mapping[str, str]) -> dict[str, list[str]]:
    if ctx.chosen.runnable is None:
        return {}  # every task may run: an upstream task is complete, live or submitted
    todo = [t.key for tasks in _todo(ctx, cached, adopted).values() for t in tasks]
    return _select.missing_upstream(ctx.plan, todo, cached | set(adopted))


def _ensure_busy_images(ctx: _Context) -> tuple[dict[str, str], Builds]:
    """The SIF of every image of a step with unfinished tasks (with build_on = "slurm" on
    SLURM: where its build job will publish it), and the build jobs submitted or found.

    Images come first; only then is it asked which of those tasks are still queued: an
    image build can take an hour, and a job adopted before it could fail and be forgotten
    by SLURM meanwhile, and `afterok` on a forgotten job id counts as satisfied (its
    downstream would run without its input).
    """
    done = _complete(ctx)
    busy = sorted({sp.step.image for sp in ctx.plan.steps.values()
                   if any(t.key not in done and ctx.chosen.may_run(t.key) for t in sp.tasks)})
    if not busy:
        return {}, Builds()
    builds = Builds()
    if ctx.settings.build_on == "slurm" and ctx.executor.name == "slurm":
        ctx.say(f"images: {', '.join(busy)} (reused from the catalog, or built by SLURM jobs)")
        builds = submit_builds(ctx.plan, ctx.settings, busy, runner=ctx.runner, say=ctx.say, workflow_path=ctx.path)
        sifs = {name: builds.sifs[name] for name in busy}
    else:
        if ctx.settings.build_on == "slurm":
            ctx.say(f"images: build_on = slurm, but the {ctx.executor.name} executor builds on this machine")
        ctx.say(f"images: {', '.join(busy)} (reused from the catalog, or built now)")
        sifs = ctx.ensure_images(ctx.plan, ctx.settings, busy)
    for image, sif in sorted(sifs.items()):
        _jobs.check_path(sif, f"image {image}")
    return sifs, builds


def _open_run(
    ctx: _Context, sifs: Mapping[str, str], cached: set[str], adopted: Mapping[str, str], todo: Mapping[str, Sequence[Task]],
    builds: Builds,
    whole: frozenset[str] = frozenset(),
) -> _Submission:
    """Create runs/<id>/ and journal the run and its reconciliation."""
    cluster = _cluster_facts(ctx) if any(todo.values()) else _Cluster("gres", 1001)
    run_id = new_run_id(after=ctx.run_dir.latest_run())
    paths = ctx.run_dir.run(run_id)
    journal = Journal(paths.journal)
    _write_run_files(ctx.plan, ctx.path, paths, cached, adopted)
    wf = ctx.plan.workflow
    journal.append("run", run=run_id, workflow=wf.name, path=str(ctx.path.resolve()), executor=ctx.executor.name, reason=ctx.reason,
                   provenance=provenance(ctx.settings, ctx.runner, slurm=ctx.executor.name == "slurm"))
    journal.append("reconciled", cached=sorted(cached), adopted=adopted)
    for job in builds.jobs.values():
        journal.append("build", **build_journal_fields(job))
    ctx.say(f"run {run_id}: {len(cached)} cached, {len(adopted)} already queued, {sum(map(len, todo.values()))} to submit")
    return _Submission(run_id, paths, journal, sifs, cluster, adopted, todo, builds, whole)


def _submit_steps(ctx: _Context, sub: _Submission, progress: _Progress) -> dict[str, list[str]]:
    """Per step in DAG order: task directories (durable), then one submission per chunk."""
    submitted_refs: dict[str, str] = {}  # task key → job ref in this run
    jobs_by_step: dict[str, list[str]] = {}
    batch = DurableBatch()
    for step in ctx.plan.step_order:
        sp = ctx.plan.steps[step]
        _write_step_files(sub.paths, sp, ctx.secrets)
        if not sub.todo[step]:
            continue
        for task in sub.todo[step]:
            prepare_task(ctx.run_dir, ctx.plan, task, batch)
        batch.flush()  # on disk before any job can read them
        key_by_index = {t.index: t.key for t in sp.tasks}
        deps = _dependencies(ctx.plan, sp, submitted_refs, sub.adopted, sub.whole) + sub.builds.chain_jobs(ctx.plan, sp.step.image)
        for job in _step_jobs(ctx, sub, sp):
            job_id = _submit_job(ctx, sub, job, deps, progress)
            jobs_by_step.setdefault(step, []).append(job_id)
            for index in job.indices:
                submitted_refs[key_by_index[index]] = job_id
    return jobs_by_step


def _submit_notify(ctx: _Context, sub: _Submission, jobs: Mapping[str, Sequence[str]]) -> None:
    """The run's notification jobs, queued behind all of its jobs (run/notify.py)."""
    notify = _notify.effective(ctx.plan.workflow.notify, ctx.settings)
    if notify is None:
        return
    if ctx.executor.name != "slurm":
        ctx.say("notify: notifications are sent by a SLURM job; this run is not on SLURM, so none is sent")
        return
    ids = sorted({j for ids in jobs.values() for j in ids} | {ref.split("_", 1)[0] for ref in sub.adopted.values()}
                 | {b.job_id for b in sub.builds.jobs.values()}, key=int)
    queued = _notify.submit_jobs(
        notify, workflow=ctx.plan.workflow.name, run_dir=ctx.run_dir, paths=sub.paths, journal=sub.journal, job_ids=ids,
        webhook_url=ctx.secrets.get(notify.webhook) if notify.webhook else None, python=sys.executable, runner=ctx.runner,
    )
    for event, job_id in queued.items():
        ctx.say(f"notify on {event}: job {job_id}")


def _submit_job(ctx: _Context, sub: _Submission, job: StepJob, deps: Sequence[str], progress: _Progress) -> str:
    """Journal the intent, submit, journal the job id: a crash between them is reconciled."""
    step = job.step.step.name
    sub.journal.append("intent", step=step, chunk=job.chunk, offset=job.offset, indices=list(job.indices), name=job.name)
    job_id = ctx.executor.submit(job, deps)
    progress.jobs += 1
    progress.submitted.append(f"{step}{'' if job.chunk is None else f' chunk {job.chunk}'} (job {job_id})")
    sub.journal.append("submitted", step=step, chunk=job.chunk, offset=job.offset, job_id=job_id, name=job.name)
    ctx.say(f"submitted {step}{'' if job.chunk is None else f' chunk {job.chunk}'}: job {job_id}")
    return job_id


def _refused(err: ClusterRefused, progress: _Progress) -> str:
    """What the cluster's refusal of a job did to a run being submitted, and what to do."""
    sbatch = str(err).strip().splitlines()
    keep = "keeps" if len(progress.submitted) == 1 else "keep"
    done = (f"run {progress.run_id} had submitted {', '.join(progress.submitted)}, which {keep} running; "
            if progress.submitted else "")
    return (f"the cluster refuses more jobs: {err.why}. {done}the rest was not submitted (`hpcml status` shows "
            f"it `not submitted`); rerun `hpcml run` once jobs have ended or the limit is raised (queued jobs are "
            f"not submitted twice). sbatch said: {sbatch[-1].strip() if sbatch else ''}")


def _disk_full(err: OSError, run_dir: RunDir, progress: _Progress) -> str:
    """What a full file system (or quota) did to a run being submitted, and what to do."""
    where = err.filename or run_dir.path
    what = "no space left" if err.errno == errno.ENOSPC else "disk quota exceeded"
    if progress.submitted:
        done = (f"run {progress.run_id} had submitted {', '.join(progress.submitted)}, which "
                f"{'keeps' if len(progress.submitted) == 1 else 'keep'} running (a task that cannot write its "
                "files on the full file system fails); nothing else was submitted")
    else:
        done = "nothing was submitted"
    return (f"{what} on the device of {where} (the run directory {run_dir.path}): {done}. Free space there "
            "(`df -h`) and rerun `hpcml run`: completed tasks are not rerun and queued "
            "ones are not submitted twice")


def _catalog_resolver(settings: Settings, runner: Runner | None) -> Callable[[str, str | None], str]:
    def resolve(name: str, tag: str | None) -> str:
        return _images.catalog_path(settings, runner).find(f"{name}:{tag or 'latest'}").key

    return resolve


def _ensure_images(
    plan: Plan, settings: Settings, names: Sequence[str], progress: _images.Progress | None = None
) -> dict[str, str]:
    return _images.ensure(plan, settings, names=names, progress=progress)


def _read_secrets(plan: Plan, env: Mapping[str, str], notify: Notify | None = None) -> dict[str, str]:
    wanted = sorted({s for sp in plan.steps.values() for s in sp.step.secrets})
    hook = notify.webhook if notify else None
    if hook is not None and hook not in env:
        raise SubmitError(f"secret {hook} (notify.webhook) is not set in this environment; export it before `hpcml run`")
    missing = [s for s in wanted if s not in env]
    if missing:
        steps = sorted(n for n, sp in plan.steps.items() if set(sp.step.secrets) & set(missing))
        raise SubmitError(
            f"secret(s) {', '.join(missing)} (needed by step {', '.join(steps)}) are not set in this environment; "
            "export them before `hpcml run`"
        )
    return {s: env[s] for s in [*wanted, *([hook] if hook else [])]}


def _cluster_facts(ctx: _Context) -> _Cluster:
    if ctx.executor.name != "slurm":
        return _Cluster("gres", 10**9)
    config = Slurm(ctx.runner).show_config()
    return _Cluster(style_from_config(config, ctx.settings.gpu_request), max_array_size(config))


def _write_run_files(plan: Plan, path: Path, paths: RunPaths, cached: set[str], adopted: Mapping[str, str]) -> None:
    """Create runs/<id>/ whole: its files are written under a hidden name that is renamed
    into place, so a crash never leaves a run without its plan (which `status` needs)."""
    staging = RunPaths(paths.root.with_name(f".{paths.run_id}.tmp"), paths.run_id)
    staging.root.mkdir(parents=True, exist_ok=False)
    for d in (staging.defs, staging.jobs, staging.slurm):
        d.mkdir()
    atomic_write(staging.workflow, path.read_bytes())
    for name, image in plan.images.items():
        atomic_write(staging.defs / f"{name}.def", image.definition)
    atomic_write(staging.plan, planfile.dumps(planfile.from_plan(plan, paths.run_id, cached, adopted)))
    os.rename(staging.root, paths.root)


def _write_step_files(paths: RunPaths, sp: StepPlan, secrets: Mapping[str, str]) -> None:
    """The step's task manifest (index → key) and, when it has secrets, its env file (0600)."""
    atomic_write(paths.manifest(sp.step.name), _jobs.render_manifest(sp.tasks))
    if sp.step.secrets:
        text = _jobs.render_env_file([(s, secrets[s]) for s in sp.step.secrets])
        paths.env.mkdir(mode=0o700, exist_ok=True)
        atomic_write(paths.env_file(sp.step.name), text, mode=0o600)


def whole_arrays(arrays: Mapping[str, frozenset[str]], complete: set[str], adopted: Mapping[str, str]) -> frozenset[str]:
    """The array jobs of earlier runs that a downstream job may wait for whole: every task
    they were submitted with is live now or complete (one of theirs that failed would make
    `afterok:<array>` fail, though this run resubmits that task on its own)."""
    return frozenset(job for job, keys in arrays.items() if all(k in complete or k in adopted for k in keys))


def _dependencies(
    plan: Plan, sp: StepPlan, submitted: Mapping[str, str], adopted: Mapping[str, str], whole: frozenset[str] = frozenset()
) -> list[str]:
    """afterok job refs: the live jobs of this step's upstream tasks, each array job once as
    a whole where it may be (this run's own, and `whole` of earlier runs), else task by task.
    A sweep's dependency list then grows with its chunks, not its tasks (3,000 task ids made
    a 30 KB argument; the kernel refuses one over 128 KiB)."""
    refs: dict[str, None] = {}  # ordered, and a set: a fan-in may have thousands
    for up in sp.step.needs:
        for t in plan.steps[up].tasks:
            ref = submitted.get(t.key) or adopted.get(t.key)
            if ref is not None and "_" in ref and ref.split("_", 1)[0] in whole:
                ref = ref.split("_", 1)[0]
            if ref is not None:
                refs[ref] = None
    return list(refs)


def _chunks(sp: StepPlan, todo: Sequence[Task], max_array: int) -> dict[int | None, list[int]]:
    """Task indices per array chunk, so array indices stay below MaxArraySize (None: one job)."""
    indices = sorted(t.index for t in todo)
    if not (sp.is_array and indices[-1] >= max_array):
        return {None: indices}
    chunks: dict[int | None, list[int]] = {}
    for i in indices:
        chunks.setdefault(i // max_array, []).append(i)
    return chunks


def _step_jobs(ctx: _Context, sub: _Submission, sp: StepPlan) -> Iterator[StepJob]:
    """One StepJob per chunk of the step's tasks to submit; its script written."""
    by_index = {t.index: t for t in sp.tasks}
    for chunk, idx in _chunks(sp, sub.todo[sp.step.name], sub.cluster.max_array).items():
        offset = 0 if chunk is None else chunk * sub.cluster.max_array
        spec = _script_spec(ctx, sub, sp, tuple(idx), chunk, offset)
        script = sub.paths.script(sp.step.name, chunk)
        atomic_write(script, _jobs.render_step_script(spec), mode=0o755)
        yield StepJob(
            name=spec.job_name,
            script=script,
            step=sp,
            indices=tuple(idx),
            array=sp.is_array,
            offset=offset,
            chunk=chunk,
            task_dirs={i: str(ctx.run_dir.task(sp.step.name, by_index[i].key)) for i in idx},
            output=f"{sub.paths.slurm}/{sp.step.name}.{'%A_%a' if sp.is_array else '%j'}.out",
        )


def _script_spec(
    ctx: _Context, sub: _Submission, sp: StepPlan, indices: tuple[int, ...], chunk: int | None, offset: int
) -> _jobs.ScriptSpec:
    step = sp.step
    return _jobs.ScriptSpec(
        workflow=ctx.plan.workflow.name,
        run_id=sub.run_id,
        step=step,
        sif=sub.sifs[step.image],
        shell=step_shell(ctx.plan, sp),
        run_dir=str(ctx.run_dir.path),
        workflow_root=str(ctx.run_dir.path.parent),
        run_root=str(sub.paths.root),
        indices=indices,
        array=sp.is_array,
        offset=offset,
        chunk=chunk,
        gpu_style=sub.cluster.gpu_style,
        apptainer=ctx.settings.apptainer,
        exec_flags=ctx.settings.exec_flags,
        env_file=str(sub.paths.env_file(step.name)) if step.secrets else None,
        verify_key=ctx.settings.verify_key if ctx.settings.require_signatures else None,
    )
