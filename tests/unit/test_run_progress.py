"""`hpcml run` shows image builds: a first build takes a minute or more and must not look idle."""

from __future__ import annotations

import time

from hpcml.cli.app import _ImageProgress
from hpcml.images.ensure import ImageEvent


def test_build_progress_without_a_terminal_repeats_elapsed_time() -> None:
    lines: list[str] = []
    progress = _ImageProgress(lines.append, every_s=0.01)
    progress(ImageEvent("numpy", "ab" * 32, "building"))
    deadline = time.monotonic() + 10
    while not any("so far" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.01)
    progress(ImageEvent("numpy", "ab" * 32, "done", seconds=63.2))
    progress.close()
    assert lines[0].startswith("image numpy: building (key abababababab")
    assert any(line.startswith("image numpy: building, ") and line.endswith("s so far") for line in lines)
    assert lines[-1] == "image numpy: built in 63s"


def test_build_progress_on_a_terminal_renders_elapsed_time() -> None:
    class FakeLive:  # stands for rich.live.Live: only what the progress calls
        shown: object = None

        def update(self, renderable: object) -> None:
            self.shown = renderable

    live = FakeLive()
    lines: list[str] = []
    progress = _ImageProgress(lines.append, live=live)
    progress(ImageEvent("numpy", "cd" * 32, "building"))
    assert live.shown is progress
    assert str(progress.__rich__()).startswith("building image numpy … ")
    progress(ImageEvent("tiny", "ef" * 32, "cached"))
    assert lines[-1] == "image tiny: cached"


def test_status_shows_why_a_job_may_never_start(capsys) -> None:  # noqa: ANN001
    # A job SLURM keeps pending for a reason other than waiting its turn (here: more CPUs
    # than the partition's nodes have) looked like any pending job.
    from hpcml.cli.app import _print_status
    from hpcml.run.submit import RunStatus
    from hpcml.run.tasks import TaskState

    st = RunStatus("r1", "wf", "slurm", (
        TaskState("a", 0, "k0", "pending", job="84", detail="Priority"),
        TaskState("b", 0, "k1", "pending", job="85", detail="PartitionConfig"),
    ))
    _print_status(st)
    out = capsys.readouterr().out
    assert "b/0: pending (PartitionConfig) job 85" in out and "a/0" not in out
