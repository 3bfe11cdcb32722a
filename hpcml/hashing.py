"""Content hashes of the files an image pulls in (requirements, `%files` sources, local SIFs).

A file hashes to the sha256 of its bytes. A directory hashes to the sha256 of a manifest
listing, in sorted order, every entry's relative name, type and executable bit and, for
files, their sha256. Only the executable bit of the mode counts (as in git): the other
bits follow each user's umask, and keys must agree between the users of a lab catalog.
Symbolic links are refused: what they point to can change without the key noticing, and
they may lead outside the workflow directory.
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


def hash_input(root: str, relpath: str) -> str:
    """Digest of `relpath` (a file or a directory) under `root`; raises InputError."""
    full = os.path.join(root, relpath)
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
