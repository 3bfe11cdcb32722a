"""An image's manifest (meta/<key>.json in a catalog) and the names and keys a catalog accepts.

Kept apart from catalog.py so that what describes an image can be read (and tested)
without the directory layout that stores it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from hpcml.errors import CatalogError

SCHEMA_VERSION = 1

# fullmatch only: with match() and `$`, "abc…\n" (a trailing newline) would pass.
KEY_RE = re.compile(r"[0-9a-f]{16,64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")


def check_key(key: str) -> str:
    """A key is lower-case hex (it becomes a file name, so nothing else is accepted)."""
    if not KEY_RE.fullmatch(key):
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
    if what == "image name" and not _IMAGE_NAME.fullmatch(value):
        # Tags are used as `from: catalog:NAME:TAG`, where NAME is lowercase (spec.CATALOG_RE).
        raise CatalogError(
            f"invalid {what} {value!r}: use lowercase letters, digits, '_', '.', '-' (at most 128, not leading)"
        )
    if not _NAME.fullmatch(value):
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
    #: A deffile: image's build arguments, and whether its %setup/%pre ran on the build host
    #: (the lab's allow_setup). Written only when set, so other manifests keep their shape
    #: and an older hpcml still reads them.
    build_args: tuple[tuple[str, str], ...] = ()
    host_setup: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["inputs"] = [list(pair) for pair in self.inputs]
        data["build_args"] = dict(self.build_args)
        for key in ("build_args", "host_setup"):
            if not data[key]:
                del data[key]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str, where: str = "manifest") -> "Manifest":
        try:
            data = migrate(json.loads(text))
            data["inputs"] = tuple((str(a), str(b)) for a, b in data["inputs"])
            data["build_args"] = tuple(sorted((str(k), str(v)) for k, v in data.get("build_args", {}).items()))
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
    build_args: Sequence[tuple[str, str]] = (),
    host_setup: bool = False,
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
        build_args=tuple(build_args),
        host_setup=host_setup,
    )


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
