"""The audit of an image's Python distributions, done by pip-audit (PyPA) used as a library.

pip-audit's `Auditor` runs a `VulnerabilityService` over a `DependencySource` and merges
results that are aliases of each other (PYSEC ids first). hpcml supplies both ends:

- `ImageDistributions`, the dependency source: the distributions found in the image
  (images/inventory.py), never a pip resolution on this host;
- `LocalOsvService`, a service answering from the advisories a lab mirrors (advisories.py),
  and/or pip-audit's own `OsvService` / `PyPIService` (online) when `advisory_service` says so.

An online service that cannot be reached is reported, never taken for "no vulnerabilities".
Imported only by a scan: pip-audit is in the `scan` extra (pip install 'hpcml[scan]').
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from packaging.version import InvalidVersion, Version
from pip_audit._audit import Auditor
from pip_audit._dependency_source import DependencySource
from pip_audit._fix import ResolvedFixVersion
from pip_audit._service import (
    Dependency,
    OsvService,
    PyPIService,
    ResolvedDependency,
    SkippedDependency,
    VulnerabilityResult,
    VulnerabilityService,
)

from hpcml.images.advisories import AdvisoryDB, AuditOutcome, Finding, compare_pypi
from hpcml.images.inventory import Package, canonical_name

ONLINE = {"osv": "OSV (api.osv.dev) through pip-audit", "pypi": "PyPI's JSON API through pip-audit"}
ONLINE_TIMEOUT_S = 15


class ImageDistributions(DependencySource):
    """The Python distributions of an image, as pip-audit dependencies."""

    def __init__(self, packages: Sequence[Package]):
        self.packages = packages

    def collect(self) -> Iterator[Dependency]:
        seen = set()
        for p in self.packages:
            ident = (canonical_name(p.name), p.version)
            if ident in seen:
                continue
            seen.add(ident)
            try:
                yield ResolvedDependency(name=p.name, version=Version(p.version))
            except InvalidVersion:
                yield SkippedDependency(name=p.name, skip_reason=f"version {p.version!r} is not a PEP 440 version")

    def fix(self, fix_version: ResolvedFixVersion) -> None:
        raise NotImplementedError("images are rebuilt, not fixed in place")


class LocalOsvService(VulnerabilityService):
    """pip-audit's service interface, answered from local OSV records (PyPI ecosystem)."""

    def __init__(self, db: AdvisoryDB):
        self.db = db

    def query(self, spec: Dependency) -> tuple[Dependency, list[VulnerabilityResult]]:
        if not isinstance(spec, ResolvedDependency):
            return spec, []
        name = spec.canonical_name
        results = []
        for adv, _aff in self.db.matching(["pypi"], name, str(spec.version), compare_pypi):
            fixes = []
            for text in adv.fixed_in("pypi", name):
                try:
                    fixes.append(Version(text))
                except InvalidVersion:
                    pass
            results.append(VulnerabilityResult.create(ids=[adv.id, *adv.aliases], description=adv.summary,
                                                      fix_versions=sorted(fixes), published=None))
        return spec, results


class _OnlineService(VulnerabilityService):
    """pip-audit's online service, remembering why it could not answer instead of raising."""

    def __init__(self, kind: str, cache_dir: Path | None):
        self.kind = kind
        service = OsvService if kind == "osv" else PyPIService
        self.inner = service(cache_dir=cache_dir, timeout=ONLINE_TIMEOUT_S)
        self.failure = ""
        self.skipped: list[str] = []

    def query(self, spec: Dependency) -> tuple[Dependency, list[VulnerabilityResult]]:
        if self.failure or not isinstance(spec, ResolvedDependency):
            return spec, []
        try:
            dep, results = self.inner.query(spec)
        except Exception as err:  # noqa: BLE001 - requests/pip-audit errors of every kind: reported
            self.failure = f"{type(err).__name__}: {str(err)[:200] or 'no detail'}"
            return spec, []
        if isinstance(dep, SkippedDependency):
            self.skipped.append(f"{spec.name} {spec.version}: {dep.skip_reason}")
            return spec, []
        return spec, results


class _Chain(VulnerabilityService):
    def __init__(self, services: Sequence[VulnerabilityService]):
        self.services = services

    def query(self, spec: Dependency) -> tuple[Dependency, list[VulnerabilityResult]]:
        results: list[VulnerabilityResult] = []
        for service in self.services:
            results += service.query(spec)[1]
        return spec, results


def _merged(vulns: list[VulnerabilityResult]) -> list[VulnerabilityResult]:
    """One result per id. pip-audit names a result by its PYSEC alias when it has one, so a
    GHSA record and its PYSEC twin (both in a mirror, or both from OSV) arrive under the same
    id; their aliases and fix versions are joined, the shorter description kept."""
    by_id: dict[str, VulnerabilityResult] = {}
    for v in vulns:
        old = by_id.get(v.id)
        if old is None:
            by_id[v.id] = v
            continue
        desc = min((old.description, v.description), key=lambda d: (d in ("", "N/A"), len(d)))
        by_id[v.id] = VulnerabilityResult(v.id, desc, sorted(set(old.fix_versions) | set(v.fix_versions)),
                                          (old.aliases | v.aliases) - {v.id}, old.published or v.published)
    return list(by_id.values())


def audit(packages: Sequence[Package], db: AdvisoryDB, online: str, cache_dir: Path | None = None) -> AuditOutcome:
    """Run pip-audit's Auditor over `packages`; `online` is 'off', 'osv' or 'pypi'. The online
    services' HTTP cache goes to `cache_dir` (hpcml's own cache), not pip's or pip-audit's."""
    logging.getLogger("pip_audit").setLevel(logging.ERROR)
    services: list[VulnerabilityService] = []
    against: list[str] = []
    notes: list[str] = []
    if db.covers("pypi"):
        services.append(LocalOsvService(db))
        against += [f"local OSV {s}" for s in db.sources]
    remote = _OnlineService(online, cache_dir) if online in ONLINE else None
    if remote is not None:
        services.append(remote)
    findings = []
    skipped = []
    for dep, vulns in Auditor(_Chain(services)).audit(ImageDistributions(packages)):
        if isinstance(dep, SkippedDependency):
            skipped.append(f"{dep.name}: {dep.skip_reason}")
            continue
        assert isinstance(dep, ResolvedDependency)
        for v in _merged(vulns):
            ids = [v.id, *sorted(v.aliases)]
            findings.append(Finding("python", dep.name, str(dep.version), v.id, tuple(sorted(v.aliases)),
                                    db.severity_of(ids), v.description[:300],
                                    tuple(str(f) for f in v.fix_versions), "pip-audit"))
    if remote is not None:
        if remote.failure:
            notes.append(f"{ONLINE[online]} could not be reached: {remote.failure}")
        elif remote.skipped and len(remote.skipped) == len(packages):
            notes.append(f"{ONLINE[online]} answered for none of the packages ({remote.skipped[0]})")
        else:
            against.append(ONLINE[online])
            notes += [f"online: {s}" for s in remote.skipped[:5]]
    notes += [f"not audited: {s}" for s in skipped]
    audited = bool(against)
    if not audited:
        notes.insert(0, "Python distributions listed but NOT audited: no advisory source answered "
                        "(set `advisories` to a local mirror of PyPI's advisories in OSV format)")
    return AuditOutcome("python", len(packages), audited, tuple(against), tuple(findings) if audited else (),
                        tuple(notes))
