"""The local executor: the same job scripts as on SLURM, run by hpcml's own scheduler.

Where there is no SLURM (a workstation, a CI box, a single GPU server) `hpcml run` runs
every task on this machine. run/submit.py renders exactly the job scripts it would give sbatch;
this executor hands each to the local scheduler (hpcml.executors.local.scheduler) as a LocalJob with the
step's resources, so dependencies, matrix throttling, GPU binding, time limits,
checkpoint/requeue, exit-code files, journal, status, logs and cancel all behave as on SLURM.

There is no daemon: the scheduler runs in a thread of the `hpcml run` that submitted the
jobs, and tasks live only as long as it does. Ctrl-C, SIGTERM or SIGHUP (the terminal
closed) end every task's processes (TERM, then KILL after `kill_wait_s`) and record them
as cancelled; a rerun resumes by task key. `hpcml status` from another shell finds the
owner and the running tasks through their job ids and environment markers in /proc.

Job ids are `<owner pid>.<owner start time>.<n>` (array tasks `<id>_<i>` as on SLURM), so
any process can tell whether the `hpcml run` owning a job is still alive.

Example:

    ex = LocalExecutor.from_settings(config.load())
    job_id = ex.submit(step_job, depends_on=[])
    ex.observe([f"{job_id}_0"])   # Observation(records={"…_0": JobRecord("RUNNING")})
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from hpcml.config import Settings
from hpcml.errors import SubmitError
from hpcml.executors.base import LiveJob, Observation, StepJob
from hpcml.executors.local.procs import (
    kill_session_of,
    process_env,
    processes_with_env,
    start_time,
)
from hpcml.executors.local.resources import Capacity, discover
from hpcml.executors.local.scheduler import (
    REF_ENV,
    LocalJob,
    LocalScheduler,
    State,
    TaskResult,
)
from hpcml.model import Plan
from hpcml.run.tasks import JobRecord

log = logging.getLogger(__name__)

#: Environment marker of every task process: the name of its job (hpcml.<wf>.<run>.<step>).
NAME_ENV = "HPCML_LOCAL_JOB_NAME"

#: Scheduler state → the SLURM state that run/tasks.derive_state understands.
_SLURM_STATE = {
    State.PENDING: "PENDING",
    State.RUNNING: "RUNNING",
    State.REQUEUED: "PENDING",
    State.COMPLETED: "COMPLETED",
    State.FAILED: "FAILED",
    State.TIMEOUT: "TIMEOUT",
    State.CANCELLED: "CANCELLED",
    State.UPSTREAM_FAILED: "CANCELLED",
}


class LocalExecutor:
    """Runs job scripts on this machine; see the module docstring."""

    name = "local"
    detached = False
    poll_s = 0.5  # the watch loop's floor: local state changes are cheap to look at
    max_poll_s = 2.0  # and its ceiling: `hpcml run` ends soon after the last task

    def __init__(self, capacity: Capacity, *, kill_wait_s: float = 10.0, tick_s: float = 0.1):
        self.capacity = capacity
        self.tick_s = tick_s
        self.scheduler = LocalScheduler(capacity, kill_wait_s=kill_wait_s, listener=self._on_event)
        self.owner = owner_id(os.getpid())
        self._seq = 0
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._saved_handlers: dict[int, Any] = {}
        self._arrays: set[str] = set()
        self._at_exit_registered = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalExecutor:
        """An executor for this machine: slots from local_cpus/local_mem_mb/local_gpus or detection."""
        return cls(
            discover(
                settings_cpus=settings.local_cpus,
                settings_mem_mb=settings.local_mem_mb,
                settings_gpus=settings.local_gpus,
            )
        )

    # ---- Executor interface -----------------------------------------------------------

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        """Always empty: local tasks never outlive their `hpcml run`. Tasks left running by
        one that was killed (kill -9) are ended here, before their rerun starts them again."""
        for pid in processes_with_env(NAME_ENV, None):
            env = process_env(pid)
            ref = env.get(REF_ENV, "")
            if env.get(NAME_ENV, "").startswith(name_prefix) and not owner_alive(ref):
                log.warning("ending task %s (pid %d) left behind by a dead hpcml run", ref, pid)
                kill_session_of(pid)
        return []

    def ready(self) -> None:
        """Nothing to wait for: this machine is here."""

    def check_plan(self, plan: Plan) -> None:
        """Raise SubmitError, before any image is built, for a step asking more than this
        machine has (every such step named)."""
        problems = []
        for name in plan.step_order:
            res = plan.steps[name].step.resources
            try:
                self.scheduler.check(LocalJob(name, "", name=name, cpus=_cpus(res), mem_mb=res.mem_mb or 0, gpus=res.gpus))
            except SubmitError as err:
                problems.append(f"step {err}")
            if res.nodes > 1:
                problems.append(
                    f"step {name}: asks for {res.nodes} nodes (launch: {res.launch}); the local executor runs on "
                    "this one machine only. Run it on SLURM (--executor slurm), or set nodes: 1 to try it here "
                    "(launch: per_gpu then starts one process per local GPU)"
                )
        if problems:
            raise SubmitError("\n".join(problems))

    def submit(self, job: StepJob, depends_on: Sequence[str]) -> str:
        """Queue a step's job script; it starts once `observe` starts the scheduler."""
        res = job.step.step.resources
        ckpt = job.step.step.checkpoint
        with self._lock:
            self._seq += 1
            job_id = f"{self.owner}.{self._seq}"
            local = LocalJob(
                job_id=job_id,
                script=str(job.script),
                name=job.name,
                indices=tuple(i - job.offset for i in job.indices) if job.array else None,
                max_parallel=job.step.step.max_parallel,
                cpus=_cpus(res),
                mem_mb=res.mem_mb or 0,
                gpus=res.gpus,
                time_s=res.time_s,
                signal=ckpt.signal if ckpt else None,
                grace_s=ckpt.grace_s if ckpt else 0,
                depends_on=tuple(depends_on),
                output=job.output or None,
                task_dirs={i - job.offset: d for i, d in job.task_dirs.items()},
                max_requeues=job.step.step.retries + 1,
                env={NAME_ENV: job.name},
            )
            try:
                self.scheduler.submit(local)
            except SubmitError as err:
                raise SubmitError(f"step {job.step.step.name}: {err}") from None
            if job.array:
                self._arrays.add(job_id)
        return job_id

    def observe(self, refs: Sequence[str]) -> Observation:
        """Records of the asked job references: from the scheduler for this process's jobs,
        from /proc for jobs of another live `hpcml run`, none for jobs of a finished one."""
        self._ensure_started()
        records: dict[str, JobRecord] = {}
        with self._lock:
            mine = {self._ref(r.job_id, r.index): r for r in self.scheduler.states().values()}
        running_elsewhere: set[str] | None = None
        for ref in refs:
            if ref in mine:
                records[ref] = _record(mine[ref])
            elif ref.startswith(self.owner + "."):
                continue
            elif owner_alive(ref):
                if running_elsewhere is None:
                    running_elsewhere = {process_env(p).get(REF_ENV, "") for p in processes_with_env(REF_ENV, None)}
                records[ref] = JobRecord("RUNNING" if ref in running_elsewhere else "PENDING")
        return Observation(records, accounting=True)

    def cancel(self, refs: Sequence[str]) -> None:
        """Cancel these jobs. For this process's jobs: every task's processes are ended and
        pending tasks never start. Jobs of another live `hpcml run`: that process is sent
        SIGTERM, which makes it cancel all of its tasks the same way."""
        owners = {_owner_of(ref) for ref in refs} - {None}
        if self.owner in owners:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            with self._lock:
                self.scheduler.cancel_all("cancelled")
            self._restore_signals()
        for owner in owners - {self.owner}:
            if owner is not None and owner_alive(owner):
                os.kill(int(owner.split(".")[0]), signal.SIGTERM)

    # ---- the scheduler thread -----------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None:
                if not self._thread.is_alive():
                    self._restore_signals()  # finished: this process's signals are its own again
                return
            if self.scheduler.done:
                return
            self._install_signals()
            if not self._at_exit_registered:
                atexit.register(self._at_exit)
                self._at_exit_registered = True
            self._thread = threading.Thread(target=self._loop, name="hpcml-local-scheduler", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                busy = self.scheduler.tick()
            if not busy:
                break
            self._stop.wait(self.tick_s)

    def _install_signals(self) -> None:
        """SIGTERM and SIGHUP end `hpcml run` the way Ctrl-C does, so the caller's handler of
        KeyboardInterrupt cancels the tasks instead of leaving them orphaned."""
        if threading.current_thread() is not threading.main_thread():
            return

        def interrupt(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            # Under nohup SIGHUP is ignored on purpose: keep it so (the run goes on).
            if signal.getsignal(sig) is signal.SIG_DFL:
                self._saved_handlers[sig] = signal.signal(sig, interrupt)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    def _at_exit(self) -> None:
        # Last line of defence: whatever path leaves the interpreter, no task outlives it.
        if not self.scheduler.done:
            self._stop.set()
            with self._lock:
                self.scheduler.cancel_all("hpcml exited")

    # ---- helpers ------------------------------------------------------------------------

    def _ref(self, job_id: str, index: int) -> str:
        return f"{job_id}_{index}" if job_id in self._arrays else job_id

    def _on_event(self, result: TaskResult) -> None:
        log.debug("task %s[%d] %s %s", result.job_id, result.index, result.state.value, result.reason)


def _cpus(res: Any) -> int:
    """CPUs a task holds: `cpus` (per process: × the ranks of a per-GPU launch), else
    cpus_per_gpu × gpus, else 1 (SLURM's default)."""
    if res.cpus:
        return int(res.cpus * res.ranks_per_node)
    return int((res.cpus_per_gpu or 1) * max(res.gpus, 1))


def _record(result: TaskResult) -> JobRecord:
    state = _SLURM_STATE[result.state]
    reason = "DependencyNeverSatisfied" if result.state is State.UPSTREAM_FAILED else result.reason
    return JobRecord(state, reason, result.exit_code)


def owner_id(pid: int) -> str:
    """`<pid>.<start time>` of a process: the prefix of the job ids it hands out."""
    return f"{pid}.{start_time(pid) or 0}"


def _owner_of(ref: str) -> str | None:
    parts = ref.split(".")
    return f"{parts[0]}.{parts[1]}" if len(parts) >= 3 and parts[0].isdigit() else None


def owner_alive(ref: str) -> bool:
    """Whether the `hpcml run` that handed out job id (or owner id) `ref` still runs."""
    parts = ref.split(".")
    if len(parts) < 2 or not parts[0].isdigit():
        return False
    return start_time(int(parts[0])) == parts[1].partition("_")[0]
