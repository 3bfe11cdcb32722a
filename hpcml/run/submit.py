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

A rerun after a crash (even `kill -9` between sbatch and the journal) finds the jobs of
the dead run by name and depends on them instead of submitting them again. Following the
run once submitted is run/status.py's `watch`.

Example:

    started = start("workflow.yaml", settings)
    final = watch(started, on_update=print)
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcml import plan as _plan
from hpcml.clients.runner import Runner
from hpcml.clients.slurm import Slurm, max_array_size
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
from hpcml.run.buildjobs import Builds, build_journal_fields, submit_builds
from hpcml.run.journal import Journal
from hpcml.run.reconcile import live_tasks, refuse_if_queued_on_slurm
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


@dataclass
class _Progress:
    """How far `start` got: read when it is interrupted."""

    run_id: str | None = None
    jobs: int = 0  # jobs submitted so far


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
) -> RunStarted:
    """Submit every task of the workflow at `path` that is neither complete nor live.

    Raises SpecError for an invalid workflow, SubmitError/BuildError/StateError otherwise,
    and RunInterrupted on KeyboardInterrupt once the lock is taken; nothing is written to
    the run directory before the workflow, secrets and images are ok. `on_image` gets every
    images.ImageEvent (cached, building, done, …) while images are ensured.
    """
    env = os.environ if env is None else env
    say = on_message or (lambda _m: None)
    plan = _plan.build(_spec.load(path), _catalog_resolver(settings, runner))
    run_dir = RunDir.for_workflow(path)
    # Refused here, not when the first job script is rendered: nothing may be written first.
    _jobs.check_path(str(run_dir.path.parent), "workflow directory")
    secrets = _read_secrets(plan, env, _notify.effective(plan.workflow.notify, settings))
    name, reason = choose_executor(executor, settings, Slurm(runner), env)
    ex = make_executor(name, settings, runner)
    say(f"executor: {name} ({reason})")
    if detach and not ex.detached:
        raise SubmitError(
            f"--detach: the {name} executor runs tasks inside `hpcml run` (there is no daemon), so they "
            "would end with it; run it in tmux/screen or with nohup, or use SLURM"
        )
    ex.check_plan(plan)  # a step that can never run here fails before any image build
    ensure = ensure_images or functools.partial(_ensure_images, progress=on_image)
    ctx = _Context(plan, Path(path), run_dir, settings, ex, reason, secrets, runner, ensure, say)
    lock = RunLock(run_dir)
    lock.acquire()
    progress = _Progress()
    try:
        return _start_locked(ctx, lock, progress)
    except KeyboardInterrupt:
        lock.release()
        raise interrupted(run_dir, progress.run_id, ex, progress.jobs) from None
    except BaseException:
        lock.release()
        raise


def _start_locked(ctx: _Context, lock: RunLock, progress: _Progress) -> RunStarted:
    wf = ctx.plan.workflow
    if ctx.executor.name != "slurm":
        refuse_if_queued_on_slurm(ctx.run_dir, wf.name, ctx.settings, ctx.runner)
    sifs, builds = _ensure_busy_images(ctx)
    adopted = live_tasks(ctx.executor, ctx.run_dir, wf.name)
    cached = _complete(ctx)
    todo = {
        step: [t for t in sp.tasks if t.key not in cached and t.key not in adopted] for step, sp in ctx.plan.steps.items()
    }
    sub = _open_run(ctx, sifs, cached, adopted, todo, builds)
    progress.run_id = sub.run_id
    jobs = _submit_steps(ctx, sub, progress)
    _submit_notify(ctx, sub, jobs)
    submitted = sum(map(len, todo.values()))
    return RunStarted(sub.run_id, ctx.run_dir, wf.name, ctx.executor, ctx.reason, jobs, len(cached), len(adopted), submitted, lock)


def _complete(ctx: _Context) -> set[str]:
    """Keys of the tasks whose exit code is 0."""
    return {t.key for sp in ctx.plan.steps.values() for t in sp.tasks
            if read_exit_code(ctx.run_dir.task(t.step, t.key)) == 0}


def _ensure_busy_images(ctx: _Context) -> tuple[dict[str, str], Builds]:
    """The SIF of every image of a step with unfinished tasks (with build_on = "slurm" on
    SLURM: where its build job will publish it), and the build jobs submitted or found.

    Images come first; only then is it asked which of those tasks are still queued: an
    image build can take an hour, and a job adopted before it could fail and be forgotten
    by SLURM meanwhile, and `afterok` on a forgotten job id counts as satisfied (its
    downstream would run without its input).
    """
    done = _complete(ctx)
    busy = sorted({sp.step.image for sp in ctx.plan.steps.values() if any(t.key not in done for t in sp.tasks)})
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
    return _Submission(run_id, paths, journal, sifs, cluster, adopted, todo, builds)


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
        deps = _dependencies(ctx.plan, sp, submitted_refs, sub.adopted) + sub.builds.chain_jobs(ctx.plan, sp.step.image)
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
    sub.journal.append("submitted", step=step, chunk=job.chunk, offset=job.offset, job_id=job_id, name=job.name)
    ctx.say(f"submitted {step}{'' if job.chunk is None else f' chunk {job.chunk}'}: job {job_id}")
    return job_id


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


def _dependencies(plan: Plan, sp: StepPlan, submitted: Mapping[str, str], adopted: Mapping[str, str]) -> list[str]:
    """afterok job refs: the live jobs of this step's upstream tasks (whole arrays once)."""
    refs: list[str] = []
    for up in sp.step.needs:
        for t in plan.steps[up].tasks:
            ref = submitted.get(t.key) or adopted.get(t.key)
            if ref is not None and ref not in refs:
                refs.append(ref)
    return refs


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
