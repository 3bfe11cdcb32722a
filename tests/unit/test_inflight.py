"""run/inflight.py: an sbatch a killed `hpcml run` left running is found (a real process
whose argv is that of hpcml's sbatch) and waited for; a process of another directory is not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcml.errors import SubmitError
from hpcml.run.inflight import orphan_sbatches, wait_for_orphans


def sbatch_like(script: Path, seconds: float) -> subprocess.Popen[bytes]:
    """A process whose argv is `… --parsable SCRIPT` (as hpcml's sbatch), alive `seconds`."""
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})", "--parsable", str(script)])


def test_finds_an_sbatch_of_this_directory_only(tmp_path: Path) -> None:
    runs = tmp_path / "wf" / ".hpcml" / "runs"
    mine = sbatch_like(runs / "20261202-1" / "jobs" / "sweep.sbatch", 30)
    other = sbatch_like(tmp_path / "other" / ".hpcml" / "runs" / "r" / "jobs" / "sweep.sbatch", 30)
    try:
        for _ in range(50):  # the child's argv is in /proc once it has exec'd
            found = orphan_sbatches(runs)
            if found:
                break
            time.sleep(0.05)
        assert [(o.pid, Path(o.script).name) for o in found] == [(mine.pid, "sweep.sbatch")]
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()
    assert orphan_sbatches(runs) == []


def test_waits_for_it_to_end_then_returns(tmp_path: Path) -> None:
    runs = tmp_path / ".hpcml" / "runs"
    proc = sbatch_like(runs / "r" / "jobs" / "gate.sbatch", 1.5)
    said: list[str] = []
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        wait_for_orphans(runs, say=said.append, timeout_s=30)
        assert time.monotonic() - t0 > 0.5
    finally:
        proc.kill()
        proc.wait()
    assert len(said) == 1 and f"pid {proc.pid}" in said[0] and "waiting for it to end" in said[0]


def test_gives_up_past_the_timeout_naming_the_process(tmp_path: Path) -> None:
    runs = tmp_path / ".hpcml" / "runs"
    proc = sbatch_like(runs / "r" / "jobs" / "gate.sbatch", 30)
    try:
        time.sleep(0.3)
        with pytest.raises(SubmitError, match=rf"pid {proc.pid}, .*gate.sbatch\) has not ended after 1 s.*kill {proc.pid}"):
            wait_for_orphans(runs, say=lambda _m: None, timeout_s=1)
    finally:
        proc.kill()
        proc.wait()


def test_nothing_running_returns_at_once(tmp_path: Path) -> None:
    said: list[str] = []
    wait_for_orphans(tmp_path / "runs", say=said.append, timeout_s=0)
    assert said == []
