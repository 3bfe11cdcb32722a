"""sbatch processes that a killed `hpcml run` left running, waited for before reconciling.

`kill -9` of `hpcml run` (or the OOM killer) does not end the sbatch it was running: that
sbatch goes on and may create its job only after a rerun has looked for the dead run's jobs
by name, and the rerun would then submit the same tasks again. Measured on the testbed: a
controller taking 4 s to answer the sweep's sbatch, and a rerun right after the kill, gave
1,000 duplicated tasks. So a rerun, holding the run directory's lock (no live `hpcml run`
of this directory is submitting), first waits for every process on this machine whose argv
has `--parsable` and a job script of this directory's runs (`runs/<id>/jobs/*.sbatch`):
that can only be an sbatch whose `hpcml run` died. An sbatch started on another machine is
not seen.

Example:

    wait_for_orphans(run_dir.path / "runs", say=print, timeout_s=600)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcml.errors import SubmitError


@dataclass(frozen=True)
class Orphan:
    """An sbatch of an earlier run still running."""

    pid: int
    script: str  # runs/<id>/jobs/<step>.sbatch


def orphan_sbatches(runs_root: Path, proc: Path = Path("/proc")) -> list[Orphan]:
    """The processes whose argv has `--parsable` and a job script under `runs_root`."""
    prefix = str(runs_root) + os.sep
    found: list[Orphan] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []  # no /proc (not Linux): nothing can be seen
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue  # ended meanwhile, or not ours to read
        scripts = [a for a in argv if a.startswith(prefix) and a.endswith(".sbatch")]
        if "--parsable" in argv and scripts:
            found.append(Orphan(int(entry.name), scripts[-1]))
    return found


def wait_for_orphans(
    runs_root: Path,
    *,
    say: Callable[[str], None],
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    proc: Path = Path("/proc"),
) -> None:
    """Return once no sbatch of an earlier run is running (saying so once while waiting);
    SubmitError past `timeout_s`, naming the process, so that nothing is submitted twice."""
    orphans = orphan_sbatches(runs_root, proc)
    if not orphans:
        return
    first = orphans[0]
    say(f"an sbatch left running by an earlier `hpcml run` that ended abruptly (pid {first.pid}, "
        f"{first.script}) may still create its job; waiting for it to end before looking for that run's jobs")
    end = clock() + timeout_s
    while orphans:
        if clock() > end:
            raise SubmitError(
                f"an sbatch left running by an earlier `hpcml run` (pid {orphans[0].pid}, {orphans[0].script}) "
                f"has not ended after {timeout_s:.0f} s; its job may still appear, and submitting now could run "
                f"those tasks twice: wait for it, or end it (`kill {orphans[0].pid}`), then rerun `hpcml run`"
            )
        sleep(0.2)
        orphans = orphan_sbatches(runs_root, proc)
