"""The content-addressed image catalog (DESIGN §4) and the search path over several.

One catalog is a directory, usually on a shared filesystem:

    catalog.json            marker with the layout version
    sif/ab/<key>.sif        the image (read-only once published)
    meta/<key>.json         its manifest; written AFTER the SIF, so a SIF without one is
                            an incomplete publish: ignored by readers, removed by gc
    tags/<name>/<tag>       a file holding a key
    logs/<key>.log          the build log (failed builds: logs/failed/)
    locks/<key>.lock        held while one process builds <key> (see locking.py)
    used/<key>              touched when an image is used: gc's "last used"

Reads take no lock. Publishing writes a temporary file in the destination directory,
fsyncs it, `os.replace`s it into place and fsyncs the directory. Directories are created
setgid and group-writable so that a lab group shares one catalog (see docs/catalog.md).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hpcml import fsutil
from hpcml.errors import CatalogError
from hpcml.images.locking import FileLock, Owner

SCHEMA_VERSION = 1
LAYOUT_VERSION = 1
DIR_MODE = 0o2775  # a lab catalog's sub-directories: setgid (files inherit the group), g+rwx
FILE_MODE = 0o444  # published files are immutable; g+r (and o+r) so the group can read them
TAG_MODE = 0o644  # tags and the marker are replaced by rename, never written in place

_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


def check_key(key: str) -> str:
    """A key is lower-case hex (it becomes a file name, so nothing else is accepted)."""
    if not _KEY.match(key):
        raise CatalogError(f"invalid image key {key!r}: expected 16-64 lower-case hex digits")
    return key


def file_fingerprint(st: os.stat_result, sha256: str) -> dict[str, Any]:
    """What the verified-hash cache compares: a SIF is rehashed when any of it changes.

    ctime is in it because mtime can be set back (`touch -d`, `os.utime`) after an edit;
    ctime cannot, so an in-place change with a restored mtime still triggers a rehash.
    """
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
            "sha256": sha256}


def check_name(what: str, value: str) -> str:
    """`value` if it is a valid tag or image name, else CatalogError saying what is allowed."""
    if what == "image name" and not _IMAGE_NAME.match(value):
        # Tags are used as `from: catalog:NAME:TAG`, where NAME is lowercase (spec.CATALOG_RE).
        raise CatalogError(
            f"invalid {what} {value!r}: use lowercase letters, digits, '_', '.', '-' (at most 128, not leading)"
        )
    if not _NAME.match(value):
        raise CatalogError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (at most 128, not leading)"
        )
    return value


@dataclass(frozen=True)
class Manifest:
    """What the catalog knows about one image. Stored as JSON with a schema version."""

    key: str
    name: str
    definition: str
    inputs: tuple[tuple[str, str], ...]
    parent_key: str | None
    sha256: str
    size: int
    apptainer_version: str
    user: str
    host: str
    created: str  # ISO 8601, UTC
    build_seconds: float = 0.0
    log: str | None = None
    signed: bool = False
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["inputs"] = [list(pair) for pair in self.inputs]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str, where: str = "manifest") -> "Manifest":
        try:
            data = migrate(json.loads(text))
            data["inputs"] = tuple((str(a), str(b)) for a, b in data["inputs"])
            return Manifest(**data)
        except (ValueError, TypeError, KeyError) as err:
            raise CatalogError(f"{where}: unreadable manifest ({err})") from None


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older manifest up to SCHEMA_VERSION (none older exists yet)."""
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise ValueError(f"manifest schema {version!r}; this hpcml reads {SCHEMA_VERSION}")
    return data


def new_manifest(
    *,
    key: str,
    name: str,
    definition: str,
    inputs: Sequence[tuple[str, str]],
    parent_key: str | None,
    sif: Path,
    apptainer_version: str,
    build_seconds: float = 0.0,
    log: str | None = None,
    signed: bool = False,
) -> Manifest:
    """A manifest for the freshly built `sif` (hashes it), stamped with who/where/when."""
    return Manifest(
        key=check_key(key),
        name=name,
        definition=definition,
        inputs=tuple(inputs),
        parent_key=parent_key,
        sha256=sha256_file(sif),
        size=sif.stat().st_size,
        apptainer_version=apptainer_version,
        user=_user(),
        host=socket.gethostname(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(build_seconds, 3),
        log=log,
        signed=signed,
    )


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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


@dataclass(frozen=True)
class VerifyResult:
    catalog: str
    key: str
    name: str
    ok: bool
    problem: str = ""


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

    def exists(self) -> bool:
        return (self.root / "meta").is_dir()

    def writable(self) -> str | None:
        """None when this process can publish here, else the reason it cannot."""
        probe_dir = self.root
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
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
        for sub in ("sif", "meta", "tags", "logs", "logs/failed", "locks", "used", "tmp"):
            _mkdir_shared(self.root / sub, self.dir_mode())
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
        return sorted(p.stem for p in meta.glob("*.json") if _KEY.match(p.stem))

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

    def build_dir(self, name: str) -> Path:
        """A private scratch directory for one build, inside this catalog's `tmp/`.

        Building here keeps every byte hpcml writes inside the catalog, and lets `publish`
        move the finished SIF into place with a rename instead of copying gigabytes.
        `gc` removes such directories left by builders that died, after a day.
        """
        self.require_writable()
        self.init()
        return Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=self.root / "tmp"))

    def publish(self, sif: Path, manifest: Manifest, log_text: str | None = None) -> Entry:
        """Bring `sif` in, then its manifest: crash-safe; a crash leaves no complete entry.

        A SIF already inside this catalog (built in `build_dir`) is renamed into place;
        any other is copied.
        """
        self.require_writable()
        self.init()
        key = manifest.key
        if log_text is not None:
            _write_atomic(self.log_path(key), log_text, FILE_MODE)
        _mkdir_shared(self.sif_path(key).parent, self.dir_mode())
        if (self.root / "tmp") in Path(sif).resolve().parents:
            _move_atomic(sif, self.sif_path(key))
        else:
            _copy_atomic(sif, self.sif_path(key))
        _write_atomic(self.meta_path(key), manifest.to_json(), FILE_MODE)
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

    def lock(self, key: str, on_wait: Callable[[Owner | None], None] | None = None) -> FileLock:
        self.require_writable()
        self.init()
        return FileLock(self.lock_path(key), on_wait=on_wait)

    def gc(self, days: float, *, dry_run: bool = True, now: float | None = None) -> list[GcItem]:
        """Remove untagged images unused for `days`, incomplete publishes and old temp files."""
        now = time.time() if now is None else now
        cutoff = now - days * 86400
        tagged = set(self.tags())
        doomed: list[GcItem] = []
        for entry in self.entries():
            if entry.key in tagged or self.last_used(entry) >= cutoff:
                continue
            for path in (self.meta_path(entry.key), entry.sif, self.root / "used" / entry.key,
                         self.log_path(entry.key)):
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
        if not dry_run:
            self.require_writable()
            for item in doomed:
                if Path(item.path).is_dir():
                    shutil.rmtree(item.path, ignore_errors=True)
                else:
                    _remove(Path(item.path))
        return doomed


class CatalogPath:
    """The search path: first catalog holding a key wins; new images go to the first writable.

    Before an image is used, its SIF's sha256 is checked against the manifest (cached in
    `cache_dir/verified/` by size, mtime_ns, ctime_ns and inode) and, when `require_signatures`, its
    signature is verified with `verify` (a callable taking the SIF path; see images.py).
    """

    def __init__(
        self,
        catalogs: Sequence[Catalog],
        cache_dir: str | Path,
        *,
        require_signatures: bool = False,
        verify_signature: Callable[[Path], None] | None = None,
    ):
        if not catalogs:
            raise CatalogError("no catalogs configured (set HPCML_CATALOGS or `catalogs` in config)")
        if require_signatures and verify_signature is None:
            raise CatalogError("require_signatures is set but no verify_key is configured")
        self.catalogs = list(catalogs)
        self.cache_dir = Path(cache_dir)
        self.require_signatures = require_signatures
        self.verify_signature = verify_signature

    def lookup(self, key: str) -> Entry | None:
        """First complete entry for `key`, unchecked."""
        for catalog in self.catalogs:
            entry = catalog.get(key)
            if entry is not None:
                return entry
        return None

    def resolve(self, key: str) -> Entry | None:
        """First entry for `key`, checked for integrity (and signature) before use."""
        entry = self.lookup(key)
        if entry is not None:
            self.check(entry)
            entry.catalog.touch_used(key)
        return entry

    def writable(self) -> Catalog:
        """The first catalog this process can publish to."""
        reasons = []
        for catalog in self.catalogs:
            reason = catalog.writable()
            if reason is None:
                return catalog
            reasons.append(f"  {catalog.root}: {reason}")
        raise CatalogError("no writable catalog in the search path:\n" + "\n".join(reasons))

    def find(self, ref: str) -> Entry:
        """An image by `name[:tag]` (tag default 'latest') or by key (a unique prefix of 8+).

        A bare `name` that no catalog has tagged `name:latest` falls back to the newest image
        built under that image name (first catalog that has one), so `hpcml catalog path
        torch` works right after `hpcml build`, before anyone tags it.
        """
        if re.fullmatch(r"[0-9a-f]{8,64}", ref):
            matches = {}
            for catalog in self.catalogs:
                for key in catalog.keys():
                    if key.startswith(ref) and key not in matches:
                        matches[key] = catalog
            if len(matches) > 1:
                raise CatalogError(f"key prefix {ref!r} is ambiguous: {', '.join(k[:16] for k in matches)}")
            if matches:
                key, catalog = next(iter(matches.items()))
                entry = catalog.get(key)
                if entry is not None:
                    return entry
        name, _, tag = ref.partition(":")
        tag = tag or "latest"
        check_name("image name", name)
        check_name("tag", tag)
        for catalog in self.catalogs:
            key = catalog.resolve_tag(name, tag)
            if key is not None:
                entry = self.lookup(key)
                if entry is None:
                    raise CatalogError(f"tag {name}:{tag} in {catalog.root} names missing image {key[:12]}")
                return entry
        if ":" not in ref:
            for catalog in self.catalogs:
                named = [e for e in catalog.entries() if e.manifest.name == name]
                if named:
                    return max(named, key=lambda e: (e.manifest.created, e.key))
        raise CatalogError(
            f"no image {ref!r} in the catalogs ({', '.join(str(c.root) for c in self.catalogs)}); "
            "give NAME[:TAG] of a tag, an image name as shown by `hpcml catalog list`, or a key prefix (8+ hex digits)"
        )

    def check(self, entry: Entry, *, force: bool = False) -> None:
        """Raise CatalogError unless the SIF matches its manifest (and is signed, if required)."""
        sif = entry.sif
        st = sif.stat()
        stamp = self._stamp_path(sif)
        fingerprint = file_fingerprint(st, entry.manifest.sha256)
        cached = _read_json(stamp) if not force else None
        if cached is not None and all(cached.get(k) == v for k, v in fingerprint.items()):
            if not self.require_signatures or cached.get("signature_ok"):
                return
        if st.st_size != entry.manifest.size or sha256_file(sif) != entry.manifest.sha256:
            raise CatalogError(
                f"{sif} is corrupt: its sha256 does not match the manifest {entry.catalog.meta_path(entry.key)}; "
                f"it was refused. To rebuild it, delete both files (rm -f {sif} "
                f"{entry.catalog.meta_path(entry.key)}) and run hpcml build again."
            )
        signature_ok = False
        if self.require_signatures:
            assert self.verify_signature is not None
            self.verify_signature(sif)
            signature_ok = True
        self.remember(sif, fingerprint | {"signature_ok": signature_ok})

    def remember(self, sif: Path, fingerprint: dict[str, Any]) -> None:
        """Record that `sif` (with this fingerprint) was checked, so the next use skips hashing."""
        try:
            _mkdir_private(self._stamp_path(sif).parent)
            _write_atomic(self._stamp_path(sif), json.dumps(fingerprint), 0o644)
        except OSError:
            pass  # the cache is an optimisation; a read-only home must not stop a run

    def verify_all(self) -> list[VerifyResult]:
        """Rehash every image of every catalog (no cache); report each, never raise."""
        results = []
        for catalog in self.catalogs:
            for entry in catalog.entries():
                try:
                    self.check(entry, force=True)
                    results.append(VerifyResult(str(catalog.root), entry.key, entry.manifest.name, True))
                except CatalogError as err:
                    results.append(VerifyResult(str(catalog.root), entry.key, entry.manifest.name, False, str(err)))
        return results

    def copy(self, entry: Entry, dest: Catalog) -> Entry:
        """Publish `entry` (checked first) into `dest`; a no-op if it is already there."""
        if dest == entry.catalog or dest.get(entry.key) is not None:
            return dest.get(entry.key) or entry
        self.check(entry)
        dest.require_writable()
        log = entry.catalog.log_path(entry.key)
        log_text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else None
        return dest.publish(entry.sif, entry.manifest, log_text)

    def _stamp_path(self, sif: Path) -> Path:
        digest = hashlib.sha256(str(sif.resolve()).encode()).hexdigest()[:16]
        return self.cache_dir / "verified" / f"{sif.stem[:16]}-{digest}.json"


# ---- filesystem helpers ---------------------------------------------------------------


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


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
    """Rename a finished file into place (same filesystem), durable before it is visible."""
    with open(src, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(src, FILE_MODE)
    os.replace(src, dest)
    fsutil.fsync_dir(dest.parent)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = [
    "Catalog",
    "CatalogPath",
    "Entry",
    "GcItem",
    "Manifest",
    "VerifyResult",
    "check_key",
    "new_manifest",
    "sha256_file",
]
