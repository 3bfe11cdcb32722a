"""`hpcml doctor`: the catalogs of the search path, the build's scratch space, the CA bundle.

Each catalog gets one check whose status is the worst of what was found (readable,
writable, fit for sharing, signing keys, free space), with every problem's fix.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

from hpcml.config import Settings
from hpcml.images.catalog import Catalog
from hpcml.results import Check

GIB = 1 << 30
#: Free space below which a check warns or fails: a CUDA + PyTorch image is 5-10 GiB, and
#: a build needs its unpacked root and the SIF at the same time.
WARN_FREE, FAIL_FREE = 20 * GIB, 2 * GIB
_ORDER = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


def catalog_checks(settings: Settings, umask: int | None = None) -> list[Check]:
    """One check per catalog of the search path; the first writable one receives new images."""
    umask = current_umask() if umask is None else umask
    writable = [c for c in settings.catalogs if Catalog(c).writable() is None]
    return [_catalog(Path(c), i, settings, writable, umask) for i, c in enumerate(settings.catalogs)]


def _catalog(root: Path, index: int, settings: Settings, writable: list[str], umask: int) -> Check:
    found: list[tuple[str, str, str]] = []  # (status, what, fix)
    title = f"catalog {root}"
    if not root.exists():
        found.append(("pass", "does not exist yet: created on the first build", ""))
    elif not os.access(root, os.R_OK | os.X_OK):
        found.append(("fail", "not readable by you", f"ask its owner to `chmod g+rx {root}` and add you to its group"))
    reason = Catalog(root).writable()
    if reason is None:
        target = " (new images go here)" if writable and writable[0] == str(root) else ""
        found.append(("pass", "writable" + target, ""))
    elif writable:
        found.append(("pass", f"read-only for you ({reason}): images are used from here, new ones go to {writable[0]}", ""))
    else:
        found.append(("fail", (f"not writable ({reason}), and no catalog of the search path is: no image can be built "
                      "or published"), (f"make {root} writable for you (`chmod g+w`, a read-write mount), or put a "
                      "writable directory first in `catalogs` (docs/configuration.md)")))
    if root.exists():
        found += _sharing(root, umask)
    found += _keys(settings, reason is None)
    found.append(_space(root, "free space"))
    worst = max((s for s, _, _ in found), key=_ORDER.__getitem__)
    detail = "; ".join(w for _, w, _ in found)
    fixes = "; ".join(f for s, _, f in found if f and s != "pass")
    return Check(f"catalog:{root}", title + (" (first)" if index == 0 else ""), worst, detail, fixes)


def _sharing(root: Path, umask: int) -> list[tuple[str, str, str]]:
    """A group-writable catalog is shared: setgid keeps its group, the umask its modes."""
    mode = root.stat().st_mode
    if not mode & (stat.S_IWGRP | stat.S_ISGID):
        return [("pass", "personal (not group-writable)", "")]
    out = []
    if not mode & stat.S_ISGID:
        out.append(("warn", "group-writable but not setgid: files would get each user's own group",
                    f"`chmod g+s {root}` (and its sub-directories) so everything keeps the lab's group"))
    if not mode & stat.S_IWGRP:
        out.append(("warn", "setgid but not group-writable: other members cannot publish",
                    f"`chmod g+w {root}` if the whole group should build into it"))
    if umask & 0o020:
        out.append(("warn", (f"your umask {umask:04o} takes away group write from files you make here by hand "
                    "(hpcml sets its own modes)"), "set `umask 0002` in your shell start-up file"))
    if not out:
        out.append(("pass", "shared: group-writable and setgid", ""))
    return out


def _keys(settings: Settings, publishing: bool) -> list[tuple[str, str, str]]:
    if not settings.require_signatures and not settings.signing_key:
        return []
    out = []
    if settings.require_signatures and not _readable(settings.verify_key):
        out.append(("fail", (f"signatures are required but verify_key ({settings.verify_key or 'unset'}) is not a "
                    "readable file: every image is refused"), "set verify_key to the lab's public key (PEM)"))
    if settings.signing_key and not _readable(settings.signing_key):
        out.append(("fail", f"signing_key {settings.signing_key} is not a readable file",
                    "point signing_key at the lab's private key (PEM), or unset it"))
    elif settings.require_signatures and not settings.signing_key and publishing:
        out.append(("warn", ("signatures are required and you have no signing_key: you can use signed images "
                    "but not build new ones"), "ask whoever holds the lab's key to build new images"))
    elif settings.signing_key:
        out.append(("pass", "images you publish are signed", ""))
    return out


def space_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """Apptainer's layer cache and the temporary directory a build unpacks its root into."""
    env = os.environ if env is None else env
    home = env.get("HOME") or str(Path.home())
    cache = env.get("APPTAINER_CACHEDIR") or str(Path(home) / ".apptainer" / "cache")
    tmp = env.get("APPTAINER_TMPDIR") or env.get("TMPDIR") or "/tmp"
    out = []
    for ident, title, path, var in (("space.cache", "Apptainer build cache", cache, "APPTAINER_CACHEDIR"),
                                    ("space.tmp", "build temporary directory", tmp, "APPTAINER_TMPDIR")):
        status, what, fix = _space(Path(path), path)
        if status != "pass":
            fix = f"point {var} at a file system with more room (a scratch directory), or free some"
        out.append(Check(ident, title, status, what, fix))
    return out


def ca_check(settings: Settings) -> Check:
    """The CA bundle bound into builds (pip, curl behind a TLS-intercepting proxy)."""
    title = "CA bundle for builds"
    bundle = settings.ca_bundle
    if not bundle:
        return Check("ca_bundle", title, "pass", "none: builds trust only the certificates their base image has")
    try:
        text = Path(bundle).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return Check("ca_bundle", title, "fail", f"{bundle}: {err.strerror or err}",
                     "set ca_bundle to your site's PEM bundle, or to `none` (docs/configuration.md)")
    count = text.count("-----BEGIN CERTIFICATE-----")
    if count == 0:
        return Check("ca_bundle", title, "fail", f"{bundle} holds no PEM certificate",
                     "set ca_bundle to your site's PEM bundle, or to `none` (docs/configuration.md)")
    return Check("ca_bundle", title, "pass", f"{bundle} ({count} certificates)")


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _space(path: Path, label: str) -> tuple[str, str, str]:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as err:
        return ("warn", f"{label}: cannot tell ({err.strerror or err})", "")
    what = f"{label} {free / GIB:.1f} GiB" if label == "free space" else f"{path}: {free / GIB:.1f} GiB free"
    if free < FAIL_FREE:
        return ("fail", what + f" (under {FAIL_FREE // GIB} GiB)", f"free space under {probe}")
    if free < WARN_FREE:
        return ("warn", what + f" (under {WARN_FREE // GIB} GiB: a GPU image may not fit)", f"free space under {probe}")
    return ("pass", what, "")


def _readable(path: str | None) -> bool:
    return bool(path) and os.access(path, os.R_OK) and os.path.isfile(path)  # type: ignore[arg-type]
