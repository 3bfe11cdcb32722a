"""What software an image holds: OS packages (dpkg, apk, rpm) and Python distributions,
read from the SIF without running it.

How: `apptainer sif list` gives the offset of the SIF's root squashfs partition;
`unsquashfs -lln` lists its files (clients/squashfs.py); the package databases and every
`*.dist-info/METADATA` / `*.egg-info` under a `site-packages` or `dist-packages` directory
are extracted into a private temporary directory and parsed here. Nothing in the image is
executed, except for rpm: its database (BerkeleyDB or SQLite of rpm's own layout) is read by
running the image's own `rpm -qa` in the container (`apptainer exec --containall`), the
one fallback, said in the inventory's `notes`. See bench/scan_read.py for what each way costs.

A hostile image cannot make this read host files: only regular files (listed as such) are
extracted, into a fresh 0700 directory, and opened with O_NOFOLLOW; sizes are capped.

Example:

    inv = read_inventory("/c/sif/ab/ab….sif", LocalRunner())
    [p.purl for p in inv.packages][:2]   # ['pkg:deb/debian/base-files@12.4?arch=amd64&distro=debian-12', …]
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Literal, Sequence

from hpcml.clients.apptainer import Apptainer
from hpcml.clients.runner import Runner
from hpcml.clients.squashfs import ListedFile, Unsquashfs
from hpcml.errors import CatalogError

Ecosystem = Literal["deb", "apk", "rpm", "python"]

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"  # distroless images: one file per package
APK_INSTALLED = "lib/apk/db/installed"
RPM_DBS = ("var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages", "usr/lib/sysimage/rpm/rpmdb.sqlite",
           "usr/lib/sysimage/rpm/Packages")
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_DIST = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.(?:dist-info/METADATA|egg-info(?:/PKG-INFO)?)$")

MAX_DB_BYTES = 256 << 20  # a package database larger than this is refused
MAX_META_BYTES = 4 << 20  # a Python distribution's metadata file
MAX_DISTS = 20000
RPM_QF = "%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\t%{LICENSE}\\n"


@dataclass(frozen=True)
class Package:
    """One installed package. `source` is the Debian source package (advisories name it)."""

    ecosystem: Ecosystem
    name: str
    version: str
    arch: str = ""
    source: str = ""
    source_version: str = ""
    license: str = ""
    path: str = ""  # where its record is in the image (Python: the metadata file)

    def purl(self, distro: str = "") -> str:
        """Its Package URL (https://github.com/package-url/purl-spec), by packageurl-python."""
        from packageurl import PackageURL  # the scan extra

        if self.ecosystem == "python":
            return PackageURL(type="pypi", name=canonical_name(self.name), version=self.version).to_string()
        quals = {"arch": self.arch} if self.arch else {}
        if distro:
            quals["distro"] = distro
        namespace = distro.split("-")[0] if distro else {"deb": "debian", "apk": "alpine", "rpm": "redhat"}[self.ecosystem]
        return PackageURL(type=self.ecosystem, namespace=namespace, name=self.name, version=self.version,
                          qualifiers=quals).to_string()


@dataclass(frozen=True)
class Inventory:
    """Everything found in one image. `os_id`/`os_version` come from its os-release."""

    packages: tuple[Package, ...]
    os_id: str = ""
    os_version: str = ""
    os_name: str = ""
    os_codename: str = ""
    method: str = "unsquashfs"
    notes: tuple[str, ...] = field(default=())

    @property
    def distro(self) -> str:
        """'debian-12' style, for purls; '' when unknown."""
        return f"{self.os_id}-{self.os_version}" if self.os_id and self.os_version else self.os_id

    def of(self, *ecosystems: Ecosystem) -> list[Package]:
        return [p for p in self.packages if p.ecosystem in ecosystems]


def canonical_name(name: str) -> str:
    """PEP 503's normalised name (as PyPI and its advisories use)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---- reading a SIF ------------------------------------------------------------------


def read_inventory(sif: str, runner: Runner, *, apptainer: str = "apptainer",
                   exec_flags: Sequence[str] = (), unsquashfs: str = "unsquashfs") -> Inventory:
    """List the packages of the image `sif` (see the module doc). Raises CatalogError."""
    app = Apptainer(runner, apptainer)
    fs_part = next((p for p in app.sif_partitions(sif) if p.primary_squashfs), None)
    if fs_part is None:
        raise CatalogError(f"{sif} has no squashfs root file system partition (apptainer sif list); "
                           "only SIF images built by apptainer can be scanned")
    fs = Unsquashfs(runner, unsquashfs)
    listing = fs.list(sif, fs_part.start)
    wanted, notes = _select(listing)
    with tempfile.TemporaryDirectory(prefix="hpcml-scan-") as tmp:
        dest = Path(tmp) / "root"  # unsquashfs creates it; tmp is 0700 (mkdtemp)
        fs.extract(sif, fs_part.start, wanted, dest)
        files = {rel: _read_private(dest, rel) for rel in wanted}
    packages: list[Package] = []
    os_release = next((files[p] for p in OS_RELEASE if files.get(p) is not None), None)
    info = parse_os_release(os_release or "")
    if files.get(DPKG_STATUS) is not None:
        packages += parse_dpkg_status(files[DPKG_STATUS] or "")
    for rel in sorted(r for r in files if r.startswith(DPKG_STATUS_D)):
        packages += parse_dpkg_status(files[rel] or "")
    if files.get(APK_INSTALLED) is not None:
        packages += parse_apk_installed(files[APK_INSTALLED] or "")
    method = "unsquashfs"
    if any(f.path in RPM_DBS for f in listing):
        rpms, note = _rpm_by_exec(app, sif, exec_flags)
        packages += rpms
        notes.append(note)
        method = "unsquashfs + apptainer exec (rpm)"
    for rel in sorted(r for r in files if _DIST.search(r)):
        dist = parse_dist_metadata(files[rel] or "", rel)
        if dist is not None:
            packages.append(dist)
        else:
            notes.append(f"{rel}: no Name/Version in the metadata, left out")
    for rel, text in files.items():
        if text is None:
            notes.append(f"/{rel}: could not be read from the image (not a regular file after extraction)")
    return Inventory(tuple(_unique(packages)), info.get("ID", ""), info.get("VERSION_ID", ""),
                     info.get("PRETTY_NAME", ""), info.get("VERSION_CODENAME", ""), method, tuple(notes))


def _select(listing: list[ListedFile]) -> tuple[list[str], list[str]]:
    """The regular files to extract, and notes about what was left out and why."""
    wanted: list[str] = []
    notes: list[str] = []
    dists = 0
    for f in listing:
        if f.kind != "file" or any(part in ("", ".", "..") for part in f.path.split("/")):
            continue  # a crafted file system's '..' must not lead the reading out of the extraction
        is_db = f.path in (DPKG_STATUS, APK_INSTALLED) or f.path.startswith(DPKG_STATUS_D) or f.path in OS_RELEASE
        is_dist = bool(_DIST.search(f.path))
        if not (is_db or is_dist):
            continue
        limit = MAX_DB_BYTES if is_db else MAX_META_BYTES
        if f.size > limit:
            notes.append(f"/{f.path}: {f.size} bytes, over the {limit} read; left out")
            continue
        if is_dist:
            dists += 1
            if dists > MAX_DISTS:
                notes.append(f"more than {MAX_DISTS} Python distributions; the rest left out")
                continue
        wanted.append(f.path)
    return wanted, notes


def _read_private(root: Path, rel: str) -> str | None:
    """The text of root/rel if it is a regular file (no symlink at its end), else None."""
    try:
        fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            data = fh.read(MAX_DB_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    return data.decode("utf-8", errors="replace")


def _rpm_by_exec(app: Apptainer, sif: str, exec_flags: Sequence[str]) -> tuple[list[Package], str]:
    argv = app.exec_argv(sif, ["rpm", "-qa", "--qf", RPM_QF],
                         flags=[*exec_flags, "--containall", "--no-home"])
    done = app.runner.run(argv, timeout=600)
    if not done.ok:
        return [], f"an rpm database is in the image but `rpm -qa` in it failed (exit {done.returncode}): {done.tail(2)}"
    return parse_rpm_qa(done.stdout), "rpm packages read by running the image's rpm -qa (apptainer exec --containall)"


def _unique(packages: list[Package]) -> list[Package]:
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for p in packages:
        ident = (p.ecosystem, p.name if p.ecosystem != "python" else canonical_name(p.name), p.version, p.path)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out


# ---- pure parsers -------------------------------------------------------------------


def _paragraphs(text: str) -> list[dict[str, str]]:
    """RFC 822-style stanzas (dpkg status, apk's `installed` is one-letter keys of this form)."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            current.setdefault(last, value.strip())
    if current:
        out.append(current)
    return out


def parse_dpkg_status(text: str) -> list[Package]:
    """Installed packages of a dpkg status file (`Status: install ok installed`)."""
    out = []
    for para in _paragraphs(text):
        if "Package" not in para or "Version" not in para:
            continue
        if para.get("Status", "install ok installed").split()[-1:] != ["installed"]:
            continue
        source, source_version = para["Package"], para["Version"]
        if "Source" in para:
            match = re.match(r"^(\S+)(?:\s+\((.+)\))?$", para["Source"])
            if match:
                source = match.group(1)
                source_version = match.group(2) or para["Version"]
        out.append(Package("deb", para["Package"], para["Version"], para.get("Architecture", ""),
                           source, source_version, path="/" + DPKG_STATUS))
    return out


def parse_apk_installed(text: str) -> list[Package]:
    """Packages of Alpine's /lib/apk/db/installed (P: name, V: version, A: arch, o: origin)."""
    out = []
    for para in _paragraphs(text):
        if "P" in para and "V" in para:
            out.append(Package("apk", para["P"], para["V"], para.get("A", ""), para.get("o", para["P"]),
                               para["V"], para.get("L", ""), "/" + APK_INSTALLED))
    return out


def parse_rpm_qa(text: str) -> list[Package]:
    """Lines of `rpm -qa --qf RPM_QF` (an epoch of `(none)` is dropped)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 5:
            continue
        name, evr, arch, srpm, lic = parts
        epoch, _, vr = evr.partition(":")
        version = vr if epoch in ("(none)", "", "0") else evr
        source = re.sub(r"-[^-]+-[^-]+\.src\.rpm$", "", srpm) if srpm != "(none)" else name
        out.append(Package("rpm", name, version, arch, source, version, lic))
    return out


def parse_dist_metadata(text: str, path: str = "") -> Package | None:
    """A Python distribution from its METADATA / PKG-INFO headers; None without Name/Version."""
    headers = HeaderParser().parsestr(text, headersonly=True)
    name, version = (headers.get("Name") or "").strip(), (headers.get("Version") or "").strip()
    if not name or not version:
        return None
    lic = (headers.get("License-Expression") or headers.get("License") or "").strip()
    if "\n" in lic or len(lic) > 200:
        lic = ""  # the whole licence text pasted in: not an identifier
    return Package("python", name, version, license=lic, path="/" + path)


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of os-release (values may be shell-quoted)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key.strip()):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        out[key.strip()] = words[0] if words else ""
    return out


__all__ = ["Inventory", "Package", "canonical_name", "parse_apk_installed", "parse_dist_metadata",
           "parse_dpkg_status", "parse_os_release", "parse_rpm_qa", "read_inventory"]
