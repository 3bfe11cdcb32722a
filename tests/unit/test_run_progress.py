"""`hpcml run` shows image builds: a first build takes a minute or more and must not look idle."""

from __future__ import annotations

import time
from pathlib import Path

from hpcml.cli.progress import ImageProgress
from hpcml.images.ensure import ImageEvent


def test_build_progress_without_a_terminal_repeats_elapsed_time() -> None:
    lines: list[str] = []
    progress = ImageProgress(lines.append, every_s=0.01)
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
    progress = ImageProgress(lines.append, live=live)
    progress(ImageEvent("numpy", "cd" * 32, "building"))
    assert live.shown is progress
    assert str(progress.__rich__()).startswith("building image numpy … ")
    progress(ImageEvent("tiny", "ef" * 32, "cached"))
    assert lines[-1] == "image tiny: cached"


def test_status_shows_why_a_job_may_never_start(capsys) -> None:  # noqa: ANN001
    # A job SLURM keeps pending for a reason other than waiting its turn (here: more CPUs
    # than the partition's nodes have) looked like any pending job.
    from hpcml.cli.tables import print_status
    from hpcml.results import RunStatus
    from hpcml.run.tasks import TaskState

    st = RunStatus("r1", "wf", "slurm", (
        TaskState("a", 0, "k0", "pending", job="84", detail="Priority"),
        TaskState("b", 0, "k1", "pending", job="85", detail="PartitionConfig"),
    ))
    print_status(st)
    out = capsys.readouterr().out
    assert "b/0: pending (PartitionConfig) job 85" in out and "a/0" not in out


def test_progress_lines_without_a_terminal() -> None:
    # `hpcml build` and `hpcml run` share this renderer: a line per change of state.
    lines: list[str] = []
    with ImageProgress(lines.append, every_s=3600) as progress:
        progress(ImageEvent("tiny", "12" * 32, "cached", message="built by another process"))
        progress(ImageEvent("base", "ab" * 32, "waiting", message="waiting for node1:42"))
        progress(ImageEvent("base", "ab" * 32, "building", log="/c/tmp/build.log"))
        progress(ImageEvent("base", "ab" * 32, "failed", log="/c/logs/failed/x.log", seconds=1.25))
        progress(ImageEvent("leaf", "cd" * 32, "skipped", message="parent base failed"))
    assert lines == [
        "image tiny: cached (built by another process)",
        "image base: waiting for node1:42",
        "image base: building (key abababababab; this can take minutes; log: /c/tmp/build.log)",
        "image base: failed after 1s",
    ]  # the skipped child is told in the command's final error, with the failed build's log


def test_heartbeat_stops_when_the_image_is_built() -> None:
    lines: list[str] = []
    with ImageProgress(lines.append, every_s=0.01) as progress:
        progress(ImageEvent("a", "ab" * 32, "building"))
        progress(ImageEvent("b", "cd" * 32, "building"))
        deadline = time.monotonic() + 10
        while not any(line.startswith("image b: building, ") for line in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        progress(ImageEvent("a", "ab" * 32, "done", seconds=2))
        progress(ImageEvent("b", "cd" * 32, "done", seconds=3))
        count = len(lines)
        time.sleep(0.05)
        assert len(lines) == count  # nothing building: no heartbeat
    assert "image a: built in 2s" in lines and lines[-1] == "image b: built in 3s"


WORKFLOW = """hpcml: 1
name: fails
images:
  base: {from: "debootstrap:bookworm"}
  leaf: {from: base, env: {A: "1"}}
steps:
  s: {image: leaf, run: "true"}
"""


def test_build_failure_prints_the_library_message_and_exits_1(tmp_path: Path) -> None:
    # require_signatures without a signing key: the build fails before apptainer runs.
    from click.testing import CliRunner

    from hpcml.cli.app import main

    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    env = {"HOME": str(tmp_path), "HPCML_SITE_CONFIG": str(tmp_path / "none.toml"),
           "HPCML_CONFIG": str(tmp_path / "none.toml"), "HPCML_CATALOGS": str(tmp_path / "cat"),
           "HPCML_CACHE_DIR": str(tmp_path / "cache"), "HPCML_REQUIRE_SIGNATURES": "true",
           "HPCML_VERIFY_KEY": str(tmp_path / "lab.pub")}
    result = CliRunner().invoke(main, ["build", str(tmp_path / "workflow.yaml")], env=env)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr
    assert "hpcml: error: image base: build failed\n" in err and "require_signatures is set" in err
    assert "image leaf: skipped (parent base failed)" in err


def test_errors_as_the_user_sees_them() -> None:
    from hpcml.cli.messages import error_text
    from hpcml.errors import BuildError, Diagnostic, RunInterrupted, SpecError

    # an interrupted run is a report, not an error of the user's
    assert error_text(RunInterrupted(submitted=0, executor="", tasks_cancelled=False)) == (
        "hpcml: interrupted before anything was submitted; rerun to start again")
    assert error_text(BuildError("image a: build failed")) == "hpcml: error: image a: build failed"
    assert error_text(SpecError(Diagnostic("w.yaml", 3, 5, "unknown key"))) == "w.yaml:3:5: unknown key"
