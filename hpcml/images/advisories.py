"""Vulnerability advisories a lab mirrors locally, and the audit of an image's packages.

Sources (the `advisories` setting, any number of paths):

- OSV records (https://ossf.github.io/osv-schema/): a `.json` file holding one record or a
  list, a `.yaml`/`.yml` record (as in PyPA's advisory-database), a directory of those
  (searched recursively), or a `.zip` of `.json` records (OSV's per-ecosystem `all.zip`,
  e.g. `PyPI/all.zip`, `Debian:12/all.zip`).
- Debian's security tracker JSON (`https://security-tracker.debian.org/tracker/data/json`):
  a `.json` file mapping source packages to CVEs; recognised by its shape.

Python distributions are audited by pip-audit's `Auditor` (alias merging, fix versions) with
this module's `LocalOsvService` plugged in as its `VulnerabilityService`, and/or pip-audit's
own online services (`advisory_service`). Deciding whether a version lies in an OSV range is
the one thing done here, since that is what the OSV server does for pip-audit online.
Debian packages are matched by source package and compared with python-debian's dpkg
version ordering. apk and rpm packages are listed but not audited (no comparison of their
versions is implemented); the scan says so.

Example:

    db = AdvisoryDB.load(["/shared/lab/osv"])
    audit = audit_python(inventory.of("python"), db, online="off")
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import yaml

from hpcml.errors import ConfigError, HpcmlError
from hpcml.images.inventory import Package, canonical_name

SEVERITIES = ("critical", "high", "medium", "low", "unknown")
#: What `--fail-on X` counts: every finding at X or above, and those of unknown severity.
RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4, "unknown": 5}
_GHSA = {"moderate": "medium", "low": "low", "high": "high", "critical": "critical"}
_URGENCY = {"unimportant": "low", "low": "low", "medium": "medium", "high": "high"}
MAX_SOURCE_BYTES = 2 << 30


class AdvisoryError(HpcmlError):
    """An advisory source cannot be read."""


@dataclass(frozen=True)
class Affected:
    """One `affected` entry: a package of one ecosystem and the versions hit."""

    ecosystem: str  # 'pypi', 'debian:12', 'debian:bookworm', 'debian'
    name: str  # canonical for PyPI; the source package for Debian
    ranges: tuple[tuple[tuple[str, str], ...], ...] = ()  # events: (kind, version)
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: str
    vector: str
    affected: tuple[Affected, ...]
    source: str

    def fixed_in(self, ecosystem: str, name: str) -> list[str]:
        return [v for a in self.affected if a.ecosystem == ecosystem and a.name == name
                for r in a.ranges for kind, v in r if kind == "fixed"]


@dataclass(frozen=True)
class Finding:
    """One advisory that applies to one installed package."""

    ecosystem: str
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    severity: str
    summary: str
    fixed: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class AuditOutcome:
    """How one group of packages (python, os) was audited, and what was found."""

    group: str
    packages: int
    audited: bool
    against: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class AdvisoryDB:
    """Advisories by (ecosystem, package), from local files."""

    index: dict[tuple[str, str], list[Advisory]] = field(default_factory=dict)
    by_id: dict[str, Advisory] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # ecosystem family → records

    @staticmethod
    def load(paths: Sequence[str]) -> "AdvisoryDB":
        db = AdvisoryDB()
        for path in paths:
            db.add_path(Path(path))
        return db

    def add_path(self, path: Path) -> None:
        if not path.exists():
            raise ConfigError(f"advisories: {path} does not exist (a local OSV file, directory or .zip, "
                              "or a Debian security tracker JSON file)")
        before = len(self.by_id)
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.suffix in (".json", ".yaml", ".yml") and item.is_file():
                    self._add_text(item.read_bytes(), str(item), item.suffix)
        elif path.suffix == ".zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    for info in zf.infolist():
                        if info.filename.endswith(".json") and info.file_size < MAX_SOURCE_BYTES:
                            self._add_text(zf.read(info), f"{path}:{info.filename}", ".json")
            except zipfile.BadZipFile as err:
                raise AdvisoryError(f"advisories: {path}: not a zip file ({err})") from None
        else:
            self._add_text(path.read_bytes(), str(path), path.suffix)
        self.sources.append(f"{path} ({len(self.by_id) - before} advisories)")

    def _add_text(self, data: bytes, where: str, suffix: str) -> None:
        try:
            doc = yaml.safe_load(data) if suffix in (".yaml", ".yml") else json.loads(data)
        except (ValueError, yaml.YAMLError) as err:
            raise AdvisoryError(f"advisories: {where}: unreadable ({err})") from None
        if isinstance(doc, dict) and "id" in doc and ("affected" in doc or "modified" in doc):
            self.add(osv_advisory(doc, where))
        elif isinstance(doc, list):
            for rec in doc:
                if isinstance(rec, dict) and "id" in rec:
                    self.add(osv_advisory(rec, where))
        elif isinstance(doc, dict) and _looks_like_tracker(doc):
            for adv in tracker_advisories(doc, where):
                self.add(adv)
        else:
            raise AdvisoryError(f"advisories: {where}: neither an OSV record nor Debian security tracker JSON")

    def add(self, adv: Advisory) -> None:
        self.by_id[adv.id] = adv
        for aff in adv.affected:
            self.index.setdefault((aff.ecosystem, aff.name), []).append(adv)
            family = aff.ecosystem.split(":")[0]
            self.counts[family] = self.counts.get(family, 0) + 1

    def covers(self, family: str) -> bool:
        return self.counts.get(family, 0) > 0

    def matching(self, ecosystems: Iterable[str], name: str, version: str,
                 compare: Callable[[str, str], int]) -> list[tuple[Advisory, Affected]]:
        out = []
        for eco in ecosystems:
            for adv in self.index.get((eco, name), []):
                for aff in adv.affected:
                    if aff.ecosystem == eco and aff.name == name and affects(aff, version, compare):
                        out.append((adv, aff))
                        break
        return out

    def severity_of(self, ids: Iterable[str]) -> str:
        """The highest severity any local record of these ids (or aliases) gives."""
        found = [self.by_id[i].severity for i in ids if i in self.by_id]
        rated = [s for s in found if s != "unknown"]
        return max(rated, key=lambda s: RANK[s]) if rated else "unknown"


# ---- OSV ---------------------------------------------------------------------------------


def osv_advisory(rec: dict[str, Any], where: str) -> Advisory:
    affected = []
    for aff in rec.get("affected") or []:
        pkg = aff.get("package") or {}
        eco = str(pkg.get("ecosystem", ""))
        name = str(pkg.get("name", ""))
        key = _ecosystem_key(eco)
        if key is None or not name:
            continue
        if key == "pypi":
            name = canonical_name(name)
        ranges = tuple(
            tuple((kind, str(ev[kind])) for ev in r.get("events") or [] for kind in ("introduced", "fixed", "last_affected") if kind in ev)
            for r in aff.get("ranges") or [] if r.get("type") in ("ECOSYSTEM", "SEMVER")
        )
        affected.append(Affected(key, name, ranges, tuple(str(v) for v in aff.get("versions") or [])))
    severity, vector = osv_severity(rec)
    summary = str(rec.get("summary") or rec.get("details") or "").strip().replace("\n", " ")
    if rec.get("withdrawn"):
        affected = []
    return Advisory(str(rec["id"]), tuple(str(a) for a in rec.get("aliases") or []), summary[:300],
                    severity, vector, tuple(affected), where)


def _ecosystem_key(eco: str) -> str | None:
    """'PyPI' → 'pypi'; 'Debian:12' → 'debian:12'; 'Debian' → 'debian'; others: not used."""
    base, _, release = eco.partition(":")
    if base == "PyPI":
        return "pypi"
    if base == "Debian":
        return f"debian:{release}" if release else "debian"
    return None


def osv_severity(rec: dict[str, Any]) -> tuple[str, str]:
    """(severity, CVSS vector) of an OSV record: GHSA's rating, else the CVSS base score."""
    vector = ""
    for sev in rec.get("severity") or []:
        if str(sev.get("type", "")).startswith("CVSS_V") and str(sev.get("score", "")).startswith("CVSS:"):
            vector = str(sev["score"])
    rated = str((rec.get("database_specific") or {}).get("severity", "")).lower()
    if rated in _GHSA:
        return _GHSA[rated], vector
    if vector:
        return cvss_severity(vector), vector
    return "unknown", vector


def cvss_severity(vector: str) -> str:
    """The qualitative rating of a CVSS v3/v4 base score (`cvss` library)."""
    try:
        from cvss import CVSS3, CVSS4  # the scan extra

        score = CVSS4(vector).base_score if vector.startswith("CVSS:4") else CVSS3(vector).scores()[0]
    except Exception:  # noqa: BLE001 - a malformed vector is an unrated advisory, not a crash
        return "unknown"
    score = float(score)
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "unknown"


def affects(aff: Affected, version: str, compare: Callable[[str, str], int]) -> bool:
    """Whether `version` is affected: listed in `versions`, or inside one of the ranges
    (OSV's evaluation: events in version order, introduced opens, fixed/last_affected close)."""
    if version in aff.versions:
        return True
    for events in aff.ranges:
        try:
            hit = False
            for kind, at in sorted(events, key=lambda e: _EventKey(e[1], compare)):
                if kind == "introduced" and (at == "0" or compare(version, at) >= 0):
                    hit = True
                elif kind == "fixed" and compare(version, at) >= 0:
                    hit = False
                elif kind == "last_affected" and compare(version, at) > 0:
                    hit = False
            if hit:
                return True
        except ValueError:
            continue  # a version this ecosystem's ordering cannot read
    return False


class _EventKey:
    """Sort key for range events: '0' first, then by the ecosystem's ordering."""

    def __init__(self, version: str, compare: Callable[[str, str], int]):
        self.version, self.compare = version, compare

    def __lt__(self, other: "_EventKey") -> bool:
        if self.version == "0":
            return other.version != "0"
        if other.version == "0":
            return False
        return self.compare(self.version, other.version) < 0


def compare_pypi(a: str, b: str) -> int:
    from packaging.version import InvalidVersion, Version

    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion as err:
        raise ValueError(str(err)) from None
    return (va > vb) - (va < vb)


def compare_dpkg(a: str, b: str) -> int:
    from debian.debian_support import Version  # the scan extra (python-debian); ValueError if unreadable

    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)


# ---- Debian security tracker ---------------------------------------------------------------


def _looks_like_tracker(doc: dict[str, Any]) -> bool:
    for value in list(doc.values())[:20]:
        if isinstance(value, dict):
            for entry in list(value.values())[:5]:
                if isinstance(entry, dict) and "releases" in entry:
                    return True
    return False


def tracker_advisories(doc: dict[str, Any], where: str) -> Iterator[Advisory]:
    """One Advisory per (source package, CVE) of the tracker JSON, per release it affects:
    `open` (no fix yet) or `resolved` with a fixed_version other than '0' (never affected)."""
    for package, cves in doc.items():
        if not isinstance(cves, dict):
            continue
        for cve, entry in cves.items():
            if not isinstance(entry, dict):
                continue
            affected = []
            urgency = "unknown"
            for release, info in (entry.get("releases") or {}).items():
                status, fixed = info.get("status"), str(info.get("fixed_version", ""))
                if status == "open":
                    events: tuple[tuple[str, str], ...] = (("introduced", "0"),)
                elif status == "resolved" and fixed and fixed != "0":
                    events = (("introduced", "0"), ("fixed", fixed))
                else:
                    continue
                affected.append(Affected(f"debian:{release}", package, (events,)))
                level = _URGENCY.get(str(info.get("urgency", "")).rstrip("*"), "unknown")
                if level != "unknown" and (urgency == "unknown" or RANK[level] > RANK[urgency]):
                    urgency = level
            if affected:
                yield Advisory(f"{cve}/{package}" if not cve.startswith("CVE-") else cve, (),
                               str(entry.get("description", ""))[:300], urgency, "", tuple(affected), where)


# ---- audits -----------------------------------------------------------------------------------


def audit_os(packages: Sequence[Package], db: AdvisoryDB, *, os_id: str, os_version: str,
             codename: str = "") -> AuditOutcome:
    """Audit dpkg packages against the local Debian advisories; others are listed only."""
    if not packages:
        return AuditOutcome("os", 0, True, (), notes=("no OS packages found",))
    kinds = sorted({p.ecosystem for p in packages})
    if kinds != ["deb"] or os_id != "debian":
        return AuditOutcome("os", len(packages), False, (), notes=(
            f"OS packages ({', '.join(kinds)}, {os_id or 'unknown OS'}) listed but NOT audited: "
            "only Debian (dpkg) packages can be audited, against local Debian advisories",))
    if not db.covers("debian"):
        return AuditOutcome("os", len(packages), False, (), notes=(
            "OS packages listed but NOT audited: no Debian advisories configured (set `advisories` to a "
            "local OSV Debian export or the Debian security tracker JSON; these machines cannot fetch one)",))
    ecos = [f"debian:{os_version}", "debian"] + ([f"debian:{codename}"] if codename else [])
    findings = []
    for p in packages:
        for adv, _aff in db.matching(ecos, p.source or p.name, p.source_version or p.version, compare_dpkg):
            fixed = tuple(sorted({v for e in ecos for v in adv.fixed_in(e, p.source or p.name)}))
            findings.append(Finding("deb", p.name, p.version, adv.id, adv.aliases, adv.severity,
                                    adv.summary, fixed, adv.source))
    return AuditOutcome("os", len(packages), True, tuple(db.sources), tuple(findings))


def audit_python(packages: Sequence[Package], db: AdvisoryDB, online: str, cache_dir: Path | None = None) -> AuditOutcome:
    """Audit Python distributions with pip-audit: the local advisories (LocalOsvService)
    and, when `online` is 'osv' or 'pypi', pip-audit's online service of that name."""
    from hpcml.images import pipaudit  # the scan extra

    if not packages:
        return AuditOutcome("python", 0, True, (), notes=("no Python distributions found",))
    return pipaudit.audit(packages, db, online, cache_dir)
