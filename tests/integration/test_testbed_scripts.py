"""slurm/testbed/{up,status}: idempotent, machine-readable, clear about bad input.

No timing is asserted here; docs/testbed.md has the measured figures.
"""

from __future__ import annotations

import json
import shutil

import pytest

from testbed import TESTBED, SlurmCluster, Sshd, run_quietly

pytestmark = pytest.mark.testbed


def test_up_when_everything_runs_changes_nothing(slurm_cluster: SlurmCluster, sshd: Sshd) -> None:
    done = run_quietly([str(TESTBED / "up")], timeout=300)
    assert done.ok, done.tail()
    assert "restarting" not in done.stderr
    assert "installing" not in done.stderr


def test_status_json_says_what_runs(slurm_cluster: SlurmCluster, sshd: Sshd) -> None:
    done = run_quietly([str(TESTBED / "status"), "--json"], timeout=60)
    assert done.ok, done.stdout
    info = json.loads(done.stdout)
    assert info["all_up"] is True
    assert info["mode"] == "accounting"
    assert set(info["components"]) == {"apptainer", "munge", "mariadb", "slurmdbd", "slurmctld", "slurmd", "node", "sshd"}
    assert info["apptainer"]["build_flags"] == ["--fakeroot"]
    assert info["apptainer"]["exec_flags"] == ["--userns"]
    assert info["slurm"]["partitions"] == ["cpu", "gpu"]


def test_status_text_lists_each_component(slurm_cluster: SlurmCluster) -> None:
    done = run_quietly([str(TESTBED / "status")], timeout=60)
    assert done.ok
    assert "slurmctld  up" in done.stdout
    assert done.stdout.rstrip().endswith("all up")


def test_partitions_and_gpus_are_as_configured(slurm_cluster: SlurmCluster) -> None:
    done = slurm_cluster.run("sinfo", "--noheader", "--format=%P %G")
    assert done.ok, done.tail()
    lines = sorted(done.stdout.split("\n")[:-1])
    assert lines == ["cpu* gpu:2", "gpu gpu:2"]


def test_unknown_component_is_refused_with_the_allowed_ones() -> None:
    done = run_quietly([str(TESTBED / "up"), "--only", "slurmm"], timeout=60)
    assert done.returncode != 0
    assert "unknown component 'slurmm' (allowed: apptainer slurm sshd)" in done.stderr


@pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser to act as another user")
def test_up_refuses_non_root_plainly() -> None:
    done = run_quietly(["runuser", "-u", "nobody", "--", "bash", str(TESTBED / "up")], timeout=60)
    assert done.returncode != 0
    assert "must run as root" in done.stderr
