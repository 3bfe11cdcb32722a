"""Scanning catalog images: an SBOM and a vulnerability audit per image, stored beside its
manifest (docs/security.md, "Scanning").

    meta/<key>.cdx.json     the SBOM: CycloneDX 1.6 JSON (packages + vulnerabilities), sbom.py
    meta/<key>.scan.json    hpcml's summary of that scan: when, counts by severity, what was
                            audited against what, and what was NOT audited and why

Both are written into the catalog that holds the image when this user can write there, else
into the first writable catalog of the search path (a read-only lab catalog); readers look
in every catalog, the holder first. The summary is written after the SBOM, so a summary
always has its SBOM. A scan is only as trustworthy as the catalog's write permissions: a
member who can rewrite manifests can rewrite scans too (docs/catalog.md).

Example:

    for outcome in scan_images(settings, refs=["numpy"]):
        print(outcome.record.counts)   # {'critical': 0, 'high': 1, …}
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from hpcml import __version__, fsutil
from hpcml.clients.runner import LocalRunner, Runner
from hpcml.config import Settings
from hpcml.errors import CatalogError, ConfigError, HpcmlError
from hpcml.images.catalog import FILE_MODE, Catalog, Entry
from hpcml.images.manifest import check_key
from hpcml.images.search import CatalogPath

if TYPE_CHECKING:
    from hpcml.images.ensure import BuildReport

SCAN_SCHEMA = 1
#: The modules of the `scan` extra (pyproject.toml), checked before a scan starts.
EXTRA_MODULES = ("pip_audit", "cyclonedx", "packageurl", "debian", "cvss", "packaging")
EXTRA_HINT = "scanning needs the scan extra: pip install 'hpcml[scan]' (pip-audit, cyclonedx-python-lib, python-debian, cvss)"


def sbom_path(catalog: Catalog, key: str) -> Path:
    return catalog.root / "meta" / f"{check_key(key)}.cdx.json"


def record_path(catalog: Catalog, key: str) -> Path:
    return catalog.root / "meta" / f"{check_key(key)}.scan.json"


@dataclass(frozen=True)
class ScanRecord:
    """The summary of one scan (meta/<key>.scan.json)."""

    key: str
    name: str
    sha256: str
    scanned: str  # ISO 8601, UTC
    os: str
    packages: dict[str, int]  # ecosystem → count
    counts: dict[str, int]  # severity → findings
    audits: list[dict[str, Any]]  # AuditOutcome without findings: group, packages, audited, against, notes
    findings: list[dict[str, Any]]
    notes: list[str]
    sbom: str
    tools: dict[str, str] = field(default_factory=dict)
    schema: int = SCAN_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str, where: str) -> "ScanRecord":
        try:
            data = json.loads(text)
            if data.get("schema") != SCAN_SCHEMA:
                raise ValueError(f"scan schema {data.get('schema')!r}; this hpcml reads {SCAN_SCHEMA}")
            return ScanRecord(**data)
        except (ValueError, TypeError, AttributeError) as err:
            raise CatalogError(f"{where}: unreadable scan record ({err})") from None

    @property
    def scanned_at(self) -> float:
        return datetime.fromisoformat(self.scanned).timestamp()

    def audited(self, group: str) -> bool | None:
        """Whether `group` ('python', 'os') was audited; None when it had no packages."""
        for a in self.audits:
            if a["group"] == group:
                return bool(a["audited"]) if a["packages"] else None
        return None

    def at_or_above(self, threshold: str) -> list[dict[str, Any]]:
        """Findings that `--fail-on threshold` counts (unknown severity always counts)."""
        from hpcml.images.advisories import RANK

        return [f for f in self.findings if RANK[f["severity"]] >= RANK[threshold]]


@dataclass(frozen=True)
class ScanOutcome:
    """What `scan_images` did for one image: its record, or the error that stopped it."""

    ref: str
    key: str
    name: str
    catalog: str
    record: ScanRecord | None = None
    error: str = ""
    skipped: str = ""  # --stale: scanned recently enough


def read_record(cats: CatalogPath, entry: Entry) -> tuple[ScanRecord, Catalog] | None:
    """The newest scan of `entry` in the search path (holder catalog first), or None."""
    order = [entry.catalog] + [c for c in cats.catalogs if c != entry.catalog]
    for catalog in order:
        path = record_path(catalog, entry.key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as err:
            raise CatalogError(f"{path}: cannot read: {err}") from err
        record = ScanRecord.from_json(text, str(path))
        if record.sha256 == entry.manifest.sha256:
            return record, catalog
    return None


def summary(record: ScanRecord | None) -> dict[str, Any] | None:
    """What `catalog list --json` shows of a scan."""
    if record is None:
        return None
    return {"scanned": record.scanned, "counts": record.counts, "packages": record.packages,
            "python_audited": record.audited("python"), "os_audited": record.audited("os")}


def target_catalog(cats: CatalogPath, entry: Entry) -> Catalog:
    """Where a scan of `entry` is stored: its own catalog if writable, else the first writable."""
    if entry.catalog.writable() is None:
        return entry.catalog
    return cats.writable()


def select(cats: CatalogPath, refs: Sequence[str], all_images: bool) -> list[tuple[str, Entry]]:
    """(ref, entry) for the named images, or every image of every catalog (first holder wins)."""
    if refs and all_images:
        raise ConfigError("give image references or --all, not both")
    if not refs and not all_images:
        raise ConfigError("name the images to scan (NAME[:TAG] or a key prefix), or give --all")
    if refs:
        return [(ref, cats.find(ref)) for ref in refs]
    seen: set[str] = set()
    out = []
    for catalog in cats.catalogs:
        for entry in catalog.entries():
            if entry.key not in seen:
                seen.add(entry.key)
                out.append((entry.manifest.name, entry))
    return out


def scan_images(settings: Settings, refs: Sequence[str] = (), *, all_images: bool = False,
                stale_s: float | None = None, runner: Runner | None = None,
                cats: CatalogPath | None = None) -> Iterator[ScanOutcome]:
    """Scan images one by one (see the module doc); an image that cannot be scanned is an
    outcome with `error`, the others go on. With `stale_s`, images scanned less than that
    long ago are skipped. Raises ConfigError for bad arguments or advisory sources."""
    from hpcml.images import ensure  # start-up speed: ensure imports the build machinery

    cats = cats or ensure.catalog_path(settings, runner)
    chosen = select(cats, refs, all_images)
    scanner = Scanner(settings, runner or LocalRunner(), cats)
    now = time.time()
    for ref, entry in chosen:
        base = ScanOutcome(ref, entry.key, entry.manifest.name, str(entry.catalog.root))
        if stale_s is not None:
            found = read_record(cats, entry)
            if found is not None and now - found[0].scanned_at < stale_s:
                yield replace(base, record=found[0], skipped=f"scanned {found[0].scanned}")
                continue
        try:
            yield replace(base, record=scanner.scan(entry))
        except ConfigError:
            raise
        except (HpcmlError, OSError) as err:
            yield replace(base, error=str(err))


class Scanner:
    """Scans entries with one set of advisories (loaded once)."""

    def __init__(self, settings: Settings, runner: Runner, cats: CatalogPath):
        missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise HpcmlError(f"{EXTRA_HINT}; missing: {', '.join(missing)}")
        from hpcml.images import advisories

        self.settings, self.runner, self.cats = settings, runner, cats
        self.db = advisories.AdvisoryDB.load(settings.advisories)
        self.online = settings.advisory_service
        if self.online == "auto":
            self.online = "off" if settings.advisories else "osv"

    def scan(self, entry: Entry) -> ScanRecord:
        """Scan one image (after its integrity check) and store the SBOM and summary."""
        from hpcml.images import advisories, sbom
        from hpcml.images.inventory import read_inventory

        self.cats.check(entry)  # the scan describes the SIF the manifest names, or nothing
        inv = read_inventory(str(entry.sif), self.runner, apptainer=self.settings.apptainer,
                             exec_flags=self.settings.exec_flags)
        python = advisories.audit_python(inv.of("python"), self.db, self.online,
                                          Path(self.settings.cache_dir) / "pip-audit")
        os_audit = advisories.audit_os(inv.of("deb", "apk", "rpm"), self.db, os_id=inv.os_id,
                                       os_version=inv.os_version, codename=inv.os_codename)
        findings = [*os_audit.findings, *python.findings]
        scanned = datetime.now(timezone.utc).replace(microsecond=0)
        target = target_catalog(self.cats, entry)
        target.init()
        text = sbom.render(inv, findings, image_name=entry.manifest.name, key=entry.key,
                           sha256=entry.manifest.sha256, scanned=scanned)
        fsutil.atomic_write(sbom_path(target, entry.key), text, FILE_MODE)
        counts = {s: 0 for s in advisories.SEVERITIES}
        for f in findings:
            counts[f.severity] += 1
        packages: dict[str, int] = {}
        for p in inv.packages:
            packages[p.ecosystem] = packages.get(p.ecosystem, 0) + 1
        record = ScanRecord(
            key=entry.key, name=entry.manifest.name, sha256=entry.manifest.sha256,
            scanned=scanned.isoformat(), os=inv.os_name, packages=packages, counts=counts,
            audits=[{"group": a.group, "packages": a.packages, "audited": a.audited,
                     "against": list(a.against), "notes": list(a.notes)} for a in (python, os_audit)],
            findings=[asdict(f) for f in findings], notes=list(inv.notes),
            sbom=str(sbom_path(target, entry.key)), tools=_tools(),
        )
        fsutil.atomic_write(record_path(target, entry.key), record.to_json(), FILE_MODE)
        return record


def _tools() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"hpcml": __version__}
    for dist in ("pip-audit", "cyclonedx-python-lib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def scan_built(report: BuildReport, settings: Settings, cats: CatalogPath, emit: Callable[..., None],
               runner: Runner, *, cached_too: bool) -> None:
    """After a build: scan the images it published (and, with `cached_too`, the cached ones
    never scanned), each reported as a "scanned" event whose message is the outcome."""
    todo = []
    for r in report.results.values():
        if r.state == "done" or (cached_too and r.state == "cached"):
            entry = cats.lookup(r.key)
            if entry is not None and (r.state == "done" or read_record(cats, entry) is None):
                todo.append((r.name, entry))
    if not todo:
        return
    try:
        scanner = Scanner(settings, runner, cats)
    except HpcmlError as err:
        for name, _entry in todo:
            emit(name, "scanned", message=f"not scanned: {err}")
        return
    for name, entry in todo:
        try:
            emit(name, "scanned", message=outcome_line(scanner.scan(entry)))
        except (HpcmlError, OSError) as err:
            emit(name, "scanned", message=f"scan failed: {err}")


def outcome_line(record: ScanRecord) -> str:
    """One line for a scan: 'scanned: 112 deb, 1 python; 1 critical; OS packages not audited'."""
    pkgs = ", ".join(f"{n} {eco}" for eco, n in sorted(record.packages.items())) or "no packages"
    found = ", ".join(f"{n} {sev}" for sev, n in record.counts.items() if n) or "no known vulnerabilities"
    missing = [g for g in ("python", "os") if record.audited(g) is False]
    tail = "".join(f"; {'Python' if g == 'python' else 'OS'} packages NOT audited" for g in missing)
    return f"scanned: {pkgs}; {found}{tail} (sbom: {record.sbom})"
