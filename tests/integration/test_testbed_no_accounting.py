"""The same cluster without accounting (slurmdbd unused): sacct is disabled, jobs still run.

Every test of this module gets the no-accounting cluster; pytest runs them as one group,
so the session switches mode (about 2 s) once, and back afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import SlurmCluster

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.parametrize("slurm_cluster", ["no-accounting"], indirect=True),
]


def test_sacct_is_disabled(slurm_cluster: SlurmCluster) -> None:
    assert not slurm_cluster.accounting
    done = slurm_cluster.run("sacct", "--parsable2", "-X")
    assert "accounting storage is disabled" in (done.stdout + done.stderr)


def test_jobs_run_and_scontrol_knows_their_end(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    ok = slurm_cluster.sbatch(f"--output={out}", "--wrap", "echo ran")
    failed = slurm_cluster.sbatch(f"--output={tmp_path / 'fail.out'}", "--wrap", "exit 3")
    assert slurm_cluster.wait(ok) == "COMPLETED"
    assert slurm_cluster.wait(failed) == "FAILED"
    assert out.read_text().strip() == "ran"
