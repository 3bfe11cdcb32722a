"""The run directory on a full file system (issue 15, finding 5), for real: the workflow
directory is a small tmpfs mounted for the test and nearly filled with a filler file, so
`hpcml run` runs out of space after its first step was submitted (while writing the task
directories of the next). It must say so clearly (no traceback): which path, what was
submitted; the wrapper leaves no temporary files; the submitted task is not `lost` while
SLURM knows it; the never-submitted ones are `not submitted`. After the filler is removed,
a rerun completes, every task once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcml.run.journal import read_journal
from test_run_local import hpcml, hpcml_env, status, workflow  # noqa: F401 - fixtures
import testbed
from testbed import SlurmCluster

pytestmark = pytest.mark.testbed

SIZE_KB = 8192
FREE_KB = 256

STEPS = """\
prep:
  run: echo x >> {out}/ran
sweep:
  needs: [prep]
  matrix: {i: {range: [0, 60]}}
  run: echo x >> {out}/ran
"""


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs (root mounts it), unmounted after the test."""
    where = tmp_path / "small-fs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_KB}k", "hpcml-test-full", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        testbed.testbed_unavailable(f"cannot mount a tmpfs for the full-disk test: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(root: Path, leave_kb: int) -> Path:
    """A filler file leaving about `leave_kb` free on `root`'s file system."""
    import os

    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    filler = root / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kb * 1024))
    return filler


def wait_gone(cluster: SlurmCluster, name: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while any(line.split("|")[1] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")
              for line in cluster.run("squeue", "-h", "-r", "-t", "all", "--me", "-n", name, "-o", "%i|%T").stdout.split()):
        assert time.monotonic() < end, f"jobs {name} still queued"
        time.sleep(1)


def test_full_run_directory_then_rerun_after_freeing_space(
    small_tmpfs: Path, busybox_sif: Path, hpcml_env: dict[str, str], slurm_cluster: SlurmCluster,
) -> None:
    path = workflow(small_tmpfs / "wf", busybox_sif, "fulldisk", STEPS)
    # Build the image first (into the catalog, which is not on the small file system).
    hpcml("build", str(path), env=hpcml_env, timeout=300)
    filler = fill(small_tmpfs, FREE_KB)

    first = hpcml("run", str(path), "--executor", "slurm", "--detach", env=hpcml_env, check=False, timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    err = first.stderr.strip().splitlines()[-1]
    assert err.startswith("hpcml: error: no space left on the device of ") and str(small_tmpfs) in err
    assert "had submitted prep (job " in err and "nothing else was submitted" in err
    assert "rerun `hpcml run`: completed tasks are not rerun" in err

    run_id = sorted(p.name for p in (path.parent / ".hpcml" / "runs").iterdir() if not p.name.startswith("."))[0]
    wait_gone(slurm_cluster, f"hpcml.fulldisk.{run_id}.prep")
    tasks = path.parent / ".hpcml" / "tasks"
    assert [p.name for p in tasks.rglob("*") if ".tmp." in p.name] == []  # the wrapper left no temporary files
    journal = [r["event"] for r in read_journal(path.parent / ".hpcml" / "runs" / run_id / "journal.jsonl")]
    assert journal[:2] == ["run", "reconciled"] and "submitted" in journal  # whole records only
    states = status(path, hpcml_env)
    assert states["prep/0"] in ("completed", "failed"), states  # failed: it could not write on the full disk
    assert {s for k, s in states.items() if k.startswith("sweep/")} == {"not_submitted"}

    filler.unlink()  # free the space: a rerun completes what is left
    again = hpcml("run", str(path), "--executor", "slurm", "--watch", env=hpcml_env, timeout=600)
    assert "Traceback" not in again.stderr
    final = status(path, hpcml_env)
    assert set(final.values()) <= {"completed", "cached"} and len(final) == 61
    runs = [len((p / "out" / "ran").read_text().splitlines()) for p in (tasks / "sweep").iterdir()]
    assert runs == [1] * 60  # each sweep task ran once
