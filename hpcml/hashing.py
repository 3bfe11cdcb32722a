"""Content hashes of the files an image pulls in (requirements, `%files` sources, local SIFs).

A file hashes to the sha256 of its bytes. A directory hashes to the sha256 of a manifest
listing, in sorted order, every entry's relative name, type and executable bit and, for
files, their sha256. Only the executable bit of the mode counts (as in git): the other
bits follow each user's umask, and keys must agree between the users of a lab catalog.
Symbolic links are refused: what they point to can change without the key noticing, and
they may lead outside the workflow directory.

The path rules live here once, for validation (spec/inputs.py) and planning alike:
`escaping_link` and `first_link` find the links a named path must not have, and
`read_text` reads a hand-written def file or Dockerfile under the same rules.
"""

from __future__ import annotations

import hashlib
import os
import stat

_CHUNK = 1 << 20


class InputError(Exception):
    """An input file is missing, unreadable or a symlink; `path` is relative to the root."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


def sha256_file(path: str) -> str:
    """sha256 hex digest of the bytes of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def inside(real_root: str, path: str) -> bool:
    """Whether `path` resolves to `real_root` or below it (`real_root` already resolved)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def escaping_link(root: str, relpath: str) -> str | None:
    """The first path at or under `relpath` (itself included) that resolves outside `root`
    through a symbolic link, relative to `root`; None when everything stays inside."""
    real_root = os.path.realpath(root)
    full = os.path.join(root, relpath)
    if not inside(real_root, full):
        return os.path.relpath(full, root)
    if os.path.isdir(full):
        for dirpath, dirnames, filenames in os.walk(full):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p) and not inside(real_root, p):
                    return os.path.relpath(p, root)
    return None


def first_link(root: str, relpath: str) -> str | None:
    """The first symbolic link at or under `relpath` in sorted walk order, relative to `root`."""
    full = os.path.join(root, relpath)
    if os.path.islink(full):
        return os.path.relpath(full, root)
    if os.path.isdir(full):
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    return os.path.relpath(p, root)
    return None


def read_text(root: str, relpath: str) -> str:
    """The UTF-8 text of the file `relpath` under `root`, refused (InputError) when it is a
    symbolic link or reached through one that leaves `root`, as `hash_input` refuses it."""
    full = os.path.join(root, relpath)
    if os.path.islink(full):
        raise InputError(relpath, "is a symbolic link, which hpcml does not follow")
    if not inside(os.path.realpath(root), full):
        raise InputError(relpath, "leaves the workflow directory through a symbolic link")
    try:
        with open(full, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(relpath, f"cannot read: {err}") from None


def hash_input(root: str, relpath: str) -> str:
    """Digest of `relpath` (a file or a directory) under `root`; raises InputError."""
    full = os.path.join(root, relpath)
    if not os.path.isabs(relpath) and os.path.lexists(full) and not os.path.islink(full) \
            and not inside(os.path.realpath(root), full):
        # A parent directory that is a link out of the workflow: validation refuses it too.
        # (An absolute localimage path is a site image outside the workflow by design.)
        raise InputError(relpath, "leaves the workflow directory through a symbolic link")
    try:
        st = os.lstat(full)
    except OSError as err:
        raise InputError(relpath, f"cannot read: {err.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(relpath, "is a symbolic link, which hpcml does not follow")
    if stat.S_ISREG(st.st_mode):
        return _read(full, relpath)
    if stat.S_ISDIR(st.st_mode):
        return _hash_dir(full, relpath)
    raise InputError(relpath, "is neither a file nor a directory")


def _read(full: str, relpath: str) -> str:
    try:
        return sha256_file(full)
    except OSError as err:
        raise InputError(relpath, f"cannot read: {err.strerror}") from None


def _hash_dir(full: str, relpath: str) -> str:
    lines: list[str] = []
    for dirpath, dirnames, filenames in os.walk(full, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, full)
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            shown = os.path.join(relpath, rel)
            if "\n" in name:
                # Manifest lines are newline-separated: such a name could forge other entries.
                raise InputError(shown, "has a newline in its name, which hpcml does not hash")
            if stat.S_ISLNK(st.st_mode):
                raise InputError(shown, "is a symbolic link, which hpcml does not follow")
            if stat.S_ISDIR(st.st_mode):
                lines.append(f"d {rel}\n")
            elif stat.S_ISREG(st.st_mode):
                x = "x" if st.st_mode & stat.S_IXUSR else "-"
                lines.append(f"f{x} {rel} {_read(path, shown)}\n")
            else:
                raise InputError(shown, "is neither a file nor a directory")
    lines.sort()
    return hashlib.sha256("".join(lines).encode()).hexdigest()
