"""One content-addressed image catalog directory (DESIGN §4). The search path over several
is search.py; the manifest of one image is manifest.py.

One catalog is a directory, usually on a shared filesystem:

    catalog.json            marker with the layout version
    sif/ab/<key>.sif        the image (read-only once published)
    meta/<key>.json         its manifest; written AFTER the SIF, so a SIF without one is
                            an incomplete publish: ignored by readers, removed by gc
    meta/<key>.cdx.json     its SBOM (CycloneDX) and meta/<key>.scan.json the summary of its
                            newest scan, when scanned (scan.py); removed by gc with the image
    tags/<name>/<tag>       a file holding a key
    logs/<key>.log          the build log (failed builds: logs/failed/)
    locks/<key>.lock        held while one process builds <key> (see locking.py)
    builds/<key>.json       the SLURM build job of <key> (build_on = "slurm"): its job id,
                            so a second run depends on it instead of building again
    logs/jobs/<name>-<key12>.<jobid>.out
                            that job's output
    used/<key>              touched when an image is used: gc's "last used"

Reads take no lock. Publishing writes a temporary file in the destination directory,
fsyncs it, `os.replace`s it into place and fsyncs the directory. Directories are created
setgid and group-writable so that a lab group shares one catalog (see docs/catalog.md).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from hpcml import fsutil
from hpcml.errors import CatalogError
from hpcml.images.locking import STALE_AFTER_S, FileLock, Owner
from hpcml.images.manifest import KEY_RE, Manifest, check_key, check_name

LAYOUT_VERSION = 1
DIR_MODE = 0o2775  # a lab catalog's sub-directories: setgid (files inherit the group), g+rwx
FILE_MODE = 0o444  # published files are immutable; g+r (and o+r) so the group can read them
TAG_MODE = 0o644  # tags and the marker are replaced by rename, never written in place


@dataclass(frozen=True)
class Entry:
    """An image found in a catalog."""

    catalog: "Catalog"
    manifest: Manifest

    @property
    def key(self) -> str:
        return self.manifest.key

    @property
    def sif(self) -> Path:
        return self.catalog.sif_path(self.manifest.key)


@dataclass(frozen=True)
class GcItem:
    path: str
    reason: str
    size: int




class Catalog:
    """One catalog directory. Nothing is created until something is published (`init`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # ---- layout -------------------------------------------------------------------

    def sif_path(self, key: str) -> Path:
        return self.root / "sif" / key[:2] / f"{check_key(key)}.sif"

    def meta_path(self, key: str) -> Path:
        return self.root / "meta" / f"{check_key(key)}.json"

    def tag_path(self, name: str, tag: str) -> Path:
        return self.root / "tags" / check_name("image name", name) / check_name("tag", tag)

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{check_key(key)}.lock"

    def log_path(self, key: str) -> Path:
        return self.root / "logs" / f"{check_key(key)}.log"

    def failed_log_path(self, name: str, key: str) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return self.root / "logs" / "failed" / f"{name}-{key[:12]}-{stamp}-{os.getpid()}.log"

    def build_marker_path(self, key: str) -> Path:
        return self.root / "builds" / f"{check_key(key)}.json"

    def build_output_pattern(self, name: str, key: str) -> str:
        """The build job's `--output` (`%j`: the job id)."""
        return str(self.root / "logs" / "jobs" / f"{check_name('image name', name)}-{check_key(key)[:12]}.%j.out")

    def exists(self) -> bool:
        return (self.root / "meta").is_dir()

    def writable(self) -> str | None:
        """None when this process can publish here, else the reason it cannot."""
        probe_dir = self.root
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if read_only_mount(probe_dir):  # said without a write attempted there
            return f"{probe_dir}: {os.strerror(errno.EROFS)}"
        try:
            fd, probe = tempfile.mkstemp(prefix=".hpcml-probe-", dir=probe_dir)
        except OSError as err:
            return f"{probe_dir}: {err.strerror or err}"
        os.close(fd)
        os.unlink(probe)
        return None

    def init(self) -> None:
        """Create the layout (idempotent), with group-shared directory modes."""
        # The root's owner sets the sharing: created by hpcml (a personal cache) it is
        # private to the umask; made 2775 by a lab admin, every sub-directory is too.
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("sif", "meta", "tags", "logs", "logs/failed", "logs/jobs", "locks", "used", "builds"):
            _mkdir_shared(self.root / sub, self.dir_mode())
        # tmp/ holds every builder's private directory: sticky, so that no member can rename
        # or remove another's (issue 12). One made before hpcml set the bit gets it from its owner.
        tmp = self.root / "tmp"
        _mkdir_shared(tmp, self.dir_mode() | stat.S_ISVTX)
        try:
            st = os.lstat(tmp)
            if st.st_uid == os.getuid() and not st.st_mode & stat.S_ISVTX:
                os.chmod(tmp, stat.S_IMODE(st.st_mode) | stat.S_ISVTX)
        except OSError:
            pass
        marker = self.root / "catalog.json"
        if not marker.exists():
            _write_atomic(marker, json.dumps({"hpcml_catalog": LAYOUT_VERSION}) + "\n", TAG_MODE)

    # ---- reading (no locks) -------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The complete entry for `key` (manifest and SIF both present), else None."""
        try:
            text = self.meta_path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CatalogError(f"{self.meta_path(key)}: cannot read: {err}") from err
        if not self.sif_path(key).is_file():
            return None
        return Entry(self, Manifest.from_json(text, str(self.meta_path(key))))

    def keys(self) -> list[str]:
        meta = self.root / "meta"
        if not meta.is_dir():
            return []
        return sorted(p.stem for p in meta.glob("*.json") if KEY_RE.fullmatch(p.stem))

    def entries(self) -> Iterator[Entry]:
        for key in self.keys():
            entry = self.get(key)
            if entry is not None:
                yield entry

    def tags(self) -> dict[str, list[str]]:
        """key → ['name:tag', …] for every tag in this catalog."""
        out: dict[str, list[str]] = {}
        tags_dir = self.root / "tags"
        if not tags_dir.is_dir():
            return out
        for tag_file in sorted(tags_dir.glob("*/*")):
            if tag_file.name.startswith("."):
                continue
            key = tag_file.read_text(encoding="utf-8").strip()
            out.setdefault(key, []).append(f"{tag_file.parent.name}:{tag_file.name}")
        return out

    def resolve_tag(self, name: str, tag: str) -> str | None:
        try:
            return check_key(self.tag_path(name, tag).read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return None

    def last_used(self, entry: Entry) -> float:
        """When the image was last used (or published), as a Unix time."""
        times = [self.meta_path(entry.key).stat().st_mtime]
        try:
            times.append((self.root / "used" / entry.key).stat().st_mtime)
        except FileNotFoundError:
            pass
        return max(times)

    # ---- writing ------------------------------------------------------------------

    def dir_mode(self) -> int:
        """The mode of new sub-directories: the root's group/other bits and setgid, u+rwx.

        A fixed 2775 made a personal cache writable by everyone sharing the user's primary
        group, and the sub-directories of a lab catalog the admin made read-only (2755)
        writable by the whole group: the root's mode is the admin's (or umask's) decision.
        """
        try:
            mode = stat.S_IMODE(self.root.stat().st_mode)
        except FileNotFoundError:
            return 0o755
        return (mode & (stat.S_ISGID | 0o077)) | 0o700

    def _stamp_mode(self) -> int:
        return 0o664 if self.dir_mode() & 0o020 else 0o644

    def require_writable(self) -> None:
        reason = self.writable()
        if reason is not None:
            raise CatalogError(f"catalog {self.root} is not writable ({reason})")

    def build_dir(self, name: str) -> "BuildDir":
        """A private (0700) scratch directory for one build, inside this catalog's `tmp/`,
        held open (see BuildDir).

        Building here keeps every byte hpcml writes inside the catalog, and lets `publish`
        move the finished SIF into place with a rename instead of copying gigabytes.
        `gc` removes such directories left by builders that died, after a day. Raises
        CatalogError when `tmp/` lets other users rename what is in it (not sticky).
        """
        self.require_writable()
        self.init()
        tmp = self.root / "tmp"
        st = os.lstat(tmp)
        if not stat.S_ISDIR(st.st_mode):
            raise CatalogError(f"{tmp} is not a directory (a symbolic link?); remove it so hpcml can recreate it")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise CatalogError(f"{tmp} is writable by other users without the sticky bit, so a lab member could "
                               f"swap a running build's directory; its owner (uid {st.st_uid}) must run "
                               f"`chmod +t {tmp}` (docs/security.md)")
        path = tempfile.mkdtemp(prefix=f"build-{name}-", dir=tmp)  # 0700, ours
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        mine = os.fstat(fd)
        if mine.st_uid != os.getuid() or mine.st_mode & 0o777 != 0o700:
            os.close(fd)
            raise CatalogError(f"{path}: not the private directory hpcml just created")
        return BuildDir(Path(path), fd)

    def publish(self, sif: Path, manifest: Manifest, log_text: str | None = None,
                owned: Callable[[], bool] | None = None) -> Entry:
        """Bring `sif` in, then its manifest: crash-safe; a crash leaves no complete entry.

        A SIF already inside this catalog (built in `build_dir`) is moved into place; any
        other is copied. Nothing published is ever replaced: a complete entry already there
        raises CatalogError (only a SIF without a manifest, left by a publish that crashed,
        is replaced). `owned` (the build lock's `still_held`) is asked just before each
        step that makes something visible: a builder whose lock was broken and taken over
        while it was stopped publishes nothing (issue 12).
        """
        self.require_writable()
        self.init()
        key = manifest.key

        def check_owned() -> None:
            if owned is not None and not owned():
                raise CatalogError(f"lost the build lock {self.lock_path(key)} to another builder while building "
                                   f"{key[:12]} (stopped longer than lock_stale_after?); published nothing")
            if self.meta_path(key).exists():
                raise CatalogError(f"image {key[:12]} was published in {self.root} by another builder meanwhile; "
                                   "kept theirs, published nothing")

        check_owned()
        if log_text is not None:
            _write_atomic(self.log_path(key), log_text, FILE_MODE)
        _mkdir_shared(self.sif_path(key).parent, self.dir_mode())
        check_owned()
        if (self.root / "tmp") in Path(sif).resolve().parents:
            _move_atomic(sif, self.sif_path(key))
        else:
            _copy_atomic(sif, self.sif_path(key))
        check_owned()
        _publish_new(self.meta_path(key), manifest.to_json(), FILE_MODE)
        return Entry(self, manifest)

    def write_failed_log(self, name: str, key: str, text: str) -> Path | None:
        """Keep a failed build's log; None when this catalog cannot take it."""
        path = self.failed_log_path(name, key)
        try:
            _mkdir_shared(path.parent, self.dir_mode())
            _write_atomic(path, text, FILE_MODE)
        except OSError:
            return None
        return path

    def set_tag(self, name: str, tag: str, key: str) -> None:
        self.require_writable()
        if self.get(key) is None:
            raise CatalogError(f"image {key[:12]} is not in catalog {self.root}; push it there first")
        path = self.tag_path(name, tag)
        self.init()
        _mkdir_shared(path.parent, self.dir_mode())
        _write_atomic(path, key + "\n", TAG_MODE)

    def touch_used(self, key: str) -> None:
        """Record a use for gc; best effort (a read-only lab catalog cannot record it)."""
        stamp = self.root / "used" / check_key(key)
        if read_only_mount(self.root):
            return
        try:
            # Group-writable (in a group catalog) whatever the umask: the next member to use
            # the image must be able to update its time (utime needs write permission).
            mode = self._stamp_mode()
            fd = os.open(stamp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        except FileExistsError:
            try:
                os.utime(stamp)
            except OSError:
                pass
            return
        except OSError:
            return
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass
        finally:
            os.close(fd)

    def write_build_marker(self, key: str, job_id: str, name: str) -> None:
        """Record that SLURM job `job_id` builds `key` (under the key's lock)."""
        self.init()
        marker = {"key": key, "image": name, "job_id": job_id, "host": os.uname().nodename,
                  "user": os.environ.get("USER", str(os.getuid())), "submitted": time.time()}
        _write_atomic(self.build_marker_path(key), json.dumps(marker) + "\n", self._stamp_mode())

    def read_build_marker(self, key: str) -> dict[str, object] | None:
        """The marker of `key`'s build job, or None (none, or unreadable: treated as none)."""
        try:
            data = json.loads(self.build_marker_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and str(data.get("job_id", "")).isdigit() else None

    def lock(self, key: str, on_wait: Callable[[Owner | None], None] | None = None,
             stale_after_s: float = STALE_AFTER_S) -> FileLock:
        self.require_writable()
        self.init()
        return FileLock(self.lock_path(key), on_wait=on_wait, stale_after_s=stale_after_s)

    def gc(self, days: float, *, dry_run: bool = True, now: float | None = None) -> list[GcItem]:
        """Remove untagged images unused for `days`, incomplete publishes and old temp files."""
        now = time.time() if now is None else now
        cutoff = now - days * 86400
        tagged = set(self.tags())
        doomed: list[GcItem] = []
        for entry in self.entries():
            if entry.key in tagged or self.last_used(entry) >= cutoff:
                continue
            meta = self.root / "meta"
            for path in (self.meta_path(entry.key), entry.sif, self.root / "used" / entry.key,
                         self.log_path(entry.key), meta / f"{entry.key}.scan.json", meta / f"{entry.key}.cdx.json"):
                if path.exists():
                    doomed.append(GcItem(str(path), f"unused for {days:g} days", path.stat().st_size))
        known = set(self.keys())
        for sif in sorted((self.root / "sif").glob("*/*")):
            age = now - sif.stat().st_mtime
            if sif.name.startswith(".") and age > 3600:
                doomed.append(GcItem(str(sif), "temporary file of an interrupted publish", sif.stat().st_size))
            elif sif.suffix == ".sif" and sif.stem not in known and age > 3600:
                doomed.append(GcItem(str(sif), "incomplete publish (no manifest)", sif.stat().st_size))
        for stale in sorted((self.root / "tmp").glob("build-*")):
            if now - stale.stat().st_mtime > 86400:
                doomed.append(GcItem(str(stale), "build directory of a builder that died", _tree_size(stale)))
        for log in sorted((self.root / "logs" / "failed").glob("*.log")):
            if log.stat().st_mtime < cutoff:
                doomed.append(GcItem(str(log), "old failed-build log", log.stat().st_size))
        for out in sorted((self.root / "logs" / "jobs").glob("*.out")):
            if out.stat().st_mtime < cutoff:
                doomed.append(GcItem(str(out), "old build job output", out.stat().st_size))
        for marker in sorted((self.root / "builds").glob("*.json")):
            # A marker only matters while its job is queued; a week is longer than any build.
            if now - marker.stat().st_mtime > 7 * 86400:
                doomed.append(GcItem(str(marker), "marker of a build job long ended", marker.stat().st_size))
        if not dry_run:
            self.require_writable()
            for item in doomed:
                if Path(item.path).is_dir():
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    _remove(Path(item.path))
        return doomed


# ---- filesystem helpers ---------------------------------------------------------------


def read_only_mount(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only (`ro`): every write there would
    fail with EROFS, so none is tried. False when it cannot be told."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _mkdir_shared(path: Path, mode: int) -> None:
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        return
    # mkdir's mode is filtered by the umask; a shared catalog needs the bits set exactly.
    os.chmod(path, mode)


def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _write_atomic(dest: Path, text: str, mode: int) -> None:
    fsutil.atomic_write(dest, text, mode)


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = fsutil.temp_name(dest)
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dest)
    finally:
        _remove(tmp)
    fsutil.fsync_dir(dest.parent)


def _move_atomic(src: Path, dest: Path) -> None:
    """Move a finished file into place (same filesystem), durable before it is visible.

    Linked, then the source unlinked: unlike a rename, a link never replaces a file. A
    SIF already at `dest` can only be what a crashed publish left (the caller checked
    there is no manifest): it is moved aside first."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        _remove(dest)
        os.link(src, dest, follow_symlinks=False)
    _remove(src)
    fsutil.fsync_dir(dest.parent)


def _publish_new(dest: Path, text: str, mode: int) -> None:
    """Write `dest` crash-safely, failing (CatalogError) if it already exists."""
    tmp = fsutil.temp_name(dest)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text.encode())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, dest, follow_symlinks=False)
        except FileExistsError:
            raise CatalogError(f"{dest} was published by another builder meanwhile; kept theirs") from None
    finally:
        _remove(tmp)
    fsutil.fsync_dir(dest.parent)


class BuildDir:
    """One build's private directory, held open on a descriptor.

    `here` names it through that descriptor (`/proc/<pid>/fd/<n>`): whatever a lab member
    renames in the catalog, every path under `here` (and a child started with cwd=`here`)
    reaches this very directory, never one planted in its place. `path` is where it was
    created, for messages; `close` removes it.
    """

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd
        self.pid = os.getpid()

    @property
    def here(self) -> Path:
        return Path(f"/proc/{self.pid}/fd/{self.fd}")

    @property
    def child_path(self) -> Path:
        """The directory as a child started with pass_fds=[fd] names it."""
        return Path(f"/proc/self/fd/{self.fd}")

    def moved(self) -> bool:
        """Whether `path` no longer names this directory (someone renamed it or a parent)."""
        try:
            return os.lstat(self.path).st_ino != os.fstat(self.fd).st_ino
        except OSError:
            return True

    def close(self) -> None:
        """Remove the directory's contents (best effort: fakeroot builds can leave files the
        user cannot delete), then the directory if it is still where it was made."""
        for entry in os.listdir(self.here):
            p = self.here / entry
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                _remove(p)
        try:
            if not self.moved():
                os.rmdir(self.path)
        except OSError:
            pass
        os.close(self.fd)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
