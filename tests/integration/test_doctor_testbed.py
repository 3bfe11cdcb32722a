"""`hpcml doctor` on the real testbed: healthy it passes; then, one fault at a time, it
names the problem and the fix and exits 1 (or warns):

- subuid/subgid entries removed: empty files bind-mounted over /etc/subuid and /etc/subgid
  in a private mount namespace (`unshare -m`), so only the doctor's process sees them;
- the catalog read-only: a read-only bind mount of a test-owned catalog, also private;
- a partition missing: a workflow whose step asks for one the cluster does not have;
- `--gpu`: a real job on the GPU partition starts the image with `--nv`; the testbed's
  GPUs are generic resources without a driver, so the check fails saying the image saw none.

Accounting off is in test_doctor_noacct.py (the no-accounting group).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_run_slurm import catalog, settings_env, write_workflow  # noqa: F401 - fixtures

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]


def doctor(env: dict[str, str], *args: str, namespace: str | None = None) -> tuple[int, dict[str, dict[str, str]]]:
    """Run `hpcml doctor --json` (the checkout's code); with `namespace`, first run those
    mount commands in a private mount namespace that only this doctor sees."""
    argv = [sys.executable, "-m", "hpcml.cli", "doctor", "--json", *args]
    if namespace is not None:
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{namespace} && exec "$@"', "doctor", *argv]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] == (done.returncode == 0)
    return done.returncode, {c["id"]: c for c in report["checks"]}


@pytest.fixture
def env(apptainer, catalog: Path, slurm_cluster, tmp_path: Path) -> dict[str, str]:  # noqa: ANN001
    return {**os.environ, "HOME": str(tmp_path), **settings_env(apptainer, catalog)}


def private_mounts() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("breaking the testbed in a private mount namespace needs root and unshare")


def test_healthy_testbed_passes(env: dict[str, str], catalog: Path) -> None:
    rc, checks = doctor(env)
    assert rc == 0
    assert {c["status"] for c in checks.values()} <= {"pass"}, checks
    for check_id in ("apptainer.version", "apptainer.build", "apptainer.run", "slurm.controller", "slurm.accounting",
                     "slurm.arrays", "slurm.partitions", "slurm.gpus", f"catalog:{catalog / 'cat'}", "space.cache",
                     "space.tmp", "ca_bundle"):
        assert check_id in checks
    assert "cpu*" in checks["slurm.partitions"]["detail"] and "gpu" in checks["slurm.partitions"]["detail"]
    text = subprocess.run([sys.executable, "-m", "hpcml.cli", "doctor"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert text.returncode == 0 and text.stdout.rstrip().endswith("12 passed, 0 warnings, 0 failed"), text.stdout
    assert "ok    SLURM reachable: " in text.stdout


def test_faults_are_named_with_their_fix(env: dict[str, str], catalog: Path, tmp_path: Path) -> None:
    private_mounts()
    empty = tmp_path / "empty-subid"
    empty.write_text("")
    rc, checks = doctor(env, namespace=f"mount --bind {empty} /etc/subuid && mount --bind {empty} /etc/subgid")
    build = checks["apptainer.build"]
    assert build["status"] == "warn" and "no entry in /etc/subuid or /etc/subgid" in build["detail"]
    assert "apptainer config fakeroot --add" in build["fix"]
    assert rc == 0  # a warning: builds still work, root-mapped

    cat = catalog / "cat"
    cat.mkdir(parents=True, exist_ok=True)
    rc, checks = doctor(env, namespace=f"mount --bind -o ro {cat} {cat}")
    check = checks[f"catalog:{cat}"]
    assert rc == 1 and check["status"] == "fail"
    assert "Read-only file system" in check["detail"] and "no image can be built" in check["detail"]
    assert f"make {cat} writable" in check["fix"]

    wf = write_workflow(tmp_path / "nopart", "nopart", "train:\n  resources: {partition: nosuch}\n  run: echo hi\n")
    rc, checks = doctor(env, str(wf))
    part = checks["slurm.partitions"]
    assert rc == 1 and part["status"] == "fail"
    assert "step train asks for partition 'nosuch', which this cluster does not have" in part["detail"]
    assert "set `partition:` of those steps (or build_partition) to one of: cpu, gpu, low, high, multi" in part["fix"]


def test_gpu_job_reports_what_the_image_saw(env: dict[str, str], busybox_sif: Path) -> None:
    rc, checks = doctor(env, "--gpu", "--image", str(busybox_sif))
    gpu = checks["gpu.job"]
    assert rc == 1 and gpu["status"] == "fail", gpu
    assert "on partition gpu" in gpu["detail"] and "the image saw no GPU" in gpu["detail"]
    assert "nvidia-smi" in gpu["detail"] and "--nv" in gpu["fix"]
