"""How long reading an image's package records takes: from the SIF with unsquashfs (what
`hpcml catalog scan` does) against starting the container with `apptainer exec` and reading
the same records inside it (the fallback it uses only for rpm), and the whole scan.

The image is a SIF path, or the quickstart's numpy image from a catalog (build it first:
`hpcml build workflows/quickstart.yaml`). Prints the median of --repeat runs of each.

    .venv/bin/python bench/scan_read.py [SIF] [--repeat 5] [--exec-flags=--userns]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hpcml import api
from hpcml.clients.runner import LocalRunner
from hpcml.images.inventory import read_inventory

#: What the exec way must do to see the same records: the dpkg database and every
#: site-/dist-packages metadata file, with the image's own shell and find.
EXEC_SCRIPT = ("cat /var/lib/dpkg/status >/dev/null; "
               "find / -xdev \\( -path '*-packages/*.dist-info/METADATA' -o -path '*-packages/*.egg-info' \\) "
               "-exec cat {} + >/dev/null 2>&1; true")


def timed(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sif", nargs="?", help="a SIF (default: the quickstart's numpy image from the catalogs)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--exec-flags", default="--userns", help="flags for apptainer exec (default: --userns)")
    args = parser.parse_args()
    sif = args.sif or api.catalog_path("numpy")
    size = Path(sif).stat().st_size
    inv = read_inventory(sif, LocalRunner())
    print(f"image: {sif} ({size / 2**20:.0f} MiB, {len(inv.packages)} packages)")
    read = timed(lambda: read_inventory(sif, LocalRunner()), args.repeat)
    print(f"unsquashfs (list + extract + parse):      {read:6.2f} s")
    argv = ["apptainer", "exec", *shlex.split(args.exec_flags), "--containall", sif, "/bin/sh", "-c", EXEC_SCRIPT]
    if subprocess.run(argv, capture_output=True, check=False).returncode == 0:
        run = timed(lambda: subprocess.run(argv, capture_output=True, check=True), args.repeat)
        print(f"apptainer exec (start + cat + find):      {run:6.2f} s")
    else:
        print("apptainer exec: the image cannot run the script (no /bin/sh or find)", file=sys.stderr)
    whole = timed(lambda: list(api.catalog_scan([sif.rsplit("/", 1)[1][:16]])), 1) if not args.sif else None
    if whole is not None:
        print(f"whole scan (read + audit + SBOM + store): {whole:6.2f} s")


if __name__ == "__main__":
    main()
