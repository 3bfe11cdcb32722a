"""`hpcml doctor`: can Apptainer build and run images here, and how.

The facts are gathered once (`gather`), then judged by pure functions (`version_check`,
`build_check`, `run_check`), which the unit tests feed with facts of other machines.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hpcml.clients.apptainer import Apptainer, parse_version
from hpcml.clients.runner import Runner
from hpcml.config import Settings, root_without_privileged_apptainer
from hpcml.errors import HpcmlError
from hpcml.results import Check

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
MAX_USERNS = "/proc/sys/user/max_user_namespaces"
USERNS_CLONE = "/proc/sys/kernel/unprivileged_userns_clone"  # Debian/Ubuntu kernels only


@dataclass(frozen=True)
class Facts:
    """What decides how Apptainer builds and runs for this user on this machine."""

    binary: str
    version: str | None  # None: it does not run
    version_error: str
    suid_install: bool  # a setuid starter is installed and allowed
    userns: bool  # unprivileged user namespaces are enabled
    user: str
    uid: int
    subuid: bool  # /etc/subuid has a range for this user
    subgid: bool
    privileged_root: bool  # root with every capability: builds need no fakeroot
    squashfuse: bool  # SIFs can be mounted without privileges


def gather(settings: Settings, runner: Runner, subid_files: tuple[str, str] = (SUBUID, SUBGID)) -> Facts:
    """Ask apptainer (`--version`, `buildcfg`) and read the kernel and subuid settings."""
    app = Apptainer(runner, settings.apptainer)
    version, error = None, ""
    done = runner.run(app.version_argv(), timeout=60)
    try:
        version = parse_version(done.stdout) if done.ok else None
        error = "" if done.ok else done.tail(3)
    except HpcmlError as err:
        error = str(err)
    cfg = _buildcfg(runner, settings.apptainer) if version else {}
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Facts(
        binary=settings.apptainer,
        version=version,
        version_error=error,
        suid_install=cfg.get("APPTAINER_SUID_INSTALL") == "1" and _allow_setuid(cfg),
        userns=_userns_enabled(),
        user=user,
        uid=uid,
        subuid=has_subid(_read(subid_files[0]), user, uid),
        subgid=has_subid(_read(subid_files[1]), user, uid),
        privileged_root=uid == 0 and not root_without_privileged_apptainer(),
        squashfuse=bool(shutil.which("squashfuse") or shutil.which("squashfuse_ll")
                        or _bundled_squashfuse(cfg)),
    )


def has_subid(text: str, user: str, uid: int) -> bool:
    """Whether a /etc/subuid (or subgid) text grants `user` (by name or id) a range."""
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[2].isdigit() and int(fields[2]) > 0:
            return True
    return False


def version_check(f: Facts) -> Check:
    title = "Apptainer installed"
    if f.version is None:
        return Check("apptainer.version", title, "fail", f"`{f.binary} --version` failed: {f.version_error}",
                     "install Apptainer 1.1 or newer (https://apptainer.org/docs/admin/main/installation.html), "
                     "or set `apptainer` to its path (docs/configuration.md)")
    major_minor = tuple(int(x) for x in re.findall(r"\d+", f.version)[:2])
    if major_minor < (1, 1):
        return Check("apptainer.version", title, "warn",
                     f"{f.binary} {f.version}: older than 1.1, which brought fakeroot builds without "
                     "subuid entries and without the setuid starter", "ask for Apptainer 1.1 or newer")
    return Check("apptainer.version", title, "pass", f"{f.binary} {f.version}")


def build_check(f: Facts) -> Check:
    """How `apptainer build` can work for this user, judged from the facts."""
    title = "Apptainer can build images"
    subid_fix = (f"ask an administrator to run `apptainer config fakeroot --add {f.user}` (it adds "
                 f"{f.user} to /etc/subuid and /etc/subgid)")
    if f.version is None:
        return Check("apptainer.build", title, "skip", "apptainer does not run")
    if f.privileged_root:
        return Check("apptainer.build", title, "pass", "running as root with every capability: builds need no fakeroot")
    missing = [p for p, ok in ((SUBUID, f.subuid), (SUBGID, f.subgid)) if not ok]
    if f.userns and not missing:
        return Check("apptainer.build", title, "pass",
                     f"--fakeroot with user namespaces: {f.user} has entries in {SUBUID} and {SUBGID}")
    if f.userns:
        return Check("apptainer.build", title, "warn",
                     f"user namespaces are on, but {f.user} has no entry in {' or '.join(missing)}: --fakeroot "
                     "falls back to a root-mapped namespace with one id, so a %post that installs packages "
                     "(apt, dnf) or changes file owners fails", subid_fix)
    if f.suid_install and not missing:
        return Check("apptainer.build", title, "pass",
                     "user namespaces are off, but the setuid starter gives --fakeroot with the subuid entries")
    return Check("apptainer.build", title, "fail",
                 "user namespaces are off" + ("" if f.suid_install else " and Apptainer has no setuid starter")
                 + (f", and {f.user} has no entry in {' or '.join(missing)}" if missing else "")
                 + ": images cannot be built here",
                 "ask an administrator to enable unprivileged user namespaces (sysctl user.max_user_namespaces=15000) "
                 f"and to run `apptainer config fakeroot --add {f.user}`; meanwhile build on a machine "
                 "where this check passes and `hpcml catalog push` the image into a shared catalog")


def run_check(f: Facts) -> Check:
    """How a SIF is started: mounted (setuid starter or squashfuse) or unpacked each time."""
    title = "Apptainer can run images"
    if f.version is None:
        return Check("apptainer.run", title, "skip", "apptainer does not run")
    if f.privileged_root or f.suid_install:
        return Check("apptainer.run", title, "pass", "SIFs are mounted by the kernel (root or setuid starter)")
    if f.squashfuse:
        return Check("apptainer.run", title, "pass", "SIFs are mounted with squashfuse, without privileges")
    return Check("apptainer.run", title, "warn",
                 "no squashfuse: every container start unpacks its SIF into a temporary directory "
                 "(--unsquash), which is slow and needs as much tmp space as the image",
                 "ask an administrator to install squashfuse (apt install squashfuse / dnf install squashfuse)")


def _buildcfg(runner: Runner, binary: str) -> dict[str, str]:
    done = runner.run([binary, "buildcfg"], timeout=60)
    return dict(line.partition("=")[::2] for line in done.stdout.splitlines() if "=" in line) if done.ok else {}


def _allow_setuid(cfg: dict[str, str]) -> bool:
    conf = cfg.get("APPTAINER_CONF_FILE", "")
    for line in _read(conf).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "allow setuid":
            return value.strip() == "yes"
    return False


def _bundled_squashfuse(cfg: dict[str, str]) -> bool:
    libexec = cfg.get("LIBEXECDIR")
    return bool(libexec) and os.access(Path(libexec) / "apptainer" / "bin" / "squashfuse_ll", os.X_OK)


def _userns_enabled() -> bool:
    try:
        if int(_read(MAX_USERNS).strip() or "0") <= 0:
            return False
    except ValueError:
        return False
    return _read(USERNS_CLONE).strip() != "0"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
