"""Pure parts of the local executor: job ids that name their owner, SLURM-like records."""

from __future__ import annotations

import os
import subprocess

from hpcml.executors.local.executor import _cpus, _record, owner_alive, owner_id
from hpcml.model import Resources
from hpcml.executors.local.scheduler import State, TaskResult


def test_job_ids_tell_whether_their_owner_lives() -> None:
    me = owner_id(os.getpid())
    assert owner_alive(me) and owner_alive(f"{me}.3") and owner_alive(f"{me}.3_5")
    done = subprocess.run(["true"], check=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert done.returncode == 0 and not owner_alive(f"{gone.pid}.1.1")
    pid, start = me.split(".")
    assert not owner_alive(f"{pid}.{int(start) + 1}.1")  # same pid, another process
    assert not owner_alive("1234") and not owner_alive("abc.1.1")


def test_records_read_like_slurm() -> None:
    up = _record(TaskResult("j", 0, State.UPSTREAM_FAILED, reason="upstream failed: a"))
    assert (up.state, up.reason) == ("CANCELLED", "DependencyNeverSatisfied")
    assert _record(TaskResult("j", 0, State.TIMEOUT, exit_code=143)).state == "TIMEOUT"
    assert _record(TaskResult("j", 0, State.FAILED, exit_code=3)).exit_code == 3
    assert _record(TaskResult("j", 0, State.REQUEUED)).state == "PENDING"


def test_a_per_gpu_task_holds_cpus_for_every_rank() -> None:
    # `cpus` is per process: a per-GPU step on 2 GPUs runs 2 processes.
    assert _cpus(Resources(gpus=2, cpus=3, launch="per_gpu")) == 6
    assert _cpus(Resources(gpus=2, cpus=3, launch="per_node")) == 3
    assert _cpus(Resources(gpus=2, cpus=3)) == 3
    assert _cpus(Resources(gpus=2, cpus_per_gpu=4, launch="per_gpu")) == 8
