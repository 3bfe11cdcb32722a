"""Runs: prepare `.hpcml/`, submit the DAG, follow it; status, logs, cancel and history.

`start()` does, under the run directory's lock:

1. classify every task: complete (exit code 0: cached), live in an earlier run's job
   (adopted: found with one squeue by job name and that run's manifest), or to submit;
2. ensure the images of the steps that have work, render one job script per step (per
   chunk at MaxArraySize), write task directories, manifests and the secrets file;
3. per step in DAG order: journal an intent, sbatch with `afterok` on the live jobs of the
   upstream tasks, journal the job id.

A rerun after a crash (even `kill -9` between sbatch and the journal) finds the jobs of
the dead run by name and depends on them instead of submitting them again.

Example:

    started = start("workflow.yaml")
    final = watch(started, on_update=print)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcml import plan as _plan
from hpcml.clients.runner import Runner
from hpcml.clients.slurm import Slurm, max_array_size
from hpcml.config import Settings
from hpcml.errors import RunInterrupted, StateError, SubmitError
from hpcml.executors.base import Executor, StepJob
from hpcml.model import Plan, StepPlan, Task
from hpcml.render import jobs as _jobs
from hpcml.render.gpus import GpuStyle, style_from_config
from hpcml.results import RunStatus, RunSummary
from hpcml.run.durable import DurableBatch, atomic_write
from hpcml.run.journal import Journal, read_journal
from hpcml.run.rundir import RunDir, RunLock, RunPaths, new_run_id
from hpcml.run.tasks import (
    ACTIVE,
    FAILED,
    TaskState,
    derive_state,
    read_exit_code,
    read_task_files,
)
from hpcml.spec import checker as _spec

log = logging.getLogger(__name__)

PLAN_VERSION = 1


# ---- results ---------------------------------------------------------------------------


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
        if self.lock is not None:
            self.lock.release()
            self.lock = None


# ---- executor choice ----------------------------------------------------------------------


def choose_executor(
    flag: str | None, settings: Settings, slurm: Slurm, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(executor name, why): the flag, else the `executor` setting, else SLURM when sbatch
    works here, else local."""
    env = os.environ if env is None else env
    if flag:
        return flag, "chosen with --executor"
    if settings.executor != "auto":
        # The environment wins over the files (docs/configuration.md): name what decided.
        where = (f"HPCML_EXECUTOR={env['HPCML_EXECUTOR']}" if env.get("HPCML_EXECUTOR")
                 else f"`executor` in {', '.join(settings.sources) or 'the configuration'}")
        return settings.executor, f"set by {where}"
    ok, why = slurm.usable()
    return ("slurm", why) if ok else ("local", f"{why}; running tasks on this machine")


def make_executor(name: str, settings: Settings, runner: Runner | None = None) -> Executor:
    """The executor called `name` (slurm or local)."""
    if name == "slurm":
        from hpcml.executors.slurm import SlurmExecutor

        return SlurmExecutor(Slurm(runner))
    if name == "local":
        try:
            from hpcml.executors.local.executor import LocalExecutor  # type: ignore[import-not-found]
        except ImportError:
            raise SubmitError("the local executor is not available in this version of hpcml; use --executor slurm") from None
        return LocalExecutor.from_settings(settings)  # type: ignore[no-any-return]
    raise SubmitError(f"unknown executor {name!r}; allowed: slurm, local")


# ---- start ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    gpu_style: GpuStyle
    max_array: int


def start(
    path: str | os.PathLike[str],
    settings: Settings,
    *,
    executor: str | None = None,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
    ensure_images: Callable[[Plan, Settings, Sequence[str]], dict[str, str]] | None = None,
    on_message: Callable[[str], None] | None = None,
    detach: bool = False,
    on_image: Callable[[Any], None] | None = None,
) -> RunStarted:
    """Submit every task of the workflow at `path` that is neither complete nor live.

    Raises SpecError for an invalid workflow, SubmitError/BuildError/StateError otherwise;
    nothing is written to the run directory before the workflow, secrets and images are ok.
    `on_image` gets every images.ImageEvent (cached, building, done, …) while images are ensured.
    """
    env = os.environ if env is None else env
    say = on_message or (lambda _m: None)
    workflow = _spec.load(path)
    plan = _plan.build(workflow, _catalog_resolver(settings, runner))
    run_dir = RunDir.for_workflow(path)
    # Refused here, not when the first job script is rendered: nothing may be written first.
    _jobs.check_path(str(run_dir.path.parent), "workflow directory")
    secrets = _read_secrets(plan, env)
    name, reason = choose_executor(executor, settings, Slurm(runner), env)
    ex = make_executor(name, settings, runner)
    say(f"executor: {name} ({reason})")
    # ---- checks of executors that run tasks inside `hpcml run` ----
    if detach and not ex.detached:
        raise SubmitError(
            f"--detach: the {name} executor runs tasks inside `hpcml run` (there is no daemon), so they "
            "would end with it; run it in tmux/screen or with nohup, or use SLURM"
        )
    check_plan = getattr(ex, "check_plan", None)
    if check_plan is not None:  # a step that can never run here fails before any image build
        check_plan(plan)
    lock = RunLock(run_dir)
    lock.acquire()
    progress = _Progress(run_dir, ex)
    try:
        ensure = ensure_images or functools.partial(_ensure_images, progress=on_image)
        return _start_locked(plan, Path(path), run_dir, settings, ex, reason, secrets, runner, ensure, say, lock, progress)
    except KeyboardInterrupt:
        lock.release()
        raise interrupted(run_dir, progress.run_id, ex, progress.jobs) from None
    except BaseException:
        lock.release()
        raise


@dataclass
class _Progress:
    """How far `start` got: read when it is interrupted."""

    run_dir: RunDir
    executor: Executor
    run_id: str | None = None
    jobs: int = 0  # jobs submitted so far


def interrupted(run_dir: RunDir, run_id: str | None, ex: Executor, jobs: int) -> RunInterrupted:
    """The error for a run interrupted after submitting `jobs` jobs. An executor that is not
    detached (local) cannot keep its tasks once `hpcml run` ends: they are cancelled here."""
    cancelled = False
    if jobs and run_id is not None and not ex.detached:
        cancel(run_dir, run_id, ex)
        cancelled = True
    return RunInterrupted(submitted=jobs, executor=ex.name, tasks_cancelled=cancelled, run_id=run_id)


def _start_locked(
    plan: Plan,
    path: Path,
    run_dir: RunDir,
    settings: Settings,
    ex: Executor,
    reason: str,
    secrets: Mapping[str, str],
    runner: Runner | None,
    ensure_images: Callable[[Plan, Settings, Sequence[str]], dict[str, str]],
    say: Callable[[str], None],
    lock: RunLock,
    progress: _Progress,
) -> RunStarted:
    wf = plan.workflow
    if ex.name != "slurm":
        _refuse_if_queued_on_slurm(run_dir, wf.name, settings, runner)

    def complete() -> set[str]:
        return {t.key for sp in plan.steps.values() for t in sp.tasks
                if read_exit_code(run_dir.task(t.step, t.key)) == 0}

    # Images first, for every step with unfinished tasks; only then ask which of those
    # tasks are still queued: an image build can take an hour, and a job adopted before it
    # could fail and be forgotten by SLURM meanwhile, and `afterok` on a forgotten job id
    # counts as satisfied (its downstream would run without its input).
    done_before = complete()
    busy_images = sorted({sp.step.image for sp in plan.steps.values() if any(t.key not in done_before for t in sp.tasks)})
    if busy_images:
        say(f"images: {', '.join(busy_images)} (reused from the catalog, or built now)")
    sifs = ensure_images(plan, settings, busy_images) if busy_images else {}
    for image, sif in sorted(sifs.items()):
        _jobs.check_path(sif, f"image {image}")
    adopted = _reconcile(ex, run_dir, wf.name)
    cached = complete()
    todo = {
        step: [t for t in sp.tasks if t.key not in cached and t.key not in adopted] for step, sp in plan.steps.items()
    }
    busy = [s for s in plan.step_order if todo[s]]
    cluster = _cluster_facts(ex, settings, runner) if busy else _Cluster("gres", 1001)

    run_id = new_run_id(after=run_dir.latest_run())
    paths = run_dir.run(run_id)
    journal = Journal(paths.journal)
    progress.run_id = run_id
    _write_run_files(plan, path, paths, cached, adopted)
    journal.append("run", run=run_id, workflow=wf.name, path=str(path.resolve()), executor=ex.name, reason=reason)
    journal.append("reconciled", cached=sorted(cached), adopted=adopted)
    say(f"run {run_id}: {len(cached)} cached, {len(adopted)} already queued, {sum(map(len, todo.values()))} to submit")

    submitted_refs: dict[str, str] = {}  # task key → job ref in this run
    jobs_by_step: dict[str, list[str]] = {}
    batch = DurableBatch()
    for step in plan.step_order:
        sp = plan.steps[step]
        _jobs_dir_files(run_dir, paths, sp, secrets)
        if not todo[step]:
            continue
        for task in todo[step]:
            _prepare_task(run_dir, plan, task, batch)
        batch.flush()  # on disk before any job can read them
        key_by_index = {t.index: t.key for t in sp.tasks}
        deps = _dependencies(plan, sp, submitted_refs, adopted)
        for job in _step_jobs(wf.name, run_id, run_dir, paths, sp, todo[step], sifs, cluster, settings, _shell(plan, sp)):
            journal.append(
                "intent", step=step, chunk=job.chunk, offset=job.offset, indices=list(job.indices), name=job.name
            )
            job_id = ex.submit(job, deps)
            progress.jobs += 1
            journal.append("submitted", step=step, chunk=job.chunk, offset=job.offset, job_id=job_id, name=job.name)
            jobs_by_step.setdefault(step, []).append(job_id)
            for index in job.indices:
                submitted_refs[key_by_index[index]] = job_id
            say(f"submitted {step}{'' if job.chunk is None else f' chunk {job.chunk}'}: job {job_id}")
    return RunStarted(
        run_id,
        run_dir,
        wf.name,
        ex,
        reason,
        jobs_by_step,
        len(cached),
        len(adopted),
        sum(map(len, todo.values())),
        lock,
    )


def _catalog_resolver(settings: Settings, runner: Runner | None) -> Callable[[str, str | None], str]:
    def resolve(name: str, tag: str | None) -> str:
        from hpcml.images.ensure import catalog_path

        return catalog_path(settings, runner).find(f"{name}:{tag or 'latest'}").key

    return resolve


def _ensure_images(
    plan: Plan, settings: Settings, names: Sequence[str], progress: Callable[[Any], None] | None = None
) -> dict[str, str]:
    from hpcml.images import ensure as images

    return images.ensure(plan, settings, names=names, progress=progress)


def _read_secrets(plan: Plan, env: Mapping[str, str]) -> dict[str, str]:
    wanted = sorted({s for sp in plan.steps.values() for s in sp.step.secrets})
    missing = [s for s in wanted if s not in env]
    if missing:
        steps = sorted(n for n, sp in plan.steps.items() if set(sp.step.secrets) & set(missing))
        raise SubmitError(
            f"secret(s) {', '.join(missing)} (needed by step {', '.join(steps)}) are not set in this environment; "
            "export them before `hpcml run`"
        )
    return {s: env[s] for s in wanted}


def _cluster_facts(ex: Executor, settings: Settings, runner: Runner | None) -> _Cluster:
    if ex.name != "slurm":
        return _Cluster("gres", 10**9)
    config = Slurm(runner).show_config()
    return _Cluster(style_from_config(config, settings.gpu_request), max_array_size(config))


def _refuse_if_queued_on_slurm(run_dir: RunDir, workflow: str, settings: Settings, runner: Runner | None) -> None:
    """Another executor must not take tasks that SLURM still holds: they would run twice."""
    on_slurm = [r for r in run_dir.run_ids() if any(
        rec.get("event") == "run" and rec.get("executor") == "slurm" for rec in read_journal(run_dir.run(r).journal))]
    if not on_slurm or not Slurm(runner).usable()[0]:
        return
    live = _reconcile(make_executor("slurm", settings, runner), run_dir, workflow)
    if live:
        raise SubmitError(
            f"{len(live)} task(s) of workflow {workflow} are still queued or running on SLURM (run "
            f"{on_slurm[-1]}); a task taken by two executors would run twice: wait for them "
            "(`hpcml status`), cancel them (`hpcml cancel`), or run with --executor slurm"
        )


def _reconcile(ex: Executor, run_dir: RunDir, workflow: str) -> dict[str, str]:
    """Task key → job ref of every live task of this workflow (one squeue call)."""
    live = ex.live_jobs(f"hpcml.{workflow}.")
    if not live:
        return {}
    out: dict[str, str] = {}
    manifests: dict[tuple[str, str], dict[int, str]] = {}
    offsets: dict[str, dict[tuple[str, int | None], int]] = {}
    for job in live:
        parsed = _jobs.parse_job_name(job.name)
        if parsed is None or parsed[0] != workflow:
            continue
        _wf, run_id, step, chunk = parsed
        paths = run_dir.run(run_id)
        if (run_id, step) not in manifests:
            try:
                manifests[(run_id, step)] = _jobs.parse_manifest(paths.manifest(step).read_text())
            except OSError:
                manifests[(run_id, step)] = {}  # a job of another directory's run: not ours
        if run_id not in offsets:
            offsets[run_id] = {(r["step"], r.get("chunk")): int(r.get("offset", 0)) for r in read_journal(paths.journal) if r["event"] == "intent"}
        offset = offsets[run_id].get((step, chunk), 0)
        index = offset + (job.array_task or 0)
        key = manifests[(run_id, step)].get(index)
        if key is not None:
            out.setdefault(key, job.ref)
    return out


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
    atomic_write(staging.plan, json.dumps(plan_document(plan, paths.run_id, cached, adopted), indent=1, sort_keys=True))
    os.rename(staging.root, paths.root)


def plan_document(plan: Plan, run_id: str, cached: set[str], adopted: Mapping[str, str]) -> dict[str, Any]:
    """plan.json: what `status` needs to know of the run without re-reading the workflow."""
    return {
        "version": PLAN_VERSION,
        "run": run_id,
        "workflow": plan.workflow.name,
        "path": plan.workflow.path,
        "steps": [
            {
                "name": name,
                "image": plan.steps[name].step.image,
                "image_key": plan.steps[name].image_key,
                "array": plan.steps[name].is_array,
                "needs": list(plan.steps[name].step.needs),
                "tasks": [
                    {"index": t.index, "key": t.key, "point": dict(t.point), "upstream": list(t.upstream)}
                    for t in plan.steps[name].tasks
                ],
            }
            for name in plan.step_order
        ],
        "cached": sorted(cached),
        "adopted": dict(adopted),
    }


def _jobs_dir_files(run_dir: RunDir, paths: RunPaths, sp: StepPlan, secrets: Mapping[str, str]) -> None:
    atomic_write(paths.manifest(sp.step.name), _jobs.render_manifest(sp.tasks))
    if sp.step.secrets:
        text = _jobs.render_env_file([(s, secrets[s]) for s in sp.step.secrets])
        paths.env.mkdir(mode=0o700, exist_ok=True)
        atomic_write(paths.env_file(sp.step.name), text, mode=0o600)


def _prepare_task(run_dir: RunDir, plan: Plan, task: Task, batch: DurableBatch) -> None:
    """The task directory: out/, cmd.sh, point.json; stale state of a failed try removed.
    The files are durable once `batch` is flushed."""
    sp = plan.steps[task.step]
    tdir = run_dir.task(task.step, task.key)
    fresh = not tdir.is_dir()  # nothing stale to remove: spares three unlinks per task of a new sweep
    (tdir / "out").mkdir(parents=True, exist_ok=True)
    inputs = {up: _input_path(run_dir, plan, up, task) for up in sp.step.needs}
    command = _plan.fill_paths(task.command, str(tdir / "out"), inputs)
    shell = _shell(plan, sp)
    batch.write(tdir / "cmd.sh", _jobs.render_task_command(command, shell, sp.step, task.index))
    batch.write(tdir / "point.json", json.dumps(dict(task.point), sort_keys=True) + "\n")
    for name in () if fresh else ("exitcode", "cause", "requeue"):
        (tdir / name).unlink(missing_ok=True)
    batch.write(tdir / "attempt", "0\n")


def _input_path(run_dir: RunDir, plan: Plan, up: str, task: Task) -> str:
    """{in.UP}: the upstream task's out/, or for a matrix step a directory of symlinks."""
    usp = plan.steps[up]
    wanted = set(task.upstream)  # once, not per upstream task: a fan-in may have thousands
    ups = [t for t in usp.tasks if t.key in wanted] or list(usp.tasks)
    if not usp.is_array:
        return str(run_dir.task(up, ups[0].key) / "out")
    digest = hashlib.sha256("\n".join(t.key for t in ups).encode()).hexdigest()[:16]
    folder = run_dir.step_inputs(up, digest)
    if not folder.is_dir():
        tmp = folder.with_name(f".{digest}.tmp.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for t in ups:
            # Relative links resolve the same inside the container, where .hpcml is bound
            # at its host path.
            os.symlink(f"../../../tasks/{up}/{t.key}/out", tmp / str(t.index))
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # someone else made it: same content
    return str(folder)


def _shell(plan: Plan, sp: StepPlan) -> str:
    return sp.step.shell or plan.workflow.images[sp.step.image].shell


def _dependencies(plan: Plan, sp: StepPlan, submitted: Mapping[str, str], adopted: Mapping[str, str]) -> list[str]:
    """afterok job refs: the live jobs of this step's upstream tasks (whole arrays once)."""
    refs: list[str] = []
    for up in sp.step.needs:
        for t in plan.steps[up].tasks:
            ref = submitted.get(t.key) or adopted.get(t.key)
            if ref is not None and ref not in refs:
                refs.append(ref)
    return refs


def _step_jobs(
    workflow: str,
    run_id: str,
    run_dir: RunDir,
    paths: RunPaths,
    sp: StepPlan,
    todo: Sequence[Task],
    sifs: Mapping[str, str],
    cluster: _Cluster,
    settings: Settings,
    shell: str,
) -> Iterator[StepJob]:
    """One StepJob per chunk (array indices stay below MaxArraySize); scripts written."""
    step = sp.step
    indices = sorted(t.index for t in todo)
    if sp.is_array and indices[-1] >= cluster.max_array:
        chunks: dict[int | None, list[int]] = {}
        for i in indices:
            chunks.setdefault(i // cluster.max_array, []).append(i)
    else:
        chunks = {None: indices}
    for chunk, idx in chunks.items():
        offset = 0 if chunk is None else chunk * cluster.max_array
        spec = _jobs.ScriptSpec(
            workflow=workflow,
            run_id=run_id,
            step=step,
            sif=sifs[step.image],
            shell=shell,
            run_dir=str(run_dir.path),
            workflow_root=str(run_dir.path.parent),
            run_root=str(paths.root),
            indices=tuple(idx),
            array=sp.is_array,
            offset=offset,
            chunk=chunk,
            gpu_style=cluster.gpu_style,
            apptainer=settings.apptainer,
            exec_flags=settings.exec_flags,
            env_file=str(paths.env_file(step.name)) if step.secrets else None,
        )
        script = paths.script(step.name, chunk)
        atomic_write(script, _jobs.render_step_script(spec), mode=0o755)
        by_index = {t.index: t for t in sp.tasks}
        yield StepJob(
            name=spec.job_name,
            script=script,
            step=sp,
            indices=tuple(idx),
            array=sp.is_array,
            offset=offset,
            chunk=chunk,
            task_dirs={i: str(run_dir.task(step.name, by_index[i].key)) for i in idx},
            output=f"{paths.slurm}/{step.name}.{'%A_%a' if sp.is_array else '%j'}.out",
        )


# ---- status -------------------------------------------------------------------------------


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
class _RunRecord:
    plan: dict[str, Any]
    executor: str
    refs: dict[str, str]  # task key → job ref
    cancelled: bool


def _load_run(run_dir: RunDir, run_id: str) -> _RunRecord:
    paths = run_dir.run(run_id)
    try:
        doc = json.loads(paths.plan.read_text())
    except (OSError, ValueError) as err:
        raise StateError(f"run {run_id}: cannot read {paths.plan}: {err}") from err
    keys_by_step = {s["name"]: {t["index"]: t["key"] for t in s["tasks"]} for s in doc["steps"]}
    array = {s["name"]: s["array"] for s in doc["steps"]}
    refs: dict[str, str] = dict(doc.get("adopted", {}))
    executor = "slurm"
    intents: dict[tuple[str, int | None], dict[str, Any]] = {}
    for r in read_journal(paths.journal):
        if r["event"] == "run":
            executor = r.get("executor", executor)
        elif r["event"] == "intent":
            intents[(r["step"], r.get("chunk"))] = r
        elif r["event"] == "submitted":
            intent = intents.get((r["step"], r.get("chunk")), {})
            for index in intent.get("indices", []):
                key = keys_by_step[r["step"]][index]
                refs[key] = f"{r['job_id']}_{index - int(r.get('offset', 0))}" if array[r["step"]] else r["job_id"]
    return _RunRecord(doc, executor, refs, (paths.root / "cancelled").exists())


def status(run_dir: RunDir, run: str | None = None, executor: Executor | None = None, settings: Settings | None = None) -> RunStatus:
    """The state of every task of a run (default: the latest) from one observation round."""
    run_id = resolve_run(run_dir, run)
    rec = _load_run(run_dir, run_id)
    if executor is None:
        from hpcml import config

        executor = make_executor(rec.executor, settings or config.load())
    seen = executor.observe(sorted(set(rec.refs.values()))) if rec.refs else None
    records = dict(seen.records) if seen else {}
    cached = set(rec.plan.get("cached", []))
    states: dict[str, TaskState] = {}
    for step in rec.plan["steps"]:
        for t in step["tasks"]:
            key = t["key"]
            files = read_task_files(run_dir.task(step["name"], key))
            ref = rec.refs.get(key)
            record = records.get(ref) if ref else None
            bad_up = [states[u].state for u in t["upstream"] if u in states and states[u].state in FAILED]
            # Downstream of tasks the user cancelled is cancelled too, not "upstream failed".
            up_failed = bool(bad_up) and not (rec.cancelled and set(bad_up) == {"cancelled"})
            state, detail = derive_state(
                files,
                cached=key in cached,
                submitted=ref is not None or key in cached,
                record=record,
                upstream_failed=up_failed,
                cancelled_by_user=rec.cancelled,
            )
            states[key] = TaskState(step["name"], t["index"], key, state, files.exit_code, ref, detail, files.attempt)
    return RunStatus(run_id, rec.plan["workflow"], rec.executor, tuple(states.values()), seen.accounting if seen else True)


def watch(
    started: RunStarted,
    on_update: Callable[[RunStatus], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    min_s: float = 2.0,
    max_s: float = 30.0,
) -> RunStatus:
    """Poll until every task has ended, backing off while nothing changes."""
    delay = getattr(started.executor, "poll_s", min_s)
    floor = delay
    # Backing off spares slurmctld; looking at local processes costs nothing, so a local
    # run is not left waiting up to max_s after its last task ended.
    max_s = min(max_s, getattr(started.executor, "max_poll_s", max_s))
    last: dict[str, int] | None = None
    while True:
        st = status(started.run_dir, started.run_id, started.executor)
        on_update(st)
        if st.finished:
            if started.lock is not None:
                Journal(started.run_dir.run(started.run_id).journal).append("finished", counts=st.counts, ok=st.ok)
            return st
        delay = floor if st.counts != last else min(delay * 1.5, max_s)
        last = st.counts
        sleep(delay)


# ---- cancel, logs, history ------------------------------------------------------------------


def cancel(run_dir: RunDir, run: str | None = None, executor: Executor | None = None, settings: Settings | None = None) -> tuple[str, list[str]]:
    """Cancel every job of a run with one call; returns (run id, job ids cancelled)."""
    run_id = resolve_run(run_dir, run)
    rec = _load_run(run_dir, run_id)
    if executor is None:
        from hpcml import config

        executor = make_executor(rec.executor, settings or config.load())
    # A task with an exit code has ended (failed ones too): its job is not cancelled, and a
    # run with nothing left is not marked cancelled (its failures stay failures).
    task_dirs = {t["key"]: run_dir.task(step["name"], t["key"]) for step in rec.plan["steps"] for t in step["tasks"]}
    job_ids = sorted({ref for key, ref in rec.refs.items() if read_exit_code(task_dirs[key]) is None})
    if not job_ids:
        return run_id, []
    atomic_write(run_dir.run(run_id).root / "cancelled", time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    executor.cancel(job_ids)
    return run_id, job_ids


def task_logs(run_dir: RunDir, target: str, run: str | None = None) -> list[tuple[str, Path]]:
    """(label, log path) of `STEP` (all its tasks) or `STEP/INDEX` in a run (default latest)."""
    run_id = resolve_run(run_dir, run)
    rec = _load_run(run_dir, run_id)
    step, _, index = target.partition("/")
    steps = {s["name"]: s for s in rec.plan["steps"]}
    if step not in steps:
        raise StateError(f"no step {step!r} in run {run_id}; steps: {', '.join(steps)}")
    tasks = steps[step]["tasks"]
    if index:
        tasks = [t for t in tasks if str(t["index"]) == index]
        if not tasks:
            raise StateError(f"step {step} has no task {index!r}; tasks: 0..{len(steps[step]['tasks']) - 1}")
    return [(f"{step}/{t['index']}", run_dir.task(step, t["key"]) / "log") for t in tasks]


def history(run_dir: RunDir) -> list[RunSummary]:
    """Every run of this directory (of its workflow file, if named by one), oldest first."""
    out = []
    for run_id in run_dir.workflow_runs():
        try:
            rec = _load_run(run_dir, run_id)
        except StateError:
            continue
        finished = [r for r in read_journal(run_dir.run(run_id).journal) if r["event"] == "finished"]
        if finished:
            counts = dict(finished[-1].get("counts", {}))
        else:
            # Not watched to the end: only the files speak (no executor is asked here).
            rest = "cancelled" if rec.cancelled else "unfinished"
            cached = set(rec.plan.get("cached", []))
            counts: dict[str, int] = {}
            for step in rec.plan["steps"]:
                for t in step["tasks"]:
                    files = read_task_files(run_dir.task(step["name"], t["key"]))
                    label = rest if files.exit_code is None else derive_state(files, cached=t["key"] in cached)[0]
                    counts[label] = counts.get(label, 0) + 1
        n = sum(len(s["tasks"]) for s in rec.plan["steps"])
        out.append(RunSummary(run_id, rec.plan["workflow"], rec.executor, n, counts, bool(finished)))
    return out


def follow_task_log(
    run_dir: RunDir,
    target: str,
    run: str | None,
    write: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    settings: Settings | None = None,
) -> None:
    """Write the log of one task (`STEP/INDEX`, or a step of one task) and what is appended
    to it until the task is no longer pending, running or requeued."""
    run_id = resolve_run(run_dir, run)
    found = task_logs(run_dir, target, run_id)
    if len(found) != 1:
        raise StateError(f"--follow needs one task: STEP/INDEX (step {target} has {len(found)} tasks)")
    label, path = found[0]
    rec = _load_run(run_dir, run_id)
    if settings is None:
        from hpcml import config

        settings = config.load()
    executor = make_executor(rec.executor, settings)

    def done() -> bool:
        st = status(run_dir, run_id, executor)
        return any(t.state not in ACTIVE for t in st.tasks if f"{t.step}/{t.index}" == label)

    follow(path, done, write, sleep)


def follow(path: Path, done: Callable[[], bool], write: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Print `path` and keep printing what is appended until `done()` (like tail -f)."""
    pos = 0
    while True:
        finished = done()
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except FileNotFoundError:
            chunk = ""
        if chunk:
            write(chunk)
        if finished:
            return
        sleep(1.0)
