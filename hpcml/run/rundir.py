"""The run directory `.hpcml/` of a workflow: where each file lives, run ids, the lock.

Layout (next to the workflow file; see docs/running.md):

    .hpcml/
      run.lock                      held by the one `hpcml run` writing here
      tasks/<step>/<key>/           content-addressed per task: out/ cmd.sh point.json
                                    exitcode attempt log [cause] [requeue]
      steps/<step>/<hash>/<index>   symlinks to a matrix step's task outputs ({in.STEP})
      runs/<run-id>/                workflow.yaml plan.json defs/ jobs/ slurm/ env/ journal.jsonl

Everything here survives `kill -9` at any point: files are replaced atomically
(run/durable.py), the journal is append-only and fsync'd (run/journal.py), and the lock is
a POSIX lock the kernel drops with its holder. What state a task is in: run/tasks.py.
"""

from __future__ import annotations

import calendar
import errno
import fcntl
import os
import re
import secrets as _secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from hpcml.errors import StateError
from hpcml.run.journal import read_journal

RUN_DIR_NAME = ".hpcml"



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
    def for_workflow(workflow_file: str | Path) -> RunDir:
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


class RunLock:
    """The exclusive lock of `hpcml run` on one run directory (POSIX lock, so `kill -9`
    releases it and it works on NFSv4). A second concurrent `hpcml run` fails at once."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self._fd: int | None = None

    def __enter__(self) -> Self:
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

