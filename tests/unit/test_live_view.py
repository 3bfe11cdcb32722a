"""The live view of a run: bars per step, elapsed time and ETA, GPUs in use from the
wrapper's attempt records, failures said once and at once; lines without a terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hpcml.cli.progress import RunView, failure_line, headline, run_view
from hpcml.results import RunStatus
from hpcml.run.journal import Journal
from hpcml.run.progress import ProgressTracker, eta
from hpcml.run.rundir import RunDir
from hpcml.run.tasks import TaskState


def _run_dir(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path / ".hpcml")
    Journal(rd.run("r1").journal).append("run", run="r1", executor="slurm")
    return rd


def _status(*states: tuple[str, int, str]) -> RunStatus:
    return RunStatus("r1", "wf", "slurm", tuple(
        TaskState(step, i, f"{step}{i}", state, 3 if state == "failed" else None, f"9_{i}") for step, i, state in states
    ))


def test_eta_from_the_rate_so_far() -> None:
    assert eta(6, 2, 60.0) == 180.0
    assert eta(6, 0, 60.0) is None and eta(0, 0, 0.0) == 0.0


def test_tracker_counts_gpus_and_reports_each_failure_once(tmp_path: Path) -> None:
    rd = _run_dir(tmp_path)
    task = rd.task("train", "train1")
    task.mkdir(parents=True)
    (task / "attempts").write_text("start 100 1 gpu01 9_1 0,1\n")
    tracker = ProgressTracker(rd)
    t0 = float(Journal(rd.run("r1").journal).read()[0]["t"])
    st = _status(("prep", 0, "completed"), ("train", 0, "failed"), ("train", 1, "running"), ("train", 2, "pending"))
    p = tracker.update(st, t0 + 100)
    assert [(s.step, s.total, s.done, s.running, s.failed) for s in p.steps] == [("prep", 1, 1, 0, 0), ("train", 3, 0, 1, 1)]
    assert p.gpus_in_use == 2 and p.elapsed_s == 100
    assert p.eta_s == 2 * 100 / 2  # 2 left (running + pending) at 2 ended per 100 s
    assert [t.label for t in p.new_failures] == ["failed (exit 3)"]
    assert tracker.update(st, t0 + 110).new_failures == ()


def test_view_on_a_terminal_and_lines_without_one(tmp_path: Path) -> None:
    rd = _run_dir(tmp_path)
    lines: list[str] = []
    view = RunView(ProgressTracker(rd), lines.append, clock=lambda: 10**10)
    view(_status(("train", 0, "running"), ("train", 1, "pending")))
    view(_status(("train", 0, "running"), ("train", 1, "pending")))  # no change: no line
    view(_status(("train", 0, "completed"), ("train", 1, "failed")))
    assert lines == ["1 pending, 1 running", "train/1: failed (exit 3) job 9_1 · hpcml logs train/1", "1 completed, 1 failed"]

    p = ProgressTracker(rd).update(_status(("train", 0, "completed"), ("train", 1, "running")), 10**10)
    console = Console(record=True, width=100)
    console.print(run_view(p))
    text = console.export_text()
    assert text.startswith("run r1: 1/2 done · ") and "about " in text and "0 GPUs in use" in text
    assert "train" in text and "1/2" in text and "1 running" in text and "0 failed" in text
    assert headline(p) in text
    assert failure_line(TaskState("a", 2, "k", "timeout", None, "5_2")) == "a/2: timeout job 5_2 · hpcml logs a/2"
