"""Mirror a workflow directory onto the cluster over SFTP, sending only what changed.

What is sent: the regular files below the workflow directory, except the run state
(`.hpcml/`), version control and caches (`.git/`, `__pycache__/`) and files that usually
hold credentials (`.env`, `.netrc`, SSH private keys; see SKIPPED_FILES). A symbolic link is
followed only when it points inside the directory: nothing outside it is ever sent.
Remote files that no longer exist locally are removed (except under `.hpcml/`, which holds
the runs on the cluster and is never touched).

Content-aware: a manifest on the cluster (`WORK_ROOT/.hpcml-sync/NAME.json`) records the
size, mtime and sha256 of each file as sent; a file whose size and mtime are unchanged is
not even read, one whose content hash is unchanged is not sent. A remote file whose size no
longer matches the manifest (edited on the cluster) is sent again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcml.errors import RemoteError

if TYPE_CHECKING:
    import paramiko

SKIPPED_DIRS = (".hpcml", ".git", "__pycache__", ".hpcml-sync")
SKIPPED_FILES = (".env", ".env.*", ".netrc", ".git-credentials", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: file counts, the content bytes sent and how long it took."""

    remote_dir: str
    sent: tuple[str, ...]
    unchanged: int
    deleted: tuple[str, ...]
    bytes_sent: int
    seconds: float


@dataclass(frozen=True)
class _Local:
    path: str
    size: int
    mtime_ns: int
    mode: int


def local_files(root: Path) -> dict[str, _Local]:
    """Relative POSIX path → file, for every file that is synced."""
    root = root.resolve()
    out: dict[str, _Local] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if any(fnmatch.fnmatch(name, pat) for pat in SKIPPED_FILES):
                continue
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if os.path.commonpath([real, str(root)]) != str(root):
                continue  # a link out of the directory: never sent
            try:
                st = os.stat(full)
            except OSError:
                continue  # a dangling link
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = Path(full).relative_to(root).as_posix()
            out[rel] = _Local(full, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remote_files(sftp: paramiko.SFTPClient, root: str) -> tuple[dict[str, int], set[str]]:
    """Relative path → size of every remote file below `root` (`.hpcml/` left out), and the
    relative directories."""
    files: dict[str, int] = {}
    dirs: set[str] = set()
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            entries = sftp.listdir_attr(posixpath.join(root, rel) if rel else root)
        except FileNotFoundError:
            continue
        for e in entries:
            child = posixpath.join(rel, e.filename) if rel else e.filename
            mode = e.st_mode or 0
            if stat.S_ISDIR(mode):
                if not rel and e.filename in SKIPPED_DIRS:
                    continue
                dirs.add(child)
                pending.append(child)
            else:
                files[child] = e.st_size or 0
    return files, dirs


def _read_manifest(sftp: paramiko.SFTPClient, path: str) -> dict[str, list[object]]:
    try:
        with sftp.open(path, "r") as fh:
            doc = json.loads(fh.read().decode())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        return {}
    files = doc.get("files")
    return files if isinstance(files, dict) else {}


def makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """`mkdir -p` over SFTP."""
    parts = path.strip("/").split("/")
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = posixpath.join(current, part) if current else part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current)


def _atomic_put(sftp: paramiko.SFTPClient, local: str | None, data: bytes | None, remote: str, mode: int) -> None:
    tmp = posixpath.join(posixpath.dirname(remote), f".{posixpath.basename(remote)}.hpcml-tmp")
    if local is not None:
        sftp.put(local, tmp, confirm=True)
    else:
        with sftp.open(tmp, "w") as fh:
            fh.write(data or b"")
    sftp.chmod(tmp, mode)
    sftp.posix_rename(tmp, remote)


def sync(sftp: paramiko.SFTPClient, local_dir: Path, work_root: str, name: str) -> SyncReport:
    """Make `WORK_ROOT/NAME` on the cluster hold what `local_dir` holds (see the module doc).

    Example: ``sync(sftp, Path("~/cifar"), "/scratch/me/hpcml", "cifar").bytes_sent`` → 0
    when nothing changed since the last sync.
    """
    started = time.monotonic()
    remote_dir = posixpath.join(work_root, name)
    manifest_path = posixpath.join(work_root, ".hpcml-sync", f"{name}.json")
    try:
        makedirs(sftp, posixpath.dirname(manifest_path))
        makedirs(sftp, remote_dir)
        mine = local_files(local_dir)
        theirs, their_dirs = _remote_files(sftp, remote_dir)
        manifest = _read_manifest(sftp, manifest_path)
        new_manifest: dict[str, list[object]] = {}
        sent: list[str] = []
        sent_bytes = 0
        unchanged = 0
        made = set(their_dirs)
        for rel, f in mine.items():
            old = manifest.get(rel)
            on_remote = theirs.get(rel)
            if old and on_remote == f.size == old[0] and old[1] == f.mtime_ns:
                new_manifest[rel] = old
                unchanged += 1
                continue
            digest = _sha256(f.path)
            if old and on_remote == f.size == old[0] and old[2] == digest:
                new_manifest[rel] = [f.size, f.mtime_ns, digest]
                unchanged += 1
                continue
            parent = posixpath.dirname(rel)
            if parent and parent not in made:
                makedirs(sftp, posixpath.join(remote_dir, parent))
                made.update(_parents(parent))
            _atomic_put(sftp, f.path, None, posixpath.join(remote_dir, rel), f.mode)
            new_manifest[rel] = [f.size, f.mtime_ns, digest]
            sent.append(rel)
            sent_bytes += f.size
        deleted = sorted(set(theirs) - set(mine))
        for rel in deleted:
            sftp.remove(posixpath.join(remote_dir, rel))
        wanted_dirs = {p for rel in mine for p in _parents(posixpath.dirname(rel))}
        for rel in sorted(their_dirs - wanted_dirs, key=lambda d: -d.count("/")):
            try:
                sftp.rmdir(posixpath.join(remote_dir, rel))
            except OSError:
                pass  # not empty: holds something we do not own
        if sent or deleted or new_manifest != manifest:
            doc = {"format": MANIFEST_FORMAT, "files": new_manifest}
            _atomic_put(sftp, None, json.dumps(doc, sort_keys=True).encode(), manifest_path, 0o600)
    except OSError as err:
        raise RemoteError(f"syncing {local_dir} to {remote_dir} failed: {err}") from None
    return SyncReport(remote_dir, tuple(sent), unchanged, tuple(deleted), sent_bytes, time.monotonic() - started)


def _parents(rel: str) -> set[str]:
    out: set[str] = set()
    while rel:
        out.add(rel)
        rel = posixpath.dirname(rel)
    return out


def put_private(sftp: paramiko.SFTPClient, path: str, data: bytes) -> None:
    """Write `data` to the cluster file `path`, readable by its owner only (0600) from the
    first byte: the file is created empty, chmod'ed, and only then written."""
    makedirs(sftp, posixpath.dirname(path))
    sftp.chmod(posixpath.dirname(path), 0o700)
    with sftp.open(path, "wx") as fh:
        fh.chmod(0o600)
        fh.write(data)
