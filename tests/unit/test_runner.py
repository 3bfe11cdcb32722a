"""LocalRunner: the one place commands run (real subprocesses, no shell)."""

from __future__ import annotations

from pathlib import Path

from hpcml.clients.runner import LocalRunner


def test_run_logged_streams_output_to_the_file_and_returns_its_end(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("# header\n")
    done = LocalRunner().run_logged(["sh", "-c", "echo out; echo err >&2; exit 3"], log_path=str(log))
    assert done.returncode == 3 and done.stdout == ""
    assert log.read_text() == "# header\nout\nerr\n"  # appended, interleaved as printed
    assert done.tail(2) == "out\nerr"


def test_run_logged_timeout_and_missing_program(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    slow = LocalRunner().run_logged(["sleep", "10"], log_path=log, timeout=0.2)
    assert slow.returncode == 124 and "timed out" in slow.stderr
    missing = LocalRunner().run_logged(["no-such-program-hpcml"], log_path=log)
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_run_never_uses_a_shell() -> None:
    done = LocalRunner().run(["echo", "$HOME;", "`id`"])
    assert done.ok and done.stdout == "$HOME; `id`\n"


def test_a_program_that_cannot_be_executed_answers_126_not_a_traceback(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # not executable: PermissionError from exec
    done = LocalRunner().run([str(script)])
    assert done.returncode == 126 and "cannot execute" in done.stderr
    logged = LocalRunner().run_logged([str(script)], log_path=str(tmp_path / "log"))
    assert logged.returncode == 126
