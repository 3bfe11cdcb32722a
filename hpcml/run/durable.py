"""Run-directory files written atomically: one at a time (`atomic_write`), or many made
durable together (`DurableBatch`). Readers never see a part of a file; see fsutil.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hpcml import fsutil


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
                import ctypes  # start-up speed: loaded only when a batch is flushed

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

