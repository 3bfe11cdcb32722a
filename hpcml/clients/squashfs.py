"""`unsquashfs` (squashfs-tools) behind one small class: list a SIF's root file system and
extract chosen files from it, without mounting or running the image.

A SIF keeps its root file system as a squashfs partition at some offset (`apptainer sif
list` gives it); `unsquashfs -o OFFSET` reads that partition in place.

Example:

    fs = Unsquashfs(LocalRunner())
    files = fs.list("/c/sif/ab/ab….sif", 36864)        # [ListedFile('var/lib/dpkg/status', 'file', 3021), …]
    fs.extract("/c/sif/ab/ab….sif", 36864, ["var/lib/dpkg/status"], Path("/tmp/x"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from hpcml.clients.runner import Runner
from hpcml.errors import CatalogError

Kind = Literal["file", "dir", "link", "other"]
_KINDS: dict[str, Kind] = {"-": "file", "d": "dir", "l": "link"}

#: `unsquashfs -lln` line: mode, uid/gid, size, date, time, squashfs-root/PATH[ -> TARGET].
#: Device nodes print "major, minor" instead of a size and are skipped (never wanted).
_LINE = re.compile(r"^(\S)\S{9} \S+\s+(\d+) \d{4}-\d\d-\d\d \d\d:\d\d squashfs-root(?:/(.*))?$")


@dataclass(frozen=True)
class ListedFile:
    """One entry of the image's file system: `path` is relative to its root (no leading /)."""

    path: str
    kind: Kind
    size: int


class Unsquashfs:
    """argv builders, a pure listing parser and two thin runners for one `unsquashfs`."""

    def __init__(self, runner: Runner, binary: str = "unsquashfs"):
        self.runner = runner
        self.binary = binary

    def list_argv(self, image: str, offset: int) -> list[str]:
        return [self.binary, "-o", str(offset), "-lln", image]

    def extract_argv(self, image: str, offset: int, dest: str, list_file: str) -> list[str]:
        """Extract exactly the paths named in `list_file` (one a line, no wildcards) into `dest`."""
        return [self.binary, "-o", str(offset), "-d", dest, "-f", "-no-xattrs", "-q", "-n",
                "-no-wildcards", "-ef", list_file, image]

    def list(self, image: str, offset: int) -> list[ListedFile]:
        done = self.runner.run(self.list_argv(image, offset), timeout=600)
        if done.returncode == 127:
            raise CatalogError(f"{self.binary} not found: scanning an image reads it with squashfs-tools "
                               "(the package that gives apptainer its mksquashfs); install it")
        if not done.ok:
            raise CatalogError(f"{self.binary} cannot read {image} at offset {offset}:\n{done.tail(5)}")
        return parse_listing(done.stdout)

    def extract(self, image: str, offset: int, paths: Iterable[str], dest: Path) -> None:
        """Extract `paths` (regular files of `list`) under `dest`, which must be private."""
        wanted = [p for p in paths if "\n" not in p]
        if not wanted:
            return
        list_file = dest.parent / f".{dest.name}.extract"
        list_file.write_text("".join(p + "\n" for p in wanted), encoding="utf-8", errors="surrogateescape")
        try:
            done = self.runner.run(self.extract_argv(image, offset, str(dest), str(list_file)), timeout=600)
        finally:
            list_file.unlink(missing_ok=True)
        # Exit 2 is "non-fatal errors" (e.g. ownership not settable as a plain user): the
        # files are there; whatever is missing is reported by the caller as unreadable.
        if done.returncode not in (0, 2):
            raise CatalogError(f"{self.binary} could not extract files from {image}:\n{done.tail(5)}")


def parse_listing(text: str) -> list[ListedFile]:
    """The entries of `unsquashfs -lln` output (the root itself and device nodes left out)."""
    out = []
    for line in text.splitlines():
        match = _LINE.fullmatch(line)
        if not match or match.group(3) is None:
            continue
        kind = _KINDS.get(match.group(1), "other")
        path = match.group(3)
        if kind == "link":
            path = path.split(" -> ", 1)[0]
        out.append(ListedFile(path, kind, int(match.group(2))))
    return out
