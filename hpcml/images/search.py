"""The catalog search path (DESIGN §4): several catalogs, first hit wins, and the integrity
(and signature) check of a SIF before it is used, cached by file fingerprint."""

from __future__ import annotations

import hashlib
import os
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hpcml import fsutil
from hpcml.errors import CatalogError
from hpcml.images.catalog import Catalog, Entry
from hpcml.images.manifest import check_name, file_fingerprint, sha256_file


@dataclass(frozen=True)
class VerifyResult:
    catalog: str
    key: str
    name: str
    ok: bool
    problem: str = ""
class CatalogPath:
    """The search path: first catalog holding a key wins; new images go to the first writable.

    Before an image is used, its SIF's sha256 is checked against the manifest (cached in
    `cache_dir/verified/` by size, mtime_ns, ctime_ns and inode) and, when `require_signatures`, its
    signature is verified with `verify` (a callable taking the SIF path; see images/ensure.py).
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

    def check_open(self, entry: Entry, fd: int) -> None:
        """Like `check`, for the file open on `fd` (a parent SIF held for a build): the bytes
        checked are the bytes the build reads, whatever is renamed at the catalog path."""
        st = os.fstat(fd)
        fingerprint = file_fingerprint(st, entry.manifest.sha256)
        cached = _read_json(self._stamp_path(entry.sif))
        if cached is not None and all(cached.get(k) == v for k, v in fingerprint.items()):
            if not self.require_signatures or cached.get("signature_ok"):
                return
        digest = hashlib.sha256()
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            digest.update(chunk)
            offset += len(chunk)
        if st.st_size != entry.manifest.size or digest.hexdigest() != entry.manifest.sha256:
            raise CatalogError(f"{entry.sif} is corrupt: its sha256 does not match the manifest "
                               f"{entry.catalog.meta_path(entry.key)}; it was refused")
        if self.require_signatures:
            assert self.verify_signature is not None
            self.verify_signature(Path(f"/proc/{os.getpid()}/fd/{fd}"))

    def remember(self, sif: Path, fingerprint: dict[str, Any]) -> None:
        """Record that `sif` (with this fingerprint) was checked, so the next use skips hashing."""
        try:
            self._stamp_path(sif).parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write(self._stamp_path(sif), json.dumps(fingerprint), 0o644)
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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
