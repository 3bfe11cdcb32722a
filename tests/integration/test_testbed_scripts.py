"""slurm/testbed/{up,status}: idempotent, machine-readable, clear about bad input.

No timing is asserted here; docs/testbed.md has the measured figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
    assert set(info["components"]) == {
        "apptainer", "munge", "mariadb", "slurmdbd", "slurmctld", "slurmd", "node", "hpcml-n1", "hpcml-n2", "sshd"
    }
    assert info["apptainer"]["build_flags"] == ["--fakeroot"]
    assert info["apptainer"]["exec_flags"] == ["--userns"]
    assert info["slurm"]["partitions"] == ["cpu", "gpu"]
    assert info["slurm"]["multi"] == {"partition": "multi", "nodes": ["hpcml-n1", "hpcml-n2"], "gpus_per_node": 2}


def test_status_text_lists_each_component(slurm_cluster: SlurmCluster) -> None:
    done = run_quietly([str(TESTBED / "status")], timeout=60)
    assert done.ok
    assert "slurmctld  up" in done.stdout
    assert "hpcml-n1   up" in done.stdout and "hpcml-n2   up" in done.stdout
    assert done.stdout.rstrip().endswith("all up")


def test_partitions_and_gpus_are_as_configured(slurm_cluster: SlurmCluster) -> None:
    done = slurm_cluster.run("sinfo", "--noheader", "--format=%P %G")
    assert done.ok, done.tail()
    lines = sorted(done.stdout.split("\n")[:-1])
    assert lines == ["cpu* gpu:2", "gpu gpu:2", "high gpu:2", "low gpu:2", "multi gpu:2"]
    nodes = slurm_cluster.run("sinfo", "--noheader", "--Node", "--format=%N %P %G")
    assert sorted(nodes.stdout.split("\n")[:-1]) == sorted([
        f"{slurm_cluster.node} cpu* gpu:2", f"{slurm_cluster.node} gpu gpu:2",
        f"{slurm_cluster.node} low gpu:2", f"{slurm_cluster.node} high gpu:2",
        "hpcml-n1 multi gpu:2", "hpcml-n2 multi gpu:2",
    ])


def test_multi_partition_runs_one_job_on_two_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The extra nodes are separate slurmd: a 2-node job's ranks land on both, each with
    the node's own two fake GPUs."""
    out = tmp_path / "job.out"
    job_id = slurm_cluster.sbatch(
        "--partition=multi", "--nodes=2", "--ntasks-per-node=1", "--gres=gpu:2", f"--output={out}",
        "--wrap", "srun --label printenv SLURMD_NODENAME CUDA_VISIBLE_DEVICES",
    )
    assert slurm_cluster.wait(job_id) == "COMPLETED", out.read_text()
    lines = sorted(out.read_text().splitlines())
    assert lines == ["0: 0,1", "0: hpcml-n1", "1: 0,1", "1: hpcml-n2"]


def test_unknown_component_is_refused_with_the_allowed_ones() -> None:
    done = run_quietly([str(TESTBED / "up"), "--only", "slurmm"], timeout=60)
    assert done.returncode != 0
    assert "unknown component 'slurmm' (allowed: apptainer slurm sshd)" in done.stderr


@pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser to act as another user")
def test_up_refuses_non_root_plainly() -> None:
    done = run_quietly(["runuser", "-u", "nobody", "--", "bash", str(TESTBED / "up")], timeout=60)
    assert done.returncode != 0
    assert "must run as root" in done.stderr
