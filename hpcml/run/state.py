"""The run directory `.hpcml/`, its journal, and what state each task is in.

Layout (next to the workflow file; see docs/running.md):

    .hpcml/
      run.lock                      held by the one `hpcml run` writing here
      tasks/<step>/<key>/           content-addressed per task: out/ cmd.sh point.json
                                    exitcode attempt log [cause] [requeue]
      steps/<step>/<hash>/<index>   symlinks to a matrix step's task outputs ({in.STEP})
      runs/<run-id>/                workflow.yaml plan.json defs/ jobs/ slurm/ env/ journal.jsonl

Everything here survives `kill -9` at any point: files are replaced atomically (tmp, fsync,
rename), the journal is append-only and fsync'd after each record, and a torn last line
(a writer killed mid-write) is skipped when read.

The exit-code file a task's wrapper writes is the ground truth of success; squeue gives
liveness, sacct (or squeue's memory of finished jobs, or the wrapper's `cause` file) the
cause of a failure. `derive_state` combines them, purely.
"""

from __future__ import annotations

import calendar
import errno
import fcntl
import json
import os
import re
import secrets as _secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from hpcml import fsutil
from hpcml.errors import StateError

RUN_DIR_NAME = ".hpcml"
JOURNAL_VERSION = 1

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


# ---- paths ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPaths:
    """The files of one run, `runs/<run-id>/`."""

    root: Path
    run_id: str

    @property
    def workflow(self) -> Path:
        return self.root / "workflow.yaml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def defs(self) -> Path:
        return self.root / "defs"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def slurm(self) -> Path:
        return self.root / "slurm"

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def journal(self) -> Path:
        return self.root / "journal.jsonl"

    def script(self, step: str, chunk: int | None = None) -> Path:
        return self.jobs / (f"{step}.sbatch" if chunk is None else f"{step}.{chunk}.sbatch")

    def manifest(self, step: str) -> Path:
        return self.jobs / f"{step}.tasks"

    def env_file(self, step: str) -> Path:
        return self.env / f"{step}.env"


@dataclass(frozen=True)
class RunDir:
    """The `.hpcml/` directory of one workflow. `path` is absolute."""

    path: Path
    #: Set when the directory was named by a workflow file: `workflow_runs()` keeps only its
    #: runs (several workflow files may share one directory and so one `.hpcml`).
    workflow_file: str | None = None

    @staticmethod
    def for_workflow(workflow_file: str | Path) -> "RunDir":
        resolved = Path(workflow_file).resolve()
        return RunDir(resolved.parent / RUN_DIR_NAME, str(resolved))

    @property
    def lock(self) -> Path:
        return self.path / "run.lock"

    @property
    def tasks(self) -> Path:
        return self.path / "tasks"

    def task(self, step: str, key: str) -> Path:
        return self.tasks / step / key

    def step_inputs(self, step: str, digest: str) -> Path:
        return self.path / "steps" / step / digest

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.path / "runs" / run_id, run_id)

    def run_ids(self) -> list[str]:
        """Every run of this workflow, oldest first (run ids sort by time)."""
        runs = self.path / "runs"
        # A hidden entry is a run still being created (or abandoned by a crash while it was).
        return sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else []

    def workflow_runs(self) -> list[str]:
        """run_ids(), only those of `workflow_file` when it is set (from each run's journal)."""
        ids = self.run_ids()
        if self.workflow_file is None:
            return ids
        return [r for r in ids if _run_path(self.run(r).journal) in (self.workflow_file, None)]

    def latest_run(self) -> str | None:
        ids = self.run_ids()
        return ids[-1] if ids else None


def _run_path(journal: Path) -> str | None:
    """The workflow file a run was started from (its journal's `run` record), if known."""
    for record in read_journal(journal):
        if record.get("event") == "run":
            return str(record["path"]) if record.get("path") else None
    return None


def new_run_id(now: float | None = None, token: str | None = None, after: str | None = None) -> str:
    """A sortable, unique run id: `20261126-061200-ab12` (UTC).

    `after` is the latest run id of the directory: the new id sorts after it even when
    both start in the same second (or the clock went back), so "the latest run" is the
    last one started. The token stays random (in the range left) because job names of
    runs of same-named workflows in other directories share the cluster's queue.
    """
    t = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))
    low = 0
    if after is not None and _RUN_ID.fullmatch(after) and stamp <= after[:15]:
        stamp, low = after[:15], int(after[16:], 16) + 1
        if low > 0xFFFF:
            t = calendar.timegm(time.strptime(stamp, "%Y%m%d-%H%M%S")) + 1
            stamp, low = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t)), 0
        token = token if token is not None and int(token, 16) >= low else None
    return f"{stamp}-{token or f'{low + _secrets.randbelow(0x10000 - low):04x}'}"


_RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


# ---- atomic files and the journal --------------------------------------------------


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write a run-directory file so that readers see the old or the new content, never a
    part (missing directories are created); see fsutil.atomic_write."""
    fsutil.atomic_write(path, data, mode, parents=True)


class DurableBatch:
    """Many small run-directory files, each replaced atomically now and all made durable by
    one `flush()`.

    `atomic_write` costs two fsyncs per file; a 2,000-task sweep writes 6,000 task files, and
    those fsyncs took 4 of its 4.5 s of writing on ext4. Readers still never see a part
    (temporary file + rename); what a crash of the *machine* before `flush()` may lose is
    only files of tasks not yet submitted, which the next run writes again. Call `flush()`
    before anything (sbatch) relies on the files.

    Example:

        batch = DurableBatch()
        batch.write(task / "cmd.sh", text)
        batch.flush()
    """

    def __init__(self) -> None:
        self._files: list[Path] = []

    def write(self, path: Path, data: str | bytes, mode: int = 0o644) -> None:
        """Replace `path` (its directory must exist) atomically, without waiting for the disk."""
        fsutil.atomic_write(path, data, mode, durable=False)
        self._files.append(path)

    def flush(self) -> None:
        """Make every file written since the last flush (and its rename) durable."""
        files, self._files = self._files, []
        if not files:
            return
        if not _syncfs_all(files):
            # No syncfs(2) here (not Linux): fsync each file and each directory once.
            for path in files:
                _fsync_path(path)
            for folder in sorted({p.parent for p in files}):
                fsutil.fsync_dir(folder)


def _syncfs_all(files: list[Path]) -> bool:
    """syncfs(2) once per filesystem holding `files`; False where syncfs is unavailable."""
    syncfs = _syncfs()
    if syncfs is None:
        return False
    seen: set[int] = set()
    for folder in {p.parent for p in files}:
        dev = os.stat(folder).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) != 0:
                return False
        finally:
            os.close(fd)
    return True


_SYNCFS: Any = None


def _syncfs() -> Any:
    """libc's syncfs, or None. It flushes one filesystem: far cheaper than an fsync per file,
    and unlike sync(2) it leaves the other filesystems of a shared login node alone."""
    global _SYNCFS
    if _SYNCFS is None:
        _SYNCFS = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs
            except (OSError, AttributeError):
                pass
    return _SYNCFS or None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only JSON-lines file; each record is fsync'd before `append` returns."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record `{"v": 1, "t": <unix time>, "event": event, **fields}`."""
        record = {"v": JOURNAL_VERSION, "t": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # A writer killed mid-line leaves a torn record without its newline: start a
            # fresh line so this record is not glued to it.
            size = os.fstat(fd).st_size
            if size and _last_byte(self.path) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, in order; torn or foreign lines are skipped."""
        return list(read_journal(self.path))


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            yield record


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


class RunLock:
    """The exclusive lock of `hpcml run` on one run directory (POSIX lock, so `kill -9`
    releases it and it works on NFSv4). A second concurrent `hpcml run` fails at once."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        path = self.run_dir.lock
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise StateError(f"cannot lock {path}: {err}") from err
            holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise StateError(
                f"another `hpcml run` is already working in {self.run_dir.path} ({holder}); "
                "wait for it to finish, or use `hpcml status` to follow it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the POSIX lock
            self._fd = None


# ---- task state -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFiles:
    """What a task's wrapper left in its directory."""

    exit_code: int | None = None  # content of `exitcode`, None when absent
    cause: str | None = None  # `cause`: timeout / cancelled / checkpoint, written on a signal
    requeue: bool = False  # `requeue` marker: requeued on the checkpoint signal
    attempt: int = 0


def read_exit_code(task_dir: Path) -> int | None:
    """The exit code a task's wrapper wrote, or None: `read_task_files(d).exit_code` at a
    fraction of the cost, for passes over every task of a sweep that need only that."""
    return _exit_code(_read_small(os.path.join(task_dir, "exitcode")))


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

    attempt = text("attempt")
    return TaskFiles(
        exit_code=_exit_code(text("exitcode")),
        cause=text("cause") or None,
        requeue="requeue" in names,
        attempt=int(attempt) if attempt and attempt.isdigit() else 0,
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

    @property
    def label(self) -> str:
        """`failed (exit 3)`, `upstream failed`, `completed`…"""
        text = self.state.replace("_", " ")
        if self.state == "failed" and self.exit_code is not None:
            text += f" (exit {self.exit_code})"
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
        }


@dataclass(frozen=True)
class JobRecord:
    """What SLURM says of one task's job: state (squeue while live, then squeue's memory of
    finished jobs or sacct), reason, exit code."""

    state: str
    reason: str = ""
    exit_code: int | None = None


def derive_state(
    files: TaskFiles,
    *,
    cached: bool = False,
    submitted: bool = True,
    record: JobRecord | None = None,
    upstream_failed: bool = False,
    cancelled_by_user: bool = False,
) -> tuple[str, str]:
    """(state, detail) of one task. Pure: every input was gathered by the caller.

    Precedence: the exit-code file (ground truth) > liveness > the cause of a failure
    (wrapper's cause file, then SLURM's record) > upstream failure > what is left.
    """
    if files.exit_code == 0:
        return ("cached" if cached else "completed"), ""
    live = record is not None and record.state not in SLURM_CAUSES and record.state != "COMPLETED"
    if live and record is not None:
        if record.state in RUNNING_STATES:
            return "running", ""
        if upstream_failed or "DependencyNeverSatisfied" in record.reason:
            return "upstream_failed", record.reason
        if files.requeue or record.state.startswith("REQUEUE"):
            return "requeued", record.reason
        return "pending", record.reason
    if files.exit_code is not None:
        # It ended by itself unless something says otherwise: a later `hpcml cancel` of
        # the run does not turn "failed (exit 3)" into "cancelled".
        cause = _cause(files, record, False)
        return (cause or "failed"), f"exit {files.exit_code}"
    if upstream_failed:
        return "upstream_failed", ""
    cause = _cause(files, record, cancelled_by_user)
    if cause:
        return cause, record.reason if record else ""
    if not submitted:
        return "not_submitted", ""
    if record is not None and record.state == "COMPLETED":
        # SLURM says the job ended well but no exit code was written: the wrapper died
        # before writing it (e.g. its node went away) — the output cannot be trusted.
        return "lost", "job completed without writing its exit code"
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
