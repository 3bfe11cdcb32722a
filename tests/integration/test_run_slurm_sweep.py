"""The realistic example (workflows/sweep.yaml: prepare → 6-task GPU sweep → evaluate) on
the real SLURM testbed: it completes in order, each GPU task's container sees exactly the
device SLURM gave its job, and the CPU steps get no `--nv`.

The debootstrap image takes a few minutes to build the first time; it is kept in the
testbed's catalog (/var/cache/hpcml-testbed/catalog) so later runs reuse it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hpcml import api, config
from test_run_slurm import REPO, host_devices, outs, settings_env

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

SHARED_CATALOG = Path("/var/cache/hpcml-testbed/catalog")


def test_sweep_example_on_slurm(tmp_path: Path, apptainer, slurm_cluster, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    try:
        SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
        home = SHARED_CATALOG
    except OSError:
        home = tmp_path / "catalog"
    env = settings_env(apptainer, home)
    settings = config.load(env={"HOME": str(tmp_path), **env})
    work = tmp_path / "workflows"
    shutil.copytree(REPO / "workflows", work, ignore=shutil.ignore_patterns(".hpcml"))
    wf = work / "sweep.yaml"
    # Record what the container sees, next to what the job wrapper logs on the host.
    text = wf.read_text().replace(
        "run: >-\n      python3 /opt/example/train.py",
        'run: >-\n      echo "${CUDA_VISIBLE_DEVICES:-unset}" > {out}/devices &&\n      python3 /opt/example/train.py',
    )
    assert text != wf.read_text()
    wf.write_text(text)
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")

    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=2)
    assert outcome.ok, outcome.status and outcome.status.as_dict()
    assert {s: len(j) for s, j in outcome.jobs.items()} == {"prepare": 1, "train": 1, "evaluate": 1}

    train = outs(wf, "train")
    assert len(train) == 6
    for out in train:
        inside = (out / "devices").read_text().strip()
        assert inside in ("0", "1") and inside == host_devices(out.parent / "log"), out
        assert (out / "metrics.json").exists()
    summary = json.loads((outs(wf, "evaluate")[0] / "summary.json").read_text())
    assert len(summary["runs"]) == 6

    jobs = work / ".hpcml" / "runs" / outcome.run_id / "jobs"
    assert " --nv " in (jobs / "train.sbatch").read_text()
    for cpu_step in ("prepare", "evaluate"):
        assert "--nv" not in (jobs / f"{cpu_step}.sbatch").read_text()
    # the secret went to a mode-0600 env file, never into the script
    env_file = work / ".hpcml" / "runs" / outcome.run_id / "env" / "train.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "not-a-real-key" not in (jobs / "train.sbatch").read_text()
    assert os.environ["WANDB_API_KEY"] in env_file.read_text()
