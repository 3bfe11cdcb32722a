"""Crash-safe file writes shared by the catalog, the run directory and `compile`.

Readers see the old content or the new, never a part: a temporary file in the same
directory, fsync'd, renamed over the target, then the directory fsync'd. Temporary names
are random, not pid-based, so writers on different hosts of a shared filesystem never
collide.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_name(dest: Path) -> Path:
    """A hidden, unique sibling of `dest` (same directory, so a rename is atomic)."""
    return dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}")


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; best effort where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644, *, parents: bool = False, durable: bool = True
) -> None:
    """Replace `path` with `data` atomically (readers see the old or the new content).

    The temporary file has `mode` from its creation (a secret never sits in a
    world-readable file). `parents` creates missing directories first. With `durable`
    (the default) the file and the rename are fsync'd before returning; without, the caller
    makes many files durable at once (state.DurableBatch).

    Example: ``atomic_write(run / "plan.json", text, parents=True)``.
    """
    dest = Path(path)
    if parents:
        dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    raw = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have narrowed `mode`
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        # Only on failure: after the rename there is nothing to remove (a sweep of
        # thousands of files would pay one failing unlink each).
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(dest.parent)
