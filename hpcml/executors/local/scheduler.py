"""The local scheduler: runs job scripts as local processes with the semantics of SLURM.

A `LocalJob` is what one `sbatch` would be: a script, its environment, a resource request
per task, a time limit with an optional checkpoint signal, array task indices throttled by
`max_parallel`, and `afterok` dependencies on other jobs (a failed dependency cancels the
dependent job, as `--kill-on-invalid-dep=yes` does). `LocalScheduler` hands out CPUs,
memory and GPU devices of a `Capacity` as slots, and is driven by `tick()` (one
non-blocking round) from its owner's loop, or by `run()`.

What a task sees, so that the job wrapper works unchanged: its own session (process
group), `HPCML_EXECUTOR=local`, `SLURM_JOB_ID`, `SLURM_ARRAY_JOB_ID`/`SLURM_ARRAY_TASK_ID`
for arrays, `SLURM_RESTART_COUNT`, `SLURM_CPUS_PER_TASK`, and `CUDA_VISIBLE_DEVICES` naming
only the devices it was given (empty for a CPU task, so it never touches a GPU).

Time limits as SLURM's `--signal=B:SIG@grace` and KillWait: the checkpoint signal goes to the
script's own process `grace` seconds before the limit; at the limit every process of the task
gets SIGTERM, and SIGKILL `kill_wait` seconds later; the task ends TIMEOUT. A script that
exits with status 75 after writing a `requeue` file into its task directory is requeued:
started again (with a fresh time limit) once slots are free.

Example:

    sched = LocalScheduler(Capacity(cpus=2, mem_mb=4096, gpus=("0", "1")))
    sched.submit(LocalJob("prep", "/run/jobs/prep.sbatch"))
    sched.submit(LocalJob("train", "/run/jobs/train.sbatch", indices=(0, 1, 2), gpus=1,
                          depends_on=("prep",)))
    results = sched.run()   # {("train", 1): TaskResult(state=COMPLETED, …), …}

Why one module of ~450 lines: it is one state machine (pending → running → ended or
requeued) whose transitions share the slot bookkeeping; the /proc helpers it needs are in
procs.py and the machine's capacity in resources.py.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

from hpcml.errors import SubmitError
from hpcml.executors.local.procs import kill, kill_session_of, processes_with_env, session_members, sigint_ignored
from hpcml.executors.local.resources import Capacity
from hpcml.clients.runner import spawn
from hpcml.render.protocol import EXECUTOR_ENV, LOCAL_EXECUTOR, REQUEUE_EXIT, TASK_REQUEUE

log = logging.getLogger(__name__)

#: Environment variable that marks every process the scheduler starts (with the
#: scheduler's id): a safety net to find and end processes after an interruption.
MARKER_ENV = "HPCML_LOCAL_SCHEDULER"
#: Environment variable naming each task's job reference (`J`, or `J_3` for an array task).
REF_ENV = "HPCML_LOCAL_REF"


class State(str, enum.Enum):
    """Where a local task is. Final states end with the task; REQUEUED is an event only."""

    PENDING = "pending"
    RUNNING = "running"
    REQUEUED = "requeued"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"  # a dependency failed: never started

    @property
    def final(self) -> bool:
        return self not in (State.PENDING, State.RUNNING, State.REQUEUED)


@dataclass(frozen=True)
class LocalJob:
    """One job: what one `sbatch` of a step would be. Resources are per task.

    `indices` None is a plain job (no SLURM_ARRAY_TASK_ID; its one task has index 0).
    `depends_on` names jobs (`J`: all its tasks) or single array tasks (`J_3`), afterok.
    `output` is the stdout/stderr file, appended to; `%A`/`%j` (job id), `%a` (task index),
    `%x` (job name) and `%%` are replaced as sbatch does. `task_dirs` maps a task index to the
    directory where its wrapper writes the `requeue` marker. `env` is added to the
    scheduler's base environment (as `sbatch --export=ALL` passes the submitter's).
    """

    job_id: str
    script: str
    name: str = ""
    indices: tuple[int, ...] | None = None
    max_parallel: int | None = None
    cpus: int = 1
    mem_mb: int = 0
    gpus: int = 0
    time_s: float | None = None
    signal: str | None = None
    grace_s: float = 0
    depends_on: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    output: str | None = None
    cwd: str | None = None
    task_dirs: Mapping[int, str] = field(default_factory=dict)
    max_requeues: int = 100

    @property
    def task_indices(self) -> tuple[int, ...]:
        return self.indices if self.indices is not None else (0,)


@dataclass(frozen=True)
class TaskResult:
    """The state of one task, as `states()` and events report it."""

    job_id: str
    index: int
    state: State
    exit_code: int | None = None
    reason: str = ""
    restarts: int = 0
    gpus: tuple[str, ...] = ()


#: Called on every state change of a task (started, requeued, ended).
Listener = Callable[[TaskResult], None]


@dataclass
class _Task:
    job: LocalJob
    index: int
    result: TaskResult
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    signalled: bool = False  # checkpoint signal sent in this attempt
    term_at: float | None = None  # when SIGTERM was sent (time limit or cancel)
    timed_out: bool = False
    cancelled: bool = False
    gpus: tuple[str, ...] = ()


class LocalScheduler:
    """Runs LocalJobs on this machine within `capacity` (see module docstring)."""

    def __init__(
        self,
        capacity: Capacity,
        *,
        kill_wait_s: float = 10.0,
        listener: Listener | None = None,
        base_env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.capacity = capacity
        self.kill_wait_s = kill_wait_s
        self.listener = listener
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.clock = clock
        self.marker = f"{os.getpid()}.{time.time_ns()}"
        self._jobs: dict[str, LocalJob] = {}
        self._tasks: list[_Task] = []  # in submission order: earlier tasks get slots first
        self._free_cpus = capacity.cpus
        self._free_mem = capacity.mem_mb
        self._free_gpus = list(capacity.gpus)

    # ---- submission -----------------------------------------------------------------

    def check(self, job: LocalJob) -> None:
        """Raise SubmitError when `job` can never run here (too big, bad signal, unknown dep)."""
        cap = self.capacity
        too_big = [
            f"{what} {asked} > {have} ({cap.sources.get(key, 'detected')})"
            for what, key, asked, have in (
                ("CPUs", "cpus", job.cpus, cap.cpus),
                ("memory MiB", "mem", job.mem_mb, cap.mem_mb),
                ("GPUs", "gpus", job.gpus, len(cap.gpus)),
            )
            if asked > have
        ]
        if too_big:
            raise SubmitError(
                f"{job.name or job.job_id}: asks more than this machine offers: {'; '.join(too_big)}. "
                "Lower the step's resources, or set local_cpus / local_mem_mb / local_gpus "
                "(HPCML_LOCAL_GPUS=0,1) if detection is wrong."
            )
        if job.signal is not None:
            signal_number(job.signal)
        unknown = [d for d in job.depends_on if d not in self._jobs and d.rpartition("_")[0] not in self._jobs]
        if unknown:
            raise SubmitError(f"{job.job_id}: depends on unknown job(s) {', '.join(unknown)}")
        if job.job_id in self._jobs:
            raise SubmitError(f"job id {job.job_id} submitted twice")
        if job.max_parallel is not None and job.max_parallel < 1:
            raise SubmitError(f"{job.job_id}: max_parallel must be at least 1")

    def submit(self, job: LocalJob) -> None:
        """Queue `job` (after `check`). Nothing starts before the next `tick()`."""
        self.check(job)
        self._jobs[job.job_id] = job
        for index in job.task_indices:
            self._tasks.append(_Task(job, index, TaskResult(job.job_id, index, State.PENDING)))

    # ---- the scheduling round -------------------------------------------------------

    def tick(self) -> bool:
        """One non-blocking round: reap, enforce limits, cascade failures, start what fits.

        Returns True while any task is pending or running.
        """
        now = self.clock()
        for task in self._running():
            self._reap(task)
        for task in self._running():
            self._enforce_limit(task, now)
        self._cascade_failures()
        self._start_ready(now)
        return not self.done

    def run(self, poll_s: float = 0.1) -> dict[tuple[str, int], TaskResult]:
        """Tick until every task has ended. Ctrl-C (KeyboardInterrupt) cancels every task,
        ends all their processes, then propagates."""
        try:
            while self.tick():
                time.sleep(poll_s)
        except BaseException:
            self.cancel_all("interrupted")
            raise
        return self.states()

    @property
    def done(self) -> bool:
        return all(t.result.state.final for t in self._tasks)

    def states(self) -> dict[tuple[str, int], TaskResult]:
        """(job id, task index) → current TaskResult, for every submitted task."""
        return {(t.job.job_id, t.index): t.result for t in self._tasks}

    # ---- cancelling -----------------------------------------------------------------

    def cancel_all(self, reason: str = "cancelled") -> None:
        """Cancel every task: pending ones never start; running ones get SIGTERM, then SIGKILL
        after `kill_wait_s`. Returns when no process of any task is left (blocking)."""
        # A second Ctrl-C must not interrupt the clean-up half way and leave orphans.
        with sigint_ignored():
            self._cancel_all(reason)

    def _cancel_all(self, reason: str) -> None:
        for task in self._tasks:
            if task.result.state is State.PENDING:
                self._set(task, State.CANCELLED, reason=reason)
        running = self._running()
        for task in running:
            task.cancelled = True
            self._signal_session(task, signal.SIGTERM)
        deadline = self.clock() + self.kill_wait_s
        while any(t.proc is not None and t.proc.poll() is None for t in running):
            if self.clock() >= deadline:
                break
            time.sleep(0.05)
        for task in running:
            self._signal_session(task, signal.SIGKILL)
            self._reap(task, reason=reason, block=True)
        # A process started in the instant before an interruption was never recorded:
        # find it by the marker every task's environment carries.
        for pid in processes_with_env(MARKER_ENV, self.marker):
            kill_session_of(pid)

    # ---- internals ------------------------------------------------------------------

    def _running(self) -> list[_Task]:
        return [t for t in self._tasks if t.result.state is State.RUNNING]

    def _set(self, task: _Task, state: State, **changes: object) -> None:
        task.result = replace(task.result, state=state, **changes)  # type: ignore[arg-type]
        if self.listener is not None:
            self.listener(task.result)

    def _reap(self, task: _Task, reason: str = "", block: bool = False) -> None:
        assert task.proc is not None
        rc = task.proc.wait() if block else task.proc.poll()
        if rc is None:
            return
        # As SLURM does when a batch script ends: nothing it left behind survives it.
        self._signal_session(task, signal.SIGKILL)
        self._release(task)
        task.proc = None
        code = rc if rc >= 0 else 128 - rc  # killed by signal N → 128+N, as bash reports it
        if task.cancelled:
            self._set(task, State.CANCELLED, exit_code=code, reason=reason or "cancelled")
        elif task.timed_out:
            self._set(task, State.TIMEOUT, exit_code=code, reason="time limit reached")
        elif rc == REQUEUE_EXIT and self._requeue_asked(task):
            self._requeue(task)
        elif rc == 0:
            self._set(task, State.COMPLETED, exit_code=0, reason="")
        else:
            self._set(task, State.FAILED, exit_code=code, reason=f"exit code {code}")

    def _requeue_asked(self, task: _Task) -> bool:
        # The marker stays: status shows the task as requeued until the wrapper, starting
        # again, removes it (it removes stale markers at start, so this one is fresh).
        task_dir = task.job.task_dirs.get(task.index)
        return task_dir is not None and Path(task_dir, TASK_REQUEUE).exists()

    def _requeue(self, task: _Task) -> None:
        restarts = task.result.restarts + 1
        if restarts > task.job.max_requeues:
            self._set(task, State.FAILED, exit_code=REQUEUE_EXIT, reason="requeued too often")
            return
        self._set(task, State.REQUEUED, restarts=restarts, reason="requeued", gpus=())
        self._set(task, State.PENDING)

    def _enforce_limit(self, task: _Task, now: float) -> None:
        job = task.job
        if job.time_s is None or task.proc is None:
            return
        elapsed = now - task.started
        if job.signal and not task.signalled and elapsed >= job.time_s - job.grace_s:
            task.signalled = True
            # Like --signal=B:: to the script's own process only; the wrapper forwards it.
            kill(task.proc.pid, signal_number(job.signal))
        if not task.timed_out and elapsed >= job.time_s:
            task.timed_out = True
            task.term_at = now
            self._signal_session(task, signal.SIGTERM)
        elif task.term_at is not None and now - task.term_at >= self.kill_wait_s:
            self._signal_session(task, signal.SIGKILL)

    def _cascade_failures(self) -> None:
        # Tasks are in submission order and dependencies point backwards, so one pass
        # propagates a failure down the whole chain.
        for task in self._tasks:
            if task.result.state is not State.PENDING:
                continue
            failed = [
                d for d in task.job.depends_on if any(
                    t.result.state.final and t.result.state is not State.COMPLETED
                    for t in self._tasks_of(d)
                )
            ]
            if failed:
                self._set(task, State.UPSTREAM_FAILED, reason=f"upstream failed: {', '.join(failed)}")

    def _tasks_of(self, ref: str) -> Iterable[_Task]:
        """The tasks a dependency names: a whole job (`J`) or one task of an array (`J_3`)."""
        if ref in self._jobs:
            return (t for t in self._tasks if t.job.job_id == ref)
        job_id, _, index = ref.rpartition("_")
        return (t for t in self._tasks if t.job.job_id == job_id and str(t.index) == index)

    def _ready(self, task: _Task) -> bool:
        return all(
            t.result.state is State.COMPLETED for d in task.job.depends_on for t in self._tasks_of(d)
        )

    def _start_ready(self, now: float) -> None:
        running_per_job: dict[str, int] = {}
        for t in self._running():
            running_per_job[t.job.job_id] = running_per_job.get(t.job.job_id, 0) + 1
        for task in self._tasks:
            job = task.job
            if task.result.state is not State.PENDING or not self._ready(task):
                continue
            if job.max_parallel is not None and running_per_job.get(job.job_id, 0) >= job.max_parallel:
                continue
            if job.cpus > self._free_cpus or job.mem_mb > self._free_mem or job.gpus > len(self._free_gpus):
                continue
            self._start(task, now)
            if task.result.state is State.RUNNING:
                running_per_job[job.job_id] = running_per_job.get(job.job_id, 0) + 1

    def _start(self, task: _Task, now: float) -> None:
        job = task.job
        gpus = tuple(self._free_gpus[: job.gpus])
        env = self._task_env(task, gpus)
        output = expand_output(job.output, job, task.index) if job.output else None
        try:
            proc = spawn(["bash", job.script], env=env, cwd=job.cwd, output=output)
        except OSError as err:
            self._set(task, State.FAILED, exit_code=127, reason=f"cannot start {job.script}: {err}")
            return
        del self._free_gpus[: job.gpus]
        self._free_cpus -= job.cpus
        self._free_mem -= job.mem_mb
        task.proc, task.started, task.gpus = proc, now, gpus
        task.signalled = task.timed_out = False
        task.term_at = None
        log.debug("started %s[%d] pid %d gpus %s", job.job_id, task.index, proc.pid, gpus)
        self._set(task, State.RUNNING, gpus=gpus, reason="")

    def _release(self, task: _Task) -> None:
        self._free_cpus += task.job.cpus
        self._free_mem += task.job.mem_mb
        # Keep device order stable so the lowest free ids are handed out first.
        self._free_gpus = [g for g in self.capacity.gpus if g in self._free_gpus or g in task.gpus]
        task.gpus = ()

    def _task_env(self, task: _Task, gpus: tuple[str, ...]) -> dict[str, str]:
        job = task.job
        env = {**self.base_env, **job.env}
        for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
            env.pop(name, None)
        devices = ",".join(gpus)
        env[EXECUTOR_ENV] = LOCAL_EXECUTOR
        env.update(
            SLURM_JOB_ID=job.job_id,
            SLURM_JOB_NAME=job.name or job.job_id,
            SLURM_RESTART_COUNT=str(task.result.restarts),
            SLURM_CPUS_PER_TASK=str(job.cpus),
            CUDA_VISIBLE_DEVICES=devices,
            GPU_DEVICE_ORDINAL=devices,
            ROCR_VISIBLE_DEVICES=devices,
        )
        env[MARKER_ENV] = self.marker
        env[REF_ENV] = job.job_id
        if job.indices is not None:
            env["SLURM_ARRAY_JOB_ID"] = job.job_id
            env["SLURM_ARRAY_TASK_ID"] = str(task.index)
            env[REF_ENV] = f"{job.job_id}_{task.index}"
        return env

    def _signal_session(self, task: _Task, sig: signal.Signals) -> None:
        if task.proc is None:
            return
        # The task's session id is its script's pid (start_new_session); walking the session,
        # not only the process group, also reaches children that made their own group.
        for pid in session_members(task.proc.pid) or [task.proc.pid]:
            kill(pid, sig)


def signal_number(name: str) -> signal.Signals:
    """'USR2', 'SIGUSR2' or '12' → signal.SIGUSR2. Raises SubmitError for an unknown name."""
    text = name.upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise SubmitError(f"unknown signal {name!r} (e.g. USR1, USR2, TERM, INT)") from None


def expand_output(pattern: str, job: LocalJob, index: int) -> str:
    """sbatch's filename patterns: %A and %j job id, %a task index, %x job name, %% a '%'."""
    values = {"A": job.job_id, "j": job.job_id, "a": str(index), "x": job.name or job.job_id, "%": "%"}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in values:
            out.append(values[pattern[i + 1]])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)
