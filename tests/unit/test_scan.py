"""Scanning, the pure parts: the SIF and squashfs listings, package databases, OSV range
evaluation, the local advisory sources, pip-audit's auditor with the local service, and the
CycloneDX SBOM (validated against the 1.6 schema). The real images: tests/integration/test_scan_images.py."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from hpcml.cli.image_cmds import scan_cell
from hpcml.clients.apptainer import parse_sif_list
from hpcml.clients.squashfs import ListedFile, parse_listing
from hpcml.errors import ConfigError
from hpcml.images import advisories, sbom
from hpcml.images.advisories import AdvisoryDB, Affected, affects, compare_dpkg, compare_pypi
from hpcml.images.inventory import (
    Inventory,
    Package,
    _select,
    parse_apk_installed,
    parse_dist_metadata,
    parse_dpkg_status,
    parse_os_release,
    parse_rpm_qa,
)
from hpcml.images.scan import ScanRecord

DATA = Path(__file__).resolve().parents[1] / "data"
OSV = DATA / "osv"
DEBIAN = DATA / "debian"

SIF_LIST = """\
------------------------------------------------------------------------------
ID   |GROUP   |LINK    |SIF POSITION (start-end)  |TYPE
------------------------------------------------------------------------------
1    |1       |NONE    |32176-32263               |Def.FILE
2    |1       |NONE    |32263-33869               |JSON.Generic
3    |1       |NONE    |36864-1081344             |FS (Squashfs/*System/amd64)
4    |NONE    |1   (G) |1081344-1083354           |Signature (SHA-256)
"""

LISTING = """\
drwxr-xr-x 0/0                     240 2026-12-02 20:00 squashfs-root
lrwxrwxrwx 0/0                       7 2026-12-02 20:00 squashfs-root/lib -> usr/lib
-rw-r--r-- 0/0                    3021 2026-12-02 20:00 squashfs-root/var/lib/dpkg/status
crw-rw-rw- 0/0                  1,   3 2026-12-02 20:00 squashfs-root/dev/null
-rw-r--r-- 0/0                     120 2026-12-02 20:00 squashfs-root/usr/lib/python3/dist-packages/PyYAML-5.3.dist-info/METADATA
-rw-r--r-- 0/0                     120 2026-12-02 20:00 squashfs-root/opt/venv/lib/python3.11/site-packages/my pkg-1.0.dist-info/METADATA
-rw-r--r-- 0/0                     300 2026-12-02 20:00 squashfs-root/usr/lib/python3/dist-packages/numpy-1.24.2.egg-info/PKG-INFO
-rw-r--r-- 0/0                     300 2026-12-02 20:00 squashfs-root/usr/lib/python3/dist-packages/six-1.16.0.egg-info
lrwxrwxrwx 0/0                      11 2026-12-02 20:00 squashfs-root/usr/lib/python3/dist-packages/evil-1.0.dist-info/METADATA -> /etc/shadow
-rw-r--r-- 0/0                     300 2026-12-02 20:00 squashfs-root/usr/share/doc/x.dist-info/METADATA
lrwxrwxrwx 0/0                      21 2026-12-02 20:00 squashfs-root/etc/os-release -> ../usr/lib/os-release
-rw-r--r-- 0/0                     400 2026-12-02 20:00 squashfs-root/usr/lib/os-release
"""

DPKG = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u1
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: python3-numpy
Status: install ok installed
Architecture: amd64
Source: numpy (1:1.24.2-1)
Version: 1:1.24.2-1+b1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def test_sif_list_and_squashfs_listing_are_parsed() -> None:
    parts = parse_sif_list(SIF_LIST)
    assert [(p.id, p.start, p.primary_squashfs) for p in parts] == [
        (1, 32176, False), (2, 32263, False), (3, 36864, True), (4, 1081344, False)]
    files = parse_listing(LISTING)
    assert ListedFile("lib", "link", 7) in files and ListedFile("var/lib/dpkg/status", "file", 3021) in files
    assert not any(f.path == "dev/null" for f in files)  # device nodes are never wanted
    wanted, notes = _select(files)
    assert wanted == [
        "var/lib/dpkg/status",
        "usr/lib/python3/dist-packages/PyYAML-5.3.dist-info/METADATA",
        "opt/venv/lib/python3.11/site-packages/my pkg-1.0.dist-info/METADATA",
        "usr/lib/python3/dist-packages/numpy-1.24.2.egg-info/PKG-INFO",
        "usr/lib/python3/dist-packages/six-1.16.0.egg-info",
        "usr/lib/os-release",
    ]  # no symlink (evil → /etc/shadow, etc/os-release), nothing outside site-/dist-packages
    big = [ListedFile("usr/lib/python3/dist-packages/x-1.dist-info/METADATA", "file", 1 << 30)]
    assert _select(big)[0] == [] and "left out" in _select(big)[1][0]


def test_package_databases_and_metadata_are_parsed() -> None:
    debs = parse_dpkg_status(DPKG)
    assert [(p.name, p.version, p.source, p.source_version) for p in debs] == [
        ("libc6", "2.36-9+deb12u1", "glibc", "2.36-9+deb12u1"),
        ("python3-numpy", "1:1.24.2-1+b1", "numpy", "1:1.24.2-1"),
    ]
    apk = parse_apk_installed("C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\nL:MIT\n\nP:busybox\nV:1.36.1-r5\n")
    assert [(p.name, p.version, p.arch, p.license) for p in apk] == [("musl", "1.2.4-r2", "x86_64", "MIT"),
                                                                     ("busybox", "1.36.1-r5", "", "")]
    rpm = parse_rpm_qa("bash\t(none):5.1.8-6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\tGPLv3+\n"
                       "openssl-libs\t1:3.0.7-24.el9\tx86_64\topenssl-3.0.7-24.el9.src.rpm\tASL 2.0\n")
    assert [(p.name, p.version, p.source) for p in rpm] == [("bash", "5.1.8-6.el9", "bash"),
                                                            ("openssl-libs", "1:3.0.7-24.el9", "openssl")]
    dist = parse_dist_metadata("Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3\nLicense: MIT\n\nbody: x\n", "a/M")
    assert dist == Package("python", "PyYAML", "5.3", license="MIT", path="/a/M")
    assert parse_dist_metadata("Metadata-Version: 2.1\nName: x\n") is None
    assert parse_os_release('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
                            "VERSION_CODENAME=bookworm\n# comment\nBAD\n") == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian", "VERSION_ID": "12",
        "VERSION_CODENAME": "bookworm"}
    assert debs[1].purl("debian-12") == "pkg:deb/debian/python3-numpy@1:1.24.2-1%2Bb1?arch=amd64&distro=debian-12"
    assert dist.purl() == "pkg:pypi/pyyaml@5.3"


def test_osv_ranges_are_evaluated_as_osv_does() -> None:
    rng = Affected("pypi", "x", ((("introduced", "0"), ("fixed", "5.4")),))
    assert affects(rng, "5.3", compare_pypi) and affects(rng, "1.0a1", compare_pypi)
    assert not affects(rng, "5.4", compare_pypi) and not affects(rng, "6.0", compare_pypi)
    two = Affected("pypi", "x", ((("introduced", "1.0"), ("fixed", "1.2"), ("introduced", "2.0"),
                                  ("last_affected", "2.1")),))
    assert [affects(two, v, compare_pypi) for v in ("0.9", "1.1", "1.2", "2.0", "2.1", "2.2")] == [
        False, True, False, True, True, False]
    listed = Affected("pypi", "x", (), ("3.13rc1",))
    assert affects(listed, "3.13rc1", compare_pypi) and not affects(listed, "3.13", compare_pypi)
    deb = Affected("debian:12", "glibc", ((("introduced", "0"), ("fixed", "2.36-9+deb12u3")),))
    assert affects(deb, "2.36-9+deb12u1", compare_dpkg) and not affects(deb, "2.36-9+deb12u14", compare_dpkg)
    assert not affects(Affected("pypi", "x", ((("introduced", "0"), ("fixed", "1.0")),)), "not a version",
                       compare_pypi)


def test_local_sources_load_in_every_mirrored_form(tmp_path: Path) -> None:
    db = AdvisoryDB.load([str(OSV), str(DEBIAN / "tracker-glibc.json")])
    assert db.covers("pypi") and db.covers("debian")
    assert db.by_id["GHSA-8q59-q68h-6hv4"].severity == "critical"
    assert db.by_id["PYSEC-2021-142"].severity == "unknown"  # PYSEC records carry no rating
    assert db.severity_of(["PYSEC-2021-142", "GHSA-8q59-q68h-6hv4"]) == "critical"
    # bullseye's fixed_version "0" means never affected: only bookworm is indexed
    assert [a.ecosystem for a in db.by_id["CVE-2023-4911"].affected] == ["debian:bookworm"]
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as zf:  # OSV's per-ecosystem export
        for rec in OSV.glob("*.json"):
            zf.write(rec, rec.name)
    record = json.loads((OSV / "PYSEC-2021-142.json").read_text())
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "PYSEC-2021-142.yaml").write_text(yaml.safe_dump(record))  # PyPA's repository form
    assert set(AdvisoryDB.load([str(tmp_path / "all.zip")]).by_id) == {"PYSEC-2021-142", "GHSA-8q59-q68h-6hv4"}
    assert set(AdvisoryDB.load([str(tmp_path / "yaml")]).by_id) == {"PYSEC-2021-142"}
    cvss_only = {"id": "X-1", "affected": [], "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}]}
    assert advisories.osv_severity(cvss_only) == ("medium", cvss_only["severity"][0]["score"])
    with pytest.raises(ConfigError, match="does not exist"):
        AdvisoryDB.load([str(tmp_path / "nope")])
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    with pytest.raises(advisories.AdvisoryError, match="neither an OSV record nor Debian"):
        AdvisoryDB.load([str(tmp_path / "junk.json")])


def test_python_audit_goes_through_pip_audit_with_the_local_service() -> None:
    db = AdvisoryDB.load([str(OSV)])
    pkgs = [Package("python", "PyYAML", "5.3"), Package("python", "PyYAML", "5.4"), Package("python", "six", "1.16.0"),
            Package("python", "odd", "not-pep440")]
    out = advisories.audit_python(pkgs, db, "off")
    assert out.audited and out.against == (f"local OSV {OSV} (2 advisories)",)
    [f] = out.findings  # the GHSA record and its PYSEC twin are one finding
    assert (f.package, f.version, f.id, f.severity, f.fixed) == ("PyYAML", "5.3", "PYSEC-2021-142", "critical", ("5.4",))
    assert set(f.aliases) == {"CVE-2020-14343", "GHSA-8q59-q68h-6hv4"}
    assert any("not-pep440" in n for n in out.notes)
    nothing = advisories.audit_python(pkgs, AdvisoryDB(), "off")
    assert not nothing.audited and nothing.findings == () and "NOT audited" in nothing.notes[0]


def test_os_audit_by_source_package_and_what_is_not_audited() -> None:
    debs = parse_dpkg_status(DPKG)
    for source in (DEBIAN / "tracker-glibc.json", DEBIAN / "DSA-5514-1.json"):
        db = AdvisoryDB.load([str(source)])
        out = advisories.audit_os(debs, db, os_id="debian", os_version="12", codename="bookworm")
        assert out.audited and [(f.package, f.id, f.fixed) for f in out.findings] == [
            ("libc6", "CVE-2023-4911" if source.suffix == ".json" and "tracker" in source.name else "DSA-5514-1",
             ("2.36-9+deb12u3",))]
    fixed = [Package("deb", "libc6", "2.36-9+deb12u14", "amd64", "glibc", "2.36-9+deb12u14")]
    assert advisories.audit_os(fixed, db, os_id="debian", os_version="12").findings == ()
    plain = advisories.audit_os(debs, AdvisoryDB.load([str(OSV)]), os_id="debian", os_version="12")
    assert not plain.audited and "listed but NOT audited" in plain.notes[0]
    apk = advisories.audit_os(parse_apk_installed("P:musl\nV:1.2.4-r2\n"), db, os_id="alpine", os_version="3.19")
    assert not apk.audited and "only Debian (dpkg)" in apk.notes[0]


def test_sbom_is_valid_cyclonedx_with_the_findings() -> None:
    inv = Inventory((*parse_dpkg_status(DPKG), Package("python", "PyYAML", "5.3", license="MIT", path="/x/METADATA")),
                    "debian", "12", "Debian GNU/Linux 12 (bookworm)", "bookworm")
    db = AdvisoryDB.load([str(OSV)])
    findings = advisories.audit_python(inv.of("python"), db, "off").findings
    text = sbom.render(inv, findings, image_name="pkgs", key="ab" * 32, sha256="cd" * 32,
                       scanned=datetime(2026, 12, 2, tzinfo=timezone.utc))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert doc["metadata"]["component"]["type"] == "container"
    purls = {c["purl"] for c in doc["components"]}
    assert "pkg:pypi/pyyaml@5.3" in purls and "pkg:deb/debian/libc6@2.36-9%2Bdeb12u1?arch=amd64&distro=debian-12" in purls
    [vuln] = doc["vulnerabilities"]
    assert vuln["id"] == "PYSEC-2021-142" and vuln["ratings"][0]["severity"] == "critical"
    assert vuln["affects"][0]["ref"] == "pkg:pypi/pyyaml@5.3"


def test_fail_on_counts_findings_at_or_above_and_unrated_ones() -> None:
    def finding(sev: str) -> dict[str, object]:
        return {"severity": sev, "id": sev}

    rec = ScanRecord(key="ab" * 32, name="x", sha256="0", scanned="2026-12-02T00:00:00+00:00", os="", packages={},
                     counts={"critical": 0, "high": 1, "medium": 1, "low": 0, "unknown": 1},
                     audits=[{"group": "python", "packages": 2, "audited": False, "against": [], "notes": []}],
                     findings=[finding("high"), finding("medium"), finding("unknown")], notes=[], sbom="s")
    assert [f["id"] for f in rec.at_or_above("critical")] == ["unknown"]
    assert [f["id"] for f in rec.at_or_above("high")] == ["high", "unknown"]
    assert ScanRecord.from_json(rec.to_json(), "x") == rec
    assert rec.audited("python") is False and rec.audited("os") is None
    summary = {"scanned": rec.scanned, "counts": rec.counts, "python_audited": False, "os_audited": None}
    assert scan_cell(summary) == "2026-12-02 C0/H1/M1/L0/U1 !py"
    assert scan_cell(None) == "not scanned"


def test_a_crafted_dotdot_path_is_never_extracted_or_read() -> None:
    crafted = [ListedFile("x/site-packages/../../../etc/y.dist-info/METADATA", "file", 10),
               ListedFile("usr/lib/python3/dist-packages/./a-1.dist-info/METADATA", "file", 10)]
    assert _select(crafted)[0] == []


def test_scanning_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from hpcml.config import Settings
    from hpcml.errors import HpcmlError
    from hpcml.images import scan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "pip_audit" else real(name))
    with pytest.raises(HpcmlError, match=r"pip install 'hpcml\[scan\]'.*missing: pip_audit"):
        scan.Scanner(Settings(), None, None)  # type: ignore[arg-type]


def test_scan_runs_on_the_cluster_with_remote(tmp_path: Path) -> None:
    from hpcml.remote.commands import translate

    cmd = translate(("catalog", "scan"), {"refs": ("torch:v1",), "all_images": False, "stale": "7d", "fail_on": "high",
                                          "as_json": True}, tmp_path, lambda p: "/w", False)
    assert cmd.argv == ("catalog", "scan", "torch:v1", "--stale", "7d", "--fail-on", "high", "--json")
    cmd = translate(("build",), {"file": "wf.yaml", "images": (), "jobs": None, "scan": True}, tmp_path,
                    lambda p: "/w", False)
    assert cmd.argv == ("build", "/w/wf.yaml", "--scan")
