"""How long `hpcml run --detach` takes when its image must be built, with build_on = "slurm".

A workflow whose busybox image no catalog has (a fresh token in its %post each time) is
run through the CLI, detached, against a fresh catalog: the time printed is the wall time
of the whole command (Python start-up included), which the issue asks to be under 3 s
whatever must be built. The run is then cancelled (its build job too).

    .venv/bin/python bench/build_slurm.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from test_build_slurm import workflow  # noqa: E402 - the tests' tiny busybox workflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-build-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "HPCML_CATALOGS": str(root / "cat"), "HPCML_CACHE_DIR": str(root / "cache"),
               "HPCML_BUILD_ON": "slurm", "HPCML_BUILD_CPUS": "1", "HPCML_BUILD_MEM": "500M"}
        for i in range(args.repeat):
            wf = workflow(root / f"w{i}", f"benchbuild{i}", uuid.uuid4().hex)
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "hpcml.cli", "run", str(wf), "--executor", "slurm", "--detach"],
                                  cwd=REPO, env=env, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"hpcml run failed:\n{done.stdout}{done.stderr}")
            print(f"run {i}: `hpcml run --detach` with 1 image to build: {seconds:.2f} s")
            subprocess.run([sys.executable, "-m", "hpcml.cli", "cancel", "--workflow", str(wf)], cwd=REPO, env=env,
                           capture_output=True, check=False)


if __name__ == "__main__":
    main()
