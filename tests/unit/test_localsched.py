"""The local scheduler core on real bash scripts: slots, dependencies, limits, requeue, cancel.

These start real processes (short ones); no timing is asserted, only orderings and states
recorded by the scheduler's events and by the scripts themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from hpcml.errors import SubmitError
from hpcml.executors.local.procs import processes_with_env
from hpcml.executors.local.scheduler import (
    LocalJob,
    LocalScheduler,
    State,
    TaskResult,
    expand_output,
    signal_number,
)
from hpcml.executors.local.resources import Capacity


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.sh"
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    return str(path)


class Recorder:
    """Listener that keeps every event and checks device exclusivity as it goes."""

    def __init__(self) -> None:
        self.events: list[TaskResult] = []
        self.held: dict[tuple[str, int], tuple[str, ...]] = {}
        self.max_running = 0

    def __call__(self, result: TaskResult) -> None:
        self.events.append(result)
        key = (result.job_id, result.index)
        if result.state is State.RUNNING:
            in_use = {g for gpus in self.held.values() for g in gpus}
            assert not in_use & set(result.gpus), f"{key} got {result.gpus} while {self.held} held"
            self.held[key] = result.gpus
            self.max_running = max(self.max_running, len(self.held))
        else:
            self.held.pop(key, None)

    def order(self, state: State) -> list[tuple[str, int]]:
        return [(e.job_id, e.index) for e in self.events if e.state is state]


def sched(rec: Recorder | None = None, cpus: int = 4, gpus: tuple[str, ...] = (), **kw: object) -> LocalScheduler:
    return LocalScheduler(
        Capacity(cpus=cpus, mem_mb=8192, gpus=gpus), listener=rec, kill_wait_s=0.5, **kw  # type: ignore[arg-type]
    )


def test_plain_job_completes_with_slurm_like_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    s = sched()
    s.submit(
        LocalJob(
            "7", script(tmp_path, "a", f'env > {out}\n'), name="hpcml.wf.run.prep",
            env={"EXTRA": "yes"}, cpus=2,
        )
    )
    results = s.run(poll_s=0.02)
    assert results[("7", 0)].state is State.COMPLETED
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["HPCML_EXECUTOR"] == "local"
    assert env["SLURM_JOB_ID"] == "7"
    assert env["SLURM_JOB_NAME"] == "hpcml.wf.run.prep"
    assert env["SLURM_CPUS_PER_TASK"] == "2"
    assert env["SLURM_RESTART_COUNT"] == "0"
    assert env["EXTRA"] == "yes"
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU task sees no GPU
    assert "SLURM_ARRAY_TASK_ID" not in env


def test_array_tasks_get_their_index_and_output_file(tmp_path: Path) -> None:
    s = sched()
    s.submit(
        LocalJob(
            "9", script(tmp_path, "a", 'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"\n'),
            indices=(0, 2, 5), output=str(tmp_path / "out-%A_%a.log"),
        )
    )
    results = s.run(poll_s=0.02)
    assert {k: r.state for k, r in results.items()} == {("9", i): State.COMPLETED for i in (0, 2, 5)}
    assert (tmp_path / "out-9_5.log").read_text() == "task 5 of 9\n"


def test_failure_cancels_dependents_and_afterok_orders(tmp_path: Path) -> None:
    rec = Recorder()
    s = sched(rec)
    s.submit(LocalJob("a", script(tmp_path, "a", f"sleep 0.2; touch {tmp_path}/a.done\n")))
    s.submit(LocalJob("b", script(tmp_path, "b", f"test -e {tmp_path}/a.done\n"), depends_on=("a",)))
    s.submit(LocalJob("c", script(tmp_path, "c", "exit 3\n"), depends_on=("b",)))
    s.submit(LocalJob("d", script(tmp_path, "d", f"touch {tmp_path}/d.ran\n"), depends_on=("c",), indices=(0, 1)))
    s.submit(LocalJob("e", script(tmp_path, "e", "true\n"), depends_on=("d_1", "a")))
    results = s.run(poll_s=0.02)
    assert results[("b", 0)].state is State.COMPLETED  # b saw a's output: it waited for a
    assert results[("c", 0)].state is State.FAILED and results[("c", 0)].exit_code == 3
    for key in (("d", 0), ("d", 1), ("e", 0)):
        assert results[key].state is State.UPSTREAM_FAILED
    assert "c" in results[("d", 0)].reason
    assert not (tmp_path / "d.ran").exists()


def test_max_parallel_throttles_an_array(tmp_path: Path) -> None:
    rec = Recorder()
    s = sched(rec, cpus=8)
    s.submit(LocalJob("m", script(tmp_path, "m", "sleep 0.2\n"), indices=tuple(range(5)), max_parallel=2))
    results = s.run(poll_s=0.02)
    assert all(r.state is State.COMPLETED for r in results.values())
    assert rec.max_running == 2


def test_cpu_slots_limit_concurrency(tmp_path: Path) -> None:
    rec = Recorder()
    s = sched(rec, cpus=3)
    s.submit(LocalJob("c", script(tmp_path, "c", "sleep 0.2\n"), indices=(0, 1, 2, 3), cpus=2))
    s.run(poll_s=0.02)
    assert rec.max_running == 1


def test_gpu_tasks_never_share_a_device_and_the_third_waits(tmp_path: Path) -> None:
    rec = Recorder()  # asserts exclusivity on every start
    s = sched(rec, gpus=("0", "1"))
    body = f'echo "$CUDA_VISIBLE_DEVICES" > {tmp_path}/dev.$SLURM_ARRAY_TASK_ID; sleep 0.3\n'
    s.submit(LocalJob("g", script(tmp_path, "g", body), indices=(0, 1, 2), gpus=1))
    results = s.run(poll_s=0.02)
    assert all(r.state is State.COMPLETED for r in results.values())
    devices = [(tmp_path / f"dev.{i}").read_text().strip() for i in range(3)]
    assert set(devices[:2]) == {"0", "1"} and devices[2] in {"0", "1"}
    assert rec.max_running == 2
    starts = rec.order(State.RUNNING)
    first_end = min(rec.events.index(e) for e in rec.events if e.state is State.COMPLETED)
    third_start = rec.events.index(next(e for e in rec.events if e.state is State.RUNNING and e.index == 2))
    assert starts[:2] == [("g", 0), ("g", 1)] and third_start > first_end


def test_request_larger_than_machine_is_refused_before_anything_runs(tmp_path: Path) -> None:
    s = sched(gpus=("0",))
    s.submit(LocalJob("ok", script(tmp_path, "ok", f"touch {tmp_path}/ran\n")))
    with pytest.raises(SubmitError, match=r"GPUs 2 > 1.*HPCML_LOCAL_GPUS"):
        s.submit(LocalJob("big", script(tmp_path, "big", "true\n"), gpus=2))
    with pytest.raises(SubmitError, match="CPUs 64 > 4"):
        s.check(LocalJob("many", "x", cpus=64))
    with pytest.raises(SubmitError, match="unknown signal"):
        s.check(LocalJob("sig", "x", signal="NOPE"))
    with pytest.raises(SubmitError, match="unknown job"):
        s.check(LocalJob("dep", "x", depends_on=("ghost",)))
    assert not (tmp_path / "ran").exists()


def test_time_limit_ends_task_as_timeout_even_if_it_ignores_sigterm(tmp_path: Path) -> None:
    s = sched()
    s.submit(LocalJob("t", script(tmp_path, "t", "sleep 30\n"), time_s=0.3))
    s.submit(LocalJob("stubborn", script(tmp_path, "s", "trap '' TERM\nwhile true; do sleep 0.1; done\n"), time_s=0.3))
    results = s.run(poll_s=0.02)
    assert results[("t", 0)].state is State.TIMEOUT
    assert results[("stubborn", 0)].state is State.TIMEOUT
    assert results[("stubborn", 0)].exit_code == 128 + signal.SIGKILL


WRAPPER_LIKE = """\
# What the job wrapper does under HPCML_EXECUTOR=local: on the checkpoint signal, ask
# to be requeued; the work resumes from its checkpoint the next time.
taskdir={taskdir}
rm -f "$taskdir/requeue"
trap 'touch "$taskdir/requeue"; exit 75' USR2
echo "attempt $SLURM_RESTART_COUNT" >> "$taskdir/attempts"
if [ -e "$taskdir/checkpoint" ]; then exit 0; fi
touch "$taskdir/checkpoint"
sleep 30 & wait
"""


def test_checkpoint_signal_requeues_and_the_task_completes(tmp_path: Path) -> None:
    taskdir = tmp_path / "task"
    taskdir.mkdir()
    rec = Recorder()
    s = sched(rec)
    body = WRAPPER_LIKE.format(taskdir=taskdir)
    s.submit(LocalJob("ck", script(tmp_path, "ck", body), time_s=0.6, signal="USR2", grace_s=0.3,
                      task_dirs={0: str(taskdir)}))
    results = s.run(poll_s=0.02)
    assert results[("ck", 0)].state is State.COMPLETED
    assert results[("ck", 0)].restarts == 1
    assert (taskdir / "attempts").read_text() == "attempt 0\nattempt 1\n"
    assert State.REQUEUED in [e.state for e in rec.events]
    assert not (taskdir / "requeue").exists()  # the restarted script removed it


def test_status_75_without_marker_is_a_failure(tmp_path: Path) -> None:
    s = sched()
    s.submit(LocalJob("x", script(tmp_path, "x", "exit 75\n"), task_dirs={0: str(tmp_path)}))
    assert s.run(poll_s=0.02)[("x", 0)].state is State.FAILED


def test_cancel_all_leaves_no_process_behind(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    s = sched(base_env={**os.environ, "TEST_TAG": tag})
    # A child in its own process group (set -m) but the same session must also be ended.
    body = "set -m\nsleep 60 &\nsleep 60 &\ntrap '' TERM\nwait\n"
    s.submit(LocalJob("r", script(tmp_path, "r", body), indices=(0, 1)))
    s.submit(LocalJob("later", script(tmp_path, "l", "true\n"), depends_on=("r",)))
    while len(processes_with_env("TEST_TAG", tag)) < 6:
        s.tick()
        time.sleep(0.02)
    s.cancel_all()
    assert processes_with_env("TEST_TAG", tag) == []
    states = {k: r.state for k, r in s.states().items()}
    assert states == {("r", 0): State.CANCELLED, ("r", 1): State.CANCELLED, ("later", 0): State.CANCELLED}


def test_ctrl_c_in_run_cancels_every_task_and_leaves_no_orphans(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""\
        import os, sys
        from hpcml.executors.local.scheduler import LocalJob, LocalScheduler
        from hpcml.executors.local.resources import Capacity
        s = LocalScheduler(Capacity(cpus=4, mem_mb=1000), kill_wait_s=0.5)
        s.submit(LocalJob("a", {script(tmp_path, 'a', 'sleep 60 & sleep 60; wait')!r}, indices=(0, 1, 2)))
        print("go", flush=True)
        try:
            s.run(poll_s=0.02)
        except KeyboardInterrupt:
            print(sorted(r.state.value for r in s.states().values()), flush=True)
            sys.exit(130)
    """))
    proc = subprocess.Popen(
        [sys.executable, str(driver)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "TEST_TAG": tag},
    )
    assert proc.stdout is not None and proc.stdout.readline() == "go\n"
    while len(processes_with_env("TEST_TAG", tag)) < 1 + 3 * 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert out.strip() == "['cancelled', 'cancelled', 'cancelled']"
    assert processes_with_env("TEST_TAG", tag) == []


def test_helpers() -> None:
    job = LocalJob("12", "s", name="hpcml.wf.r.train")
    assert expand_output("/x/%x-%A_%a.%j.log%%", job, 3) == "/x/hpcml.wf.r.train-12_3.12.log%"
    assert signal_number("usr2") is signal.SIGUSR2
    assert signal_number("SIGTERM") is signal.SIGTERM
    assert signal_number("10") is signal.SIGUSR1
