"""Smoke tests of the testbed itself, on the real daemons (issue 3's acceptance list).

The time-limit test waits about 75 s (SLURM enforces limits on a ~30 s sweep, plus
KillWait=30); it is the only slow one.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import paramiko
import pytest

from testbed import Apptainer, SlurmCluster, Sshd, run_quietly

pytestmark = pytest.mark.testbed


def test_apptainer_builds_a_definition_file(apptainer: Apptainer, busybox_sif: Path, tmp_path: Path) -> None:
    definition = tmp_path / "smoke.def"
    definition.write_text(
        f"Bootstrap: localimage\nFrom: {busybox_sif}\n\n%post\n    echo built-by-apptainer > /etc/smoke\n",
        encoding="utf-8",
    )
    sif = tmp_path / "smoke.sif"
    apptainer.build(sif, definition)

    done = run_quietly(apptainer.exec_argv(sif, "cat", "/etc/smoke"), timeout=120)
    assert done.ok, done.tail()
    assert done.stdout.strip() == "built-by-apptainer"


@pytest.fixture(scope="module")
def gpu_job(
    slurm_cluster: SlurmCluster, apptainer: Apptainer, busybox_sif: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """One `--gres=gpu:1` job that runs the busybox SIF with --nv; (job id, output file)."""
    out = tmp_path_factory.mktemp("gpu-job") / "job.out"
    inner = apptainer.exec_argv(busybox_sif, "sh", "-c", 'echo "container CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"', nv=True)
    script = f"#!/bin/bash\necho \"host CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"\n{shlex.join(inner)}\n"
    job_id = slurm_cluster.sbatch("--partition=gpu", "--gres=gpu:1", "--job-name=smoke-gpu", f"--output={out}", script=script)
    return job_id, out


def test_gpu_job_runs_sif_with_nv_and_sees_cuda_visible_devices(slurm_cluster: SlurmCluster, gpu_job) -> None:
    job_id, out = gpu_job
    assert slurm_cluster.wait(job_id) == "COMPLETED", out.read_text() if out.exists() else "no output"
    lines = out.read_text().splitlines()
    assert "host CUDA_VISIBLE_DEVICES=0" in lines
    assert "container CUDA_VISIBLE_DEVICES=0" in lines


def test_sacct_reports_gpu_job_completed_with_gres_tres(slurm_cluster: SlurmCluster, gpu_job) -> None:
    assert slurm_cluster.accounting
    job_id, _ = gpu_job
    slurm_cluster.wait(job_id)
    row = slurm_cluster.wait_sacct(job_id)
    assert row["State"] == "COMPLETED"
    assert row["ExitCode"] == "0:0"
    assert "gres/gpu=1" in row["AllocTRES"].split(",")


@pytest.mark.slow
def test_time_limit_kill_shows_timeout(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job_id = slurm_cluster.sbatch(
        "--time=1", "--job-name=smoke-timeout", f"--output={tmp_path / 'job.out'}", "--wrap", "sleep 600"
    )
    assert slurm_cluster.wait(job_id, timeout=300) == "TIMEOUT"
    assert slurm_cluster.wait_sacct(job_id)["State"] == "TIMEOUT"


def connect(sshd: Sshd, known_hosts: Path) -> paramiko.SSHClient:
    """A paramiko client that trusts only `known_hosts` (RejectPolicy: unknown keys refused)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host, port=sshd.port, username=sshd.username, key_filename=str(sshd.key_path),
        allow_agent=False, look_for_keys=False, timeout=30,
    )
    return client


def test_ssh_with_strict_host_keys_runs_squeue(sshd: Sshd, slurm_cluster: SlurmCluster) -> None:
    client = connect(sshd, sshd.known_hosts)
    try:
        _, stdout, stderr = client.exec_command("squeue --noheader --format=%i")
        status = stdout.channel.recv_exit_status()
        assert status == 0, stderr.read().decode()
    finally:
        client.close()


def test_ssh_refuses_a_wrong_known_hosts_entry(sshd: Sshd, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    other_key = paramiko.Ed25519Key.from_private_key_file(str(sshd.key_path))  # a real key, not the host's
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {other_key.get_name()} {other_key.get_base64()}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sshd, wrong)


def test_ssh_refuses_an_unknown_host(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(sshd, empty)
