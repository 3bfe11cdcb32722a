"""Run directory, journal, lock and task-state derivation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml.run.durable import atomic_write
from hpcml.run.journal import Journal
from hpcml.run.rundir import RunDir, RunLock, new_run_id
from hpcml.run.tasks import JobRecord, TaskFiles, TaskState, derive_state, read_task_files


def test_run_ids_sort_by_time() -> None:
    a = new_run_id(1_800_000_000, "ab12")
    b = new_run_id(1_800_000_060, "0000")
    assert a == "20270115-080000-ab12" and a < b


def test_run_ids_sort_after_the_latest_within_a_second() -> None:
    # Regression: two runs started in the same second got random tokens, so the second
    # could sort first and `hpcml status` showed the older run as "the latest".
    prev = "20270115-080000-ab12"
    for _ in range(200):
        assert new_run_id(1_800_000_000, after=prev) > prev
    assert new_run_id(1_800_000_000, "0001", after=prev) > prev  # a low token is not kept
    assert new_run_id(1_799_999_000, after=prev) > prev  # clock went back
    assert new_run_id(1_800_000_000, after="20270115-080000-ffff") .startswith("20270115-080001-")
    assert new_run_id(1_800_000_060, "0000", after=prev) == "20270115-080100-0000"


def test_atomic_write_sets_mode_before_content(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secrets.env"
    atomic_write(path, "TOKEN='x'\n", mode=0o600)
    assert path.read_text() == "TOKEN='x'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secrets.env"]


def test_journal_skips_a_torn_line_and_keeps_appending(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append("run", run="r1")
    with open(j.path, "a") as fh:
        fh.write('{"event": "submitted", "job_i')  # a writer killed mid-record
    j.append("submitted", job_id="12")
    events = [(r["event"], r.get("job_id")) for r in j.read()]
    assert events == [("run", None), ("submitted", "12")]


def test_second_run_lock_fails_clearly(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / ".hpcml")
    with RunLock(rd):
        # A POSIX lock is per process: the competitor must be another process.
        code = (
            "import sys; from pathlib import Path; from hpcml.run.rundir import RunDir, RunLock\n"
            f"RunLock(RunDir(Path({str(rd.path)!r}))).acquire()\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode != 0
        assert "another `hpcml run` is already working" in done.stderr
        assert f"pid {os.getpid()}" in done.stderr
    RunLock(rd).acquire()  # free again once released


def test_read_task_files(tmp_path: Path) -> None:
    assert read_task_files(tmp_path) == TaskFiles()
    (tmp_path / "exitcode").write_text("3\n")
    (tmp_path / "cause").write_text("timeout\n")
    (tmp_path / "attempt").write_text("2\n")
    assert read_task_files(tmp_path) == TaskFiles(3, "timeout", False, 2)
    (tmp_path / "preempted").write_text("2\n")
    assert read_task_files(tmp_path).preempted == 2


def test_a_preempted_task_says_so_whatever_its_state() -> None:
    waiting = TaskState("train", 0, "k", "requeued", None, "7", "BeginTime", 1, preempted=1)
    done = TaskState("train", 0, "k", "completed", 0, "7", "", 2, preempted=1)
    assert waiting.label == "requeued (preempted ×1)" and done.label == "completed (preempted ×1)"
    assert done.as_dict()["preempted"] == 1 and done.as_dict()["state"] == "completed"
    assert TaskState("t", 0, "k", "failed", 3).label == "failed (exit 3)"
    # While SLURM requeues it the wrapper's marker says requeued, not pending or failed.
    assert derive_state(TaskFiles(requeue=True, attempt=1, preempted=1), record=JobRecord("PENDING", "BeginTime")) == (
        "requeued", "BeginTime")


@pytest.mark.parametrize(
    ("files", "kw", "expected"),
    [
        (TaskFiles(exit_code=0), {}, "completed"),
        (TaskFiles(exit_code=0), {"cached": True}, "cached"),
        (TaskFiles(), {"record": JobRecord("RUNNING")}, "running"),
        (TaskFiles(), {"record": JobRecord("PENDING", "Priority")}, "pending"),
        (TaskFiles(requeue=True), {"record": JobRecord("PENDING", "BeginTime")}, "requeued"),
        # Pending again after an attempt started, with no marker of its own: SLURM requeued
        # it after its node failed (NODE_FAIL, JobRequeue=1) — not a fresh pending task.
        (TaskFiles(attempt=1), {"record": JobRecord("PENDING", "BeginTime")}, "requeued"),
        (TaskFiles(attempt=0), {"record": JobRecord("PENDING", "Priority")}, "pending"),
        (TaskFiles(), {"record": JobRecord("PENDING", "DependencyNeverSatisfied")}, "upstream_failed"),
        (TaskFiles(exit_code=3), {"record": JobRecord("FAILED", "", 3)}, "failed"),
        (TaskFiles(exit_code=143, cause="timeout"), {}, "timeout"),
        (TaskFiles(exit_code=143, cause="cancelled"), {"record": JobRecord("TIMEOUT")}, "timeout"),
        (TaskFiles(), {"record": JobRecord("OUT_OF_MEMORY")}, "oom"),
        (TaskFiles(), {"record": JobRecord("NODE_FAIL")}, "node_fail"),
        (TaskFiles(), {"record": JobRecord("PREEMPTED")}, "preempted"),
        (TaskFiles(), {"upstream_failed": True, "record": JobRecord("CANCELLED")}, "upstream_failed"),
        (TaskFiles(), {"cancelled_by_user": True}, "cancelled"),
        # Regression: `hpcml cancel` after a task failed by itself turned it into "cancelled".
        (TaskFiles(exit_code=3), {"cancelled_by_user": True}, "failed"),
        (TaskFiles(exit_code=143, cause="cancelled"), {"cancelled_by_user": True}, "cancelled"),
        (TaskFiles(), {"submitted": False}, "not_submitted"),
        # Issue 15: never submitted is not a failure, whatever became of its upstream.
        (TaskFiles(), {"submitted": False, "upstream_failed": True}, "not_submitted"),
        # Issue 15: a job SLURM still knows, which failed before writing its exit code (a
        # full disk), is failed, not "lost … the job is gone".
        (TaskFiles(), {"record": JobRecord("FAILED", "", 1)}, "failed"),
        (TaskFiles(), {}, "lost"),
        (TaskFiles(), {"causes_unknown": True}, "lost"),
    ],
)
def test_derive_state(files: TaskFiles, kw: dict, expected: str) -> None:
    assert derive_state(files, **kw)[0] == expected


def test_what_derive_state_says_when_the_cause_is_unknown() -> None:
    assert derive_state(TaskFiles(), causes_unknown=True)[1] == "no exit code written; cause unknown (accounting did not answer)"
    assert "without writing its exit code: was the run directory's file system full?" in \
        derive_state(TaskFiles(), record=JobRecord("FAILED", "", 1))[1]


def test_a_job_killed_by_a_signal_says_so() -> None:
    # sacct's ExitCode `0:9`: the batch script got SIGKILL (the OOM killer, kill -9 on the
    # node), which the wrapper cannot trap; seen in test_daemon_faults.py
    state, detail = derive_state(TaskFiles(attempt=1), record=JobRecord("FAILED", "", 0, 9))
    assert state == "failed" and detail.startswith("the job was killed by signal 9 (FAILED) before its wrapper")
    # a wrapper that exited non-zero on its own (no signal) keeps the full-disk hint
    assert "file system full?" in derive_state(TaskFiles(), record=JobRecord("FAILED", "", 1, 0))[1]
