"""`hpcml catalog scan`, `build --scan` and `scan_on_publish` on real SIFs built by the real
Apptainer, read with the real unsquashfs, audited by the real pip-audit.

The small image pins a Python distribution with a published advisory: PyYAML 5.3, hit by
CVE-2020-14343 (PYSEC-2021-142 / GHSA-8q59-q68h-6hv4, fixed in 5.4), whose records are
committed in tests/data/osv; and a libc6 from glibc 2.36-9+deb12u1, before Debian's fix of
CVE-2023-4911 (tests/data/debian). Its package records are written into a `scratch` image
(the cheapest way to get site-packages and a dpkg database), which still exercises reading
them out of the SIF. The quickstart image (debootstrap bookworm + python3-numpy) is the real
thing, built once per machine in the testbed's shared catalog as test_onboarding does.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from hpcml import api, config
from hpcml.cli.app import main
from test_images import BUSYBOX, TESTBED, _testbed_apptainer, pytestmark  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
OSV = REPO / "tests" / "data" / "osv"
TRACKER = REPO / "tests" / "data" / "debian" / "tracker-glibc.json"
DSA = REPO / "tests" / "data" / "debian" / "DSA-5514-1.json"
#: The machine's catalog shared by the test sessions: the quickstart image is built there once.
SHARED_CATALOG = Path("/var/cache/hpcml-testbed/catalog")

DPKG_STATUS = """\
Package: busybox
Status: install ok installed
Architecture: amd64
Version: 1:1.35.0-4+b3

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u1
"""
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'


def pkgs_workflow(root: Path) -> Path:
    """A scratch image holding busybox, a dpkg database, os-release, PyYAML 5.3 (dist-info),
    six 1.16.0 (an egg-info file), and a hostile METADATA symlink to the host's /etc/passwd."""
    site = root / "site"
    (site / "PyYAML-5.3.dist-info").mkdir(parents=True)
    (site / "PyYAML-5.3.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3\n"
                                                            "License: MIT\n\nYAML parser and emitter for Python\n")
    (site / "six-1.16.0.egg-info").write_text("Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\n")
    (root / "dpkg-status").write_text(DPKG_STATUS)
    (root / "os-release").write_text(OS_RELEASE)
    shutil.copy(BUSYBOX, root / "busybox")
    post = textwrap.indent(textwrap.dedent("""\
        /bin/sh --install -s /bin
        mkdir -p /usr/lib/python3/dist-packages/evil-1.0.dist-info
        ln -s /etc/passwd /usr/lib/python3/dist-packages/evil-1.0.dist-info/METADATA
        """), "      ")
    path = root / "workflow.yaml"
    path.write_text(
        "hpcml: 1\nname: scantest\nimages:\n  pkgs:\n    from: scratch\n    shell: sh\n"
        "    files: {busybox: /bin/sh, dpkg-status: /var/lib/dpkg/status, os-release: /etc/os-release,"
        " site: /usr/lib/python3/dist-packages}\n"
        f"    post: |\n{post}"
        "steps:\n  hello:\n    image: pkgs\n    run: echo hi\n"
    )
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HPCML_CATALOGS": str(tmp_path / "cat"), "HPCML_CACHE_DIR": str(tmp_path / "cache"),
            "HPCML_BUILD_FLAGS": " ".join(TESTBED["build_flags"]), "HPCML_EXEC_FLAGS": " ".join(TESTBED["exec_flags"]),
            "HPCML_APPTAINER": str(TESTBED["binary"]), "HPCML_ADVISORIES": f"{OSV}:{TRACKER}",
            "HPCML_SITE_CONFIG": str(tmp_path / "none.toml"), "HPCML_CONFIG": str(tmp_path / "none.toml")}


def hpcml(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_build_scan_reports_the_vulnerable_pin_and_fail_on_exits_nonzero(tmp_path: Path, env: dict[str, str]) -> None:
    wf = pkgs_workflow(tmp_path / "wf")
    code, _, err = hpcml(env, "build", str(wf), "--scan")
    assert code == 0, err
    assert "image pkgs: scanned: 2 deb, 2 python; 1 critical, 1 unknown (sbom: " in err

    code, out, err = hpcml(env, "catalog", "scan", "pkgs", "--fail-on", "high")
    assert code == 1
    assert "CRITICAL PYSEC-2021-142 [CVE-2020-14343, GHSA-8q59-q68h-6hv4] PyYAML 5.3 (fixed in 5.4)" in out
    assert "UNKNOWN CVE-2023-4911 libc6 2.36-9+deb12u1 (fixed in 2.36-9+deb12u3)" in out
    assert "Python packages audited against: local OSV" in out and "OS packages audited against:" in out
    assert "2 finding(s) at high or above (or unrated): CVE-2023-4911, PYSEC-2021-142" in err

    code, out, _ = hpcml(env, "catalog", "list", "--json")
    [row] = json.loads(out)
    assert row["scan"]["counts"] == {"critical": 1, "high": 0, "medium": 0, "low": 0, "unknown": 1}
    assert row["scan"]["packages"] == {"deb": 2, "python": 2}
    assert row["scan"]["python_audited"] is True and row["scan"]["os_audited"] is True
    code, out, _ = hpcml({**env, "COLUMNS": "250"}, "catalog", "list")
    assert " C1/H0/M0/L0/U1 " in out

    code, out, _ = hpcml(env, "catalog", "show", "pkgs", "--json")
    scan = json.loads(out)["scan"]
    assert {f["id"] for f in scan["findings"]} == {"PYSEC-2021-142", "CVE-2023-4911"}
    sbom = Path(scan["sbom"])
    assert sbom.parent == tmp_path / "cat" / "meta" and sbom.name == f"{row['key']}.cdx.json"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.read_text()) is None
    doc = json.loads(sbom.read_text())
    purls = {c["purl"] for c in doc["components"]}
    assert {"pkg:pypi/pyyaml@5.3", "pkg:pypi/six@1.16.0"} <= purls
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u1?arch=amd64&distro=debian-12" in purls
    # the symlinked METADATA is neither followed into the host nor listed
    assert not any("evil" in p or "root" in p for p in purls)
    assert "root:x:0:0" not in sbom.read_text()
    code, out, _ = hpcml(env, "catalog", "show", "pkgs")
    assert "scanned:" in out and "PYSEC-2021-142" in out

    # PyPI advisories only: OS packages are listed, and said to be not audited
    code, out, err = hpcml({**env, "HPCML_ADVISORIES": str(OSV)}, "catalog", "scan", "pkgs", "--fail-on", "critical")
    assert code == 1 and "OS packages listed but NOT audited" in out and "PYSEC-2021-142" in err
    assert "C1/H0/M0/L0 !os " in hpcml({**env, "COLUMNS": "250"}, "catalog", "list")[1]


def test_an_unreachable_online_service_is_said_and_fails_the_gate(tmp_path: Path, env: dict[str, str]) -> None:
    wf = pkgs_workflow(tmp_path / "wf")
    assert hpcml(env, "build", str(wf))[0] == 0
    offline = {**env, "HPCML_ADVISORIES": "", "HPCML_ADVISORY_SERVICE": "auto"}  # auto: OSV online
    code, out, err = hpcml(offline, "catalog", "scan", "pkgs", "--fail-on", "critical")
    assert code == 1
    if "could not be reached" in out:  # these machines: api.osv.dev does not resolve
        assert "Python distributions listed but NOT audited" in out
        assert "(incomplete: some packages were NOT audited" in out
        assert "its Python distributions were not audited" in err
    else:  # a machine that reaches OSV finds the same flaw
        assert "PYSEC-2021-142" in out
    assert "OS packages listed but NOT audited" in out


def test_scan_on_publish_and_a_cron_scan_of_stale_images(tmp_path: Path, env: dict[str, str]) -> None:
    wf = pkgs_workflow(tmp_path / "wf")
    code, out, err = hpcml({**env, "HPCML_SCAN_ON_PUBLISH": "true"}, "build", str(wf))
    assert code == 0 and "image pkgs: scanned: 2 deb, 2 python" in err
    key = out.split("\t")[2].strip().rsplit("/", 1)[1].removesuffix(".sif")
    assert (tmp_path / "cat" / "meta" / f"{key}.scan.json").is_file()
    code, out, _ = hpcml(env, "catalog", "scan", "--all", "--stale", "7d")
    assert code == 0 and f"pkgs {key[:12]}: skipped, scanned " in out
    code, out, _ = hpcml(env, "catalog", "scan", "--all", "--stale", "0s", "--json")
    [outcome] = json.loads(out)
    assert outcome["skipped"] == "" and outcome["record"]["counts"]["critical"] == 1
    code, _, err = hpcml(env, "catalog", "scan")
    assert code == 2 and "or give --all" in err


@pytest.mark.slow
def test_the_quickstart_image_lists_its_packages_and_audits_its_python(tmp_path: Path, apptainer: object) -> None:
    """The quickstart's numpy image (built once per machine in the shared catalog)."""
    SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
    base = {"HOME": str(tmp_path), "HPCML_CACHE_DIR": str(tmp_path / "cache"), "HPCML_SITE_CONFIG": "/nonexistent",
            "HPCML_CONFIG": "/nonexistent", "HPCML_APPTAINER": str(TESTBED["binary"]),
            "HPCML_BUILD_FLAGS": " ".join(TESTBED["build_flags"]), "HPCML_EXEC_FLAGS": " ".join(TESTBED["exec_flags"])}
    build = config.load(env={**base, "HPCML_CATALOGS": str(SHARED_CATALOG / "cat")})
    report = api.build(REPO / "workflows" / "quickstart.yaml", settings=build)
    assert not report.failed, report.failure_message
    scan_env = {**base, "HPCML_CATALOGS": f"{tmp_path / 'cat'}:{SHARED_CATALOG / 'cat'}",
                "HPCML_ADVISORIES": f"{OSV}:{DSA}"}
    key = report.results["numpy"].key
    code, out, err = hpcml(scan_env, "catalog", "scan", key[:16], "--fail-on", "high")
    assert code == 0, out + err
    assert f"numpy {key[:12]}: scanned " in out
    assert "Python packages audited against: local OSV" in out and "OS packages audited against: " in out
    assert "NOT audited" not in out
    s = config.load(env=scan_env)
    rec = api.catalog_show(key[:16], s)["scan"]
    assert isinstance(rec, dict) and rec["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert rec["packages"]["deb"] > 50 and rec["packages"]["python"] >= 1
    sbom = json.loads(Path(rec["sbom"]).read_text())
    names = {(c["name"], c["properties"][0]["value"]) for c in sbom["components"]}
    assert {("numpy", "python"), ("python3-numpy", "deb"), ("libc6", "deb"), ("python3-minimal", "deb")} <= names
    # audited against DSA-5514-1 too: bookworm's libc6 is long past its fix
    assert not any(f["id"] == "DSA-5514-1" for f in rec["findings"])
    row = next(r for r in api.catalog_list(s) if r.key == key)
    assert row.scan is not None and row.scan["scanned"] == rec["scanned"] and row.scan["python_audited"] is True
