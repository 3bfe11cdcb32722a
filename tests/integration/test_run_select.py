"""Recovery commands end to end: `hpcml run --only/--from/--until/--force` and `hpcml retry`,
with the real CLI on the local executor and through the API on the SLURM testbed (tiny
busybox workflows; each task appends to out/ran, so reruns are counted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcml import api
from hpcml.config import Settings
from hpcml.errors import SubmitError
from test_run_local import hpcml, hpcml_env, status, workflow  # noqa: F401 - fixtures
from test_run_slurm import catalog, outs, ran, settings, write_workflow  # noqa: F401 - fixtures

pytestmark = pytest.mark.testbed

# train/1 fails on its first try only (a file in its own output says it tried).
STEPS = """\
prepare:
  run: echo data > {out}/data.txt; echo x >> {out}/ran
train:
  needs: [prepare]
  matrix: {lr: [1, 2, 3]}
  run: |
    echo x >> {out}/ran
    if [ {lr} = 2 ] && [ ! -f {out}/tried ]; then touch {out}/tried; echo "lr 2 fails once" >&2; exit 3; fi
    cat {in.prepare}/data.txt > {out}/t
evaluate:
  needs: [train]
  run: cat {in.train}/*/t > {out}/all; echo x >> {out}/ran
"""


def runs_of(path: Path) -> list[str]:
    root = path.parent / ".hpcml" / "runs"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def counts(path: Path, step: str) -> list[int]:
    return [ran(p / "out") for p in sorted((path.parent / ".hpcml" / "tasks" / step).glob("*"))]


def test_recovery_commands_on_the_local_executor(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:
    path = workflow(tmp_path / "wf", busybox_sif, "recover", STEPS)
    run = ("run", str(path), "--executor", "local")

    # train needs prepare's output, which nobody made: refused, nothing written
    refused = hpcml(*run, "--only", "train", env=hpcml_env, check=False)
    assert refused.returncode == 1
    assert "nothing submitted: --only train leaves out upstream output" in refused.stderr
    assert "prepare/0 (needed by train/0, train/1, train/2)" in refused.stderr
    assert runs_of(path) == []

    # --until prepare: prepare alone; the run is about prepare only, and ok
    hpcml(*run, "--until", "prepare", env=hpcml_env)
    assert set(status(path, hpcml_env)) == {"prepare/0"}
    assert counts(path, "prepare") == [1]

    # --only train: train from prepare's cached output; train/1 fails, nothing downstream runs
    failed = hpcml(*run, "--only", "train", env=hpcml_env, check=False)
    assert failed.returncode == 1
    assert status(path, hpcml_env) == {"prepare/0": "cached", "train/0": "completed", "train/1": "failed",
                                      "train/2": "completed"}

    # retry: only train/1 of that run (same key), on its executor
    again = hpcml("retry", "--workflow", str(path), env=hpcml_env)
    assert "retry of run" in again.stderr and "train/1" in again.stderr
    assert status(path, hpcml_env) == {"prepare/0": "cached", "train/0": "cached", "train/1": "completed",
                                      "train/2": "cached"}
    nothing = hpcml("retry", "--workflow", str(path), env=hpcml_env, check=False)
    assert nothing.returncode == 1 and "nothing to retry" in nothing.stderr

    # --from evaluate: the rest from the cache
    hpcml(*run, "--from", "evaluate", env=hpcml_env)
    assert counts(path, "evaluate") == [1]
    assert sorted(counts(path, "train")) == [1, 1, 2] and counts(path, "prepare") == [1]

    # --force prepare reruns prepare and everything downstream of it
    hpcml(*run, "--force", "prepare", env=hpcml_env)
    assert counts(path, "prepare") == [2] and sorted(counts(path, "train")) == [2, 2, 3] and counts(path, "evaluate") == [2]
    # a plain rerun: all cached
    hpcml(*run, env=hpcml_env)
    assert set(status(path, hpcml_env).values()) == {"cached"}

    bad = hpcml(*run, "--only", "trian", env=hpcml_env, check=False)
    assert bad.returncode == 1 and "did you mean 'train'?" in bad.stderr


def test_only_and_retry_on_slurm(tmp_path: Path, settings: Settings) -> None:
    wf = write_workflow(tmp_path / "s", "recoverslurm", STEPS)
    with pytest.raises(SubmitError, match=r"prepare/0 \(needed by train/0"):
        api.run(wf, executor="slurm", settings=settings, selection=_sel(only=("train",)))
    first = api.run(wf, executor="slurm", settings=settings, poll_s=1, selection=_sel(until=("train",)))
    assert not first.ok and list(first.jobs) == ["prepare", "train"]
    assert {t.step for t in first.status.tasks} == {"prepare", "train"}
    assert [t.state for t in first.status.tasks if t.step == "train"] == ["completed", "failed", "completed"]
    retried = api.retry(workflow=str(wf), settings=settings, poll_s=1)
    assert retried.ok and retried.submitted == 1 and list(retried.jobs) == ["train"]
    rest = api.run(wf, executor="slurm", settings=settings, poll_s=1)
    assert rest.ok and rest.submitted == 1 and list(rest.jobs) == ["evaluate"]
    assert sorted(ran(o) for o in outs(wf, "train")) == [1, 1, 2] and [ran(o) for o in outs(wf, "prepare")] == [1]
    doc = json.loads(json.dumps(rest.status.as_dict()))
    assert doc["ok"]


def _sel(**kw: tuple[str, ...]):  # noqa: ANN202
    from hpcml.run.select import Selection

    return Selection(**kw)


def test_a_step_taking_over_an_earlier_runs_array_waits_for_it_whole(tmp_path: Path, settings: Settings) -> None:
    """Finding 7 of issue 15: the downstream job of a run that adopts the live array of an
    earlier run depends on the array job (`afterok:ID`), not on each of its tasks."""
    import subprocess
    import time

    go = tmp_path / "go"
    steps = (f"sweep:\n  matrix: {{i: [0, 1, 2, 3]}}\n  run: |\n    while [ ! -e {go} ]; do sleep 1; done\n"
             "    echo x >> {out}/ran\nafter:\n  needs: [sweep]\n  run: echo x >> {out}/ran\n")
    wf = write_workflow(tmp_path / "arr", "wholearray", steps)
    first = api.run(wf, executor="slurm", settings=settings, watch=False, selection=_sel(until=("sweep",)))
    (array_job,) = first.jobs["sweep"]
    second = api.run(wf, executor="slurm", settings=settings, watch=False)
    assert second.adopted == 4 and list(second.jobs) == ["after"]
    (after_job,) = second.jobs["after"]
    shown = subprocess.run(["scontrol", "show", "job", after_job], capture_output=True, text=True).stdout
    dependency = next(w for w in shown.split() if w.startswith("Dependency="))
    # SLURM shows a dependency on a whole array as `ID_*`; on its tasks it would list `ID_0:ID_1:…`
    assert dependency.startswith(f"Dependency=afterok:{array_job}_*(") and dependency.count(f"{array_job}_") == 1, dependency
    go.touch()
    for _ in range(400):  # the shared cluster may be busy
        st = api.status(workflow=str(wf))
        if st.finished:
            break
        time.sleep(1)
    assert st.ok and [ran(o) for s in ("sweep", "after") for o in outs(wf, s)] == [1] * 5
