"""The tiny busybox sweep the benchmarks submit, and the settings they run it with.

A benchmark measures hpcml, not images: every sweep uses one `scratch` image holding
busybox (built once, ~0.3 s) and tasks that do next to nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hpcml import config
from hpcml.config import Settings

WORKFLOW = """\
hpcml: 1
name: {name}
images:
  bb:
    from: scratch
    shell: sh
    files: {{busybox: /bin/sh}}
defaults:
  image: bb
  resources: {{time: 5m, cpus: 1, mem: 50M}}
steps:
  sweep:
    matrix: {{{matrix}}}
{max_parallel}    run: {run}
"""


def values(n: int, start: int = 0) -> str:
    """`0, 1, …, n-1` for a matrix axis."""
    return ", ".join(map(str, range(start, start + n)))


def write_sweep(root: Path, name: str, matrix: str, run: str, max_parallel: int | None = None) -> Path:
    """Write `root/workflow.yaml` (and the busybox it copies in); return its path.

    `matrix` is the inside of the matrix mapping, e.g. ``"i: [0, 1, 2]"``.
    """
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "busybox")
    wf = root / "workflow.yaml"
    limit = f"    max_parallel: {max_parallel}\n" if max_parallel else ""
    wf.write_text(WORKFLOW.format(name=name, matrix=matrix, max_parallel=limit, run=run))
    return wf


def settings(root: Path) -> Settings:
    """The configuration (files, HPCML_* environment) with a catalog private to this run."""
    return config.load({"catalogs": str(root / "cat"), "cache_dir": str(root / "cache")})
