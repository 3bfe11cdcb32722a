"""`kill -9` of `hpcml run` at random moments of a 1,000-task sweep, 20 trials: after a rerun,
every task has exactly one SLURM job instance (counted with squeue -r and sacct), none lost,
none duplicated.

Each trial has its own workflow directory; the kill moment is drawn from the measured time of
an unkilled submission (and, for the watching variant, the first seconds of its watch), with
a seeded RNG whose seed is printed (HPCML_KILL9_SEED reproduces a run). The sweep waits
behind a `gate` task so its tasks are counted pending, then cancelled: see kill9.py for why
(the testbed starts about one array task per second). A trial takes ~5 s (a submission
takes ~2 s), so they run one after the other, without disturbing each other's timing.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from kill9 import TASKS, run_trial, slow_sbatch_trial, table, timed_submission, write_workflow

pytestmark = pytest.mark.testbed

TRIALS = 24


def cli_env(root: Path, apptainer) -> dict[str, str]:  # noqa: ANN001 - testbed.Apptainer
    """The environment of the hpcml CLI of a test: its own catalog, the testbed's apptainer."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("HPCML_")},
        "HPCML_CATALOGS": str(root / "cat"), "HPCML_CACHE_DIR": str(root / "cache"),
        "HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent",
        "HPCML_EXEC_FLAGS": " ".join(apptainer.exec_flags), "HPCML_BUILD_FLAGS": " ".join(apptainer.build_flags),
        "HPCML_APPTAINER": apptainer.binary,
    }


def test_kill9_of_run_at_random_moments(tmp_path: Path, apptainer, slurm_cluster) -> None:  # noqa: ANN001
    assert slurm_cluster.accounting, "the count needs sacct"
    seed = int(os.environ.get("HPCML_KILL9_SEED", random.SystemRandom().randrange(10**6)))
    print(f"kill9 trials: seed {seed} (HPCML_KILL9_SEED={seed} reproduces the kill moments)")
    env = cli_env(tmp_path, apptainer)
    took = timed_submission(write_workflow(tmp_path / "calibrate", "kill9-cal"), env)  # builds the image too
    took = timed_submission(write_workflow(tmp_path / "calibrate2", "kill9-cal2"), env)
    print(f"an unkilled `hpcml run --detach` of the sweep takes {took:.1f} s")
    rng = random.Random(seed)
    plans = [(n, random.Random(rng.random()), "detach" if n % 2 else "watch") for n in range(1, TRIALS + 1)]

    trials = [run_trial(n, r, write_workflow(tmp_path / f"t{n:02d}", f"kill9-t{n:02d}-{seed}"), env, mode,
                        took * 1.1 if mode == "detach" else took + 3) for n, r, mode in plans]
    print(table(trials))
    assert sum(t.killed for t in trials) >= TRIALS * 3 // 4, "most kills should land before the run exits"
    for t in trials:
        assert (t.tasks, t.lost, t.duplicated) == (TASKS + 2, 0, 0), t


def test_kill9_while_its_sbatch_is_still_submitting(tmp_path: Path, apptainer, slurm_cluster) -> None:  # noqa: ANN001
    """kill -9 does not end the sbatch `hpcml run` was running; with a controller slow to
    answer (a FAKE sbatch that waits 4 s, then runs the real one) that sbatch creates the
    sweep's job after an immediate rerun has started. The rerun waits for it, says so, and
    adopts the job: before, it submitted the 1,000 tasks a second time."""
    rerun, per_task = slow_sbatch_trial(tmp_path, cli_env(tmp_path, apptainer), f"kill9-slow-{os.getpid()}")
    assert rerun.returncode == 0, rerun.stderr
    assert "an sbatch left running by an earlier `hpcml run`" in rerun.stderr
    assert "1001 already queued, 1 to submit" in rerun.stderr  # the sweep adopted; merge was never submitted
    assert len(per_task) == TASKS + 2
    assert sorted(set(per_task.values())) == [1], {k: n for k, n in per_task.items() if n != 1}
