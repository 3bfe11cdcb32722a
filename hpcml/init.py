"""`hpcml init`: write a starter project into a directory, never over an existing file.

The files come from render/starter.py (pure); this module reads the directory for a
requirements or environment file to adopt, checks that no file it would write exists, and
writes each file atomically without replacing anything (a temporary file, then a hard
link that fails if the name appeared meanwhile).
"""

from __future__ import annotations

import os
from pathlib import Path

from hpcml.errors import InitError
from hpcml.fsutil import fsync_dir, temp_name
from hpcml.render import starter
from hpcml.results import InitResult

#: Bytes read from a file that may be adopted (a requirements file is small).
_MAX_ADOPT_BYTES = 1024 * 1024


def init_project(directory: str | os.PathLike[str], template: str = starter.DEFAULT_TEMPLATE) -> InitResult:
    """Write `template`'s workflow.yaml and src/ into `directory` (created if missing).

    Raises InitError for an unknown template or when any file to write already exists
    (then nothing is written).
    """
    if template not in starter.TEMPLATES:
        raise InitError(f"unknown template {template!r}; available: {', '.join(starter.TEMPLATES)}")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InitError(f"{root} exists and is not a directory")
    adopted = starter.adopt(_candidates(root))
    files = starter.render(template, starter.workflow_name(root.resolve().name), adopted)
    existing = [rel for rel in files if (root / rel).exists() or (root / rel).is_symlink()]
    if existing:
        raise InitError(
            f"{root} already has {', '.join(existing)}; hpcml init never overwrites a file: "
            "choose an empty directory, or move those files away first"
        )
    written = [str(root / rel) for rel in files]
    for rel, text in files.items():
        _write_new(root / rel, text)
    return InitResult(str(root), template, written, adopted.requirements or adopted.source, adopted.skipped)


def _candidates(root: Path) -> dict[str, str]:
    """The adoptable files present in `root`: name → text."""
    found: dict[str, str] = {}
    for name in (*starter.REQUIREMENTS_FILES, *starter.ENVIRONMENT_FILES):
        path = root / name
        if path.is_file():
            with path.open("rb") as fh:
                found[name] = fh.read(_MAX_ADOPT_BYTES).decode("utf-8", errors="replace")
    return found


def _write_new(dest: Path, text: str) -> None:
    """Create `dest` with `text` atomically; InitError if it exists (never replaced)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, dest)  # unlike rename, fails when dest exists
        except FileExistsError:
            raise InitError(f"{dest} appeared while hpcml init was writing; it was left as it is") from None
        except OSError:  # a filesystem without hard links: exclusive create, then write
            _write_exclusive(dest, text)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)


def _write_exclusive(dest: Path, text: str) -> None:
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise InitError(f"{dest} appeared while hpcml init was writing; it was left as it is") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode())
        os.fsync(fh.fileno())
