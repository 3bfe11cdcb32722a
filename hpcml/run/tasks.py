"""What state each task is in, derived purely from what its wrapper left and what the
executor says.

The exit-code file a task's wrapper writes is the ground truth of success; squeue gives
liveness, sacct (or squeue's memory of finished jobs, or the wrapper's `cause` file) the
cause of a failure. `derive_state` combines them, purely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcml.render.protocol import TASK_ATTEMPT, TASK_CAUSE, TASK_EXITCODE, TASK_PREEMPTED, TASK_REQUEUE

#: Every state a task can be shown in.
STATES = (
    "pending",
    "running",
    "requeued",
    "completed",
    "cached",
    "failed",
    "timeout",
    "oom",
    "node_fail",
    "preempted",
    "cancelled",
    "image_failed",
    "upstream_failed",
    "not_submitted",
    "lost",
)
DONE_OK = frozenset({"completed", "cached"})
ACTIVE = frozenset({"pending", "running", "requeued"})
FAILED = frozenset(STATES) - DONE_OK - ACTIVE

#: SLURM job states (sacct/squeue) → task state, for a task that did not succeed.
SLURM_CAUSES = {
    "TIMEOUT": "timeout",
    "DEADLINE": "timeout",
    "OUT_OF_MEMORY": "oom",
    "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "node_fail",
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled",
    "FAILED": "failed",
}
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "SUSPENDED"})



@dataclass(frozen=True)
class TaskFiles:
    """What a task's wrapper left in its directory."""

    exit_code: int | None = None  # content of `exitcode`, None when absent
    cause: str | None = None  # `cause`: timeout / cancelled / checkpoint, written on a signal
    requeue: bool = False  # `requeue` marker: requeued on the checkpoint signal
    attempt: int = 0
    preempted: int = 0  # `preempted`: how many times SLURM preempted it (the wrapper counts)


def read_exit_code(task_dir: Path) -> int | None:
    """The exit code a task's wrapper wrote, or None: `read_task_files(d).exit_code` at a
    fraction of the cost, for passes over every task of a sweep that need only that."""
    return _exit_code(_read_small(os.path.join(task_dir, TASK_EXITCODE)))


def read_task_files(task_dir: Path) -> TaskFiles:
    """Read a task directory's state files; missing or unreadable ones count as absent."""
    # `status` reads every task of a sweep each round: one listing, then only the files
    # that exist, instead of an open (mostly failing) per possible file.
    folder = os.fspath(task_dir)
    try:
        names = set(os.listdir(folder))
    except OSError:
        return TaskFiles()

    def text(name: str) -> str | None:
        return _read_small(os.path.join(folder, name)) if name in names else None

    attempt = text(TASK_ATTEMPT)
    preempted = text(TASK_PREEMPTED)
    return TaskFiles(
        exit_code=_exit_code(text(TASK_EXITCODE)),
        cause=text(TASK_CAUSE) or None,
        requeue=TASK_REQUEUE in names,
        attempt=int(attempt) if attempt and attempt.isdigit() else 0,
        preempted=int(preempted) if preempted and preempted.isdigit() else 0,
    )


def _read_small(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _exit_code(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class TaskState:
    """A task's state for display. `job` is the SLURM id (`123_4`) or local id, if any."""

    step: str
    index: int
    key: str
    state: str
    exit_code: int | None = None
    job: str | None = None
    detail: str = ""
    attempt: int = 0
    preempted: int = 0  # times SLURM preempted it: requeued, never counted as a failure

    @property
    def label(self) -> str:
        """`failed (exit 3)`, `upstream failed`, `completed`, `requeued (preempted ×1)`…"""
        text = self.state.replace("_", " ")
        if self.state == "failed" and self.exit_code is not None:
            text += f" (exit {self.exit_code})"
        if self.preempted:
            text += f" (preempted ×{self.preempted})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "index": self.index,
            "key": self.key,
            "state": self.state,
            "exit_code": self.exit_code,
            "job": self.job,
            "detail": self.detail,
            "attempt": self.attempt,
            "preempted": self.preempted,
        }


@dataclass(frozen=True)
class JobRecord:
    """What SLURM says of one task's job: state (squeue while live, then squeue's memory of
    finished jobs or sacct), reason, exit code."""

    state: str
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None  # the signal that ended the job's batch script (sacct's `0:9`)


def derive_state(
    files: TaskFiles,
    *,
    cached: bool = False,
    submitted: bool = True,
    record: JobRecord | None = None,
    upstream_failed: bool = False,
    cancelled_by_user: bool = False,
    causes_unknown: bool = False,
) -> tuple[str, str]:
    """(state, detail) of one task. Pure: every input was gathered by the caller.

    Precedence: the exit-code file (ground truth) > liveness > the cause of a failure
    (wrapper's cause file, then SLURM's record) > upstream failure > what is left.
    `causes_unknown`: accounting did not answer this round, so a job squeue forgot may
    have a cause nobody could ask for.
    """
    if files.exit_code == 0:
        return ("cached" if cached else "completed"), ""
    live = record is not None and record.state not in SLURM_CAUSES and record.state != "COMPLETED"
    if live and record is not None:
        if record.state in RUNNING_STATES:
            return "running", ""
        if upstream_failed or "DependencyNeverSatisfied" in record.reason:
            return "upstream_failed", record.reason
        if files.requeue or record.state.startswith("REQUEUE") or files.attempt > 0:
            # Pending again after an attempt started: requeued (its checkpoint,
            # a preemption, or SLURM after its node failed), not a fresh submission.
            return "requeued", record.reason
        return "pending", record.reason
    if files.exit_code is not None:
        # It ended by itself unless something says otherwise: a later `hpcml cancel` of
        # the run does not turn "failed (exit 3)" into "cancelled".
        cause = _cause(files, record, False)
        return (cause or "failed"), f"exit {files.exit_code}"
    if not submitted and record is None and not cancelled_by_user:
        # Never submitted (the run stopped, sbatch refused it or one it needs): nothing of
        # it failed, whatever became of its upstream. (In a run the user cancelled, it was
        # cancelled with the rest.)
        return "not_submitted", ""
    if upstream_failed:
        return "upstream_failed", ""
    cause = _cause(files, record, cancelled_by_user)
    if cause:
        return cause, record.reason if record else ""
    if record is not None and record.state == "COMPLETED":
        # SLURM says the job ended well but no exit code was written: the wrapper died
        # before writing it (e.g. its node went away) — the output cannot be trusted.
        return "lost", "job completed without writing its exit code"
    if record is not None and record.signal:
        # Killed by a signal the wrapper cannot trap (SIGKILL: the kernel's OOM killer, a
        # kill -9 on the node): only SLURM's record knows.
        return "failed", (f"the job was killed by signal {record.signal} ({record.state}) before its wrapper could "
                          "write an exit code: out of memory, or killed on its node? see `hpcml logs`")
    if record is not None:
        # SLURM still knows the job, which failed before its wrapper could write an exit
        # code: the wrapper exits non-zero when a write of its own fails (a full disk).
        code = f", exit {record.exit_code}" if record.exit_code is not None else ""
        return "failed", (f"the job ended ({record.state}{code}) without writing its exit code: was the run "
                          "directory's file system full? see `hpcml logs` and the SLURM output")
    if causes_unknown:
        return "lost", "no exit code written; cause unknown (accounting did not answer)"
    # SLURM forgot the job, or the local `hpcml run` that ran it ended (kill -9): rerun.
    return "lost", "no exit code written and the job is gone; rerun to run it again"


def _cause(files: TaskFiles, record: JobRecord | None, cancelled_by_user: bool) -> str | None:
    # SLURM knows best why it ended a job (a preemption also arrives as SIGTERM); the
    # wrapper's own guess covers clusters without accounting once squeue forgot the job.
    if record is not None and record.state in SLURM_CAUSES and record.state != "FAILED":
        return SLURM_CAUSES[record.state]
    if files.cause in ("timeout", "cancelled", "preempted", "oom", "node_fail"):
        return files.cause
    if cancelled_by_user:
        return "cancelled"
    return None


def summarize(states: Mapping[str, TaskState]) -> dict[str, int]:
    """Count of tasks per state, in STATES order, zeros left out."""
    counts = {s: 0 for s in STATES}
    for st in states.values():
        counts[st.state] += 1
    return {s: n for s, n in counts.items() if n}

