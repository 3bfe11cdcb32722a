"""Issue 12, finding 3: with `require_signatures`, the job verifies its image where it runs,
on the very file it runs (the wrapper opens the SIF once, `apptainer verify`s it and
`apptainer exec`s it through /proc/self/fd/N). A SIF swapped at its catalog path while the
job waits in the queue is refused with a message in the task log, and the task fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_images import keypair
from test_run_slurm import settings_env, write_workflow

from hpcml import api, config, plan
from hpcml.images.catalog import Catalog
from hpcml.render import protocol
from hpcml.spec import checker as spec

pytestmark = [pytest.mark.testbed]

# `gate` holds `victim` back (a dependency) while the test swaps victim's SIF in the catalog.
STEPS = """\
gate:
  image: gate
  run: sleep 12; echo gate-ran > {out}/r
victim:
  needs: [gate]
  run: echo victim-ran > {out}/r
"""


def test_sif_swapped_while_the_job_waits_is_refused(tmp_path: Path, apptainer, slurm_cluster,  # noqa: ANN001
                                                    busybox_sif: Path) -> None:
    priv, pub = keypair(tmp_path)
    wf = write_workflow(tmp_path / "wf", "sigjob", STEPS)
    wf.write_text(wf.read_text().replace("defaults:", "  gate:\n    from: bb\n    post: echo gate\ndefaults:", 1))
    env = {"HOME": str(tmp_path), **settings_env(apptainer, tmp_path),
           "HPCML_SIGNING_KEY": str(priv), "HPCML_VERIFY_KEY": str(pub), "HPCML_REQUIRE_SIGNATURES": "true"}
    settings = config.load(env=env)
    outcome = api.run(wf, executor="slurm", settings=settings, watch=False)
    assert outcome.submitted == 2
    # A group member replaces victim's image at its catalog path with an unsigned one.
    key = plan.build(spec.load(wf)).images["bb"].key
    sif = Catalog(tmp_path / "cat").sif_path(key)
    evil = sif.with_name(".evil.sif")
    evil.write_bytes(busybox_sif.read_bytes())
    os.rename(evil, sif)
    st = api.status(workflow=str(wf))
    assert {t.step: t.state for t in st.tasks}["victim"] == "pending"  # it had not started
    for _ in range(900):  # the testbed is shared: the jobs may wait for others
        st = api.status(workflow=str(wf))
        if st.finished:
            break
        time.sleep(1)
    states = {t.step: t for t in st.tasks}
    assert states["gate"].state == "completed", st.as_dict()
    assert states["victim"].state == "failed" and states["victim"].exit_code == protocol.VERIFY_FAILED_EXIT
    tasks = wf.parent / ".hpcml" / "tasks"
    gate_log = next((tasks / "gate").glob("*/log")).read_text()
    assert "Verified signature" in gate_log  # the untouched image was checked in its job, and ran
    victim_dir = next((tasks / "victim").iterdir())
    log = (victim_dir / "log").read_text()
    assert f"refusing to run {sif}: its signature does not verify" in log, log
    assert not (victim_dir / "out" / "r").exists()  # the swapped image never ran


def test_local_executor_refuses_a_swapped_sif_too(tmp_path: Path, apptainer, busybox_sif: Path) -> None:  # noqa: ANN001
    """The same wrapper runs local tasks: the swap happens while `gate` runs."""
    import threading

    priv, pub = keypair(tmp_path)
    wf = write_workflow(tmp_path / "wf", "sigjob", STEPS.replace("sleep 12", "sleep 4"))
    wf.write_text(wf.read_text().replace("defaults:", "  gate:\n    from: bb\n    post: echo gate\ndefaults:", 1))
    env = {"HOME": str(tmp_path), **settings_env(apptainer, tmp_path),
           "HPCML_SIGNING_KEY": str(priv), "HPCML_VERIFY_KEY": str(pub), "HPCML_REQUIRE_SIGNATURES": "true"}
    settings = config.load(env=env)
    key = plan.build(spec.load(wf)).images["bb"].key
    sif = Catalog(tmp_path / "cat").sif_path(key)
    tasks = wf.parent / ".hpcml" / "tasks"

    def swap_when_gate_runs() -> None:
        for _ in range(600):
            logs = list((tasks / "gate").glob("*/log")) if (tasks / "gate").is_dir() else []
            if logs and "attempt 1" in logs[0].read_text():
                evil = sif.with_name(".evil.sif")
                evil.write_bytes(busybox_sif.read_bytes())
                os.rename(evil, sif)
                return
            time.sleep(0.1)

    swapper = threading.Thread(target=swap_when_gate_runs)
    swapper.start()
    outcome = api.run(wf, executor="local", settings=settings)
    swapper.join()
    states = {t.step: t for t in outcome.status.tasks}  # type: ignore[union-attr]
    assert states["gate"].state == "completed"
    assert states["victim"].state == "failed" and states["victim"].exit_code == protocol.VERIFY_FAILED_EXIT
    log = next((tasks / "victim").glob("*/log")).read_text()
    assert f"refusing to run {sif}: its signature does not verify" in log, log


RANK_STEPS = """\
ranks:
  resources: {partition: multi, nodes: 2, launch: per_node, time: 2m, cpus: 1, mem: 100M}
  run: echo "rank $RANK on $HPCML_NODE" > {out}/rank-$RANK
"""


def test_every_rank_of_a_multi_node_step_verifies_on_its_node(tmp_path: Path, apptainer, slurm_cluster) -> None:  # noqa: ANN001
    """srun's ranks cannot inherit the batch script's descriptor: each rank opens the SIF,
    verifies it and runs that descriptor (ranks.sh), so a signed image runs on every node."""
    priv, pub = keypair(tmp_path)
    wf = write_workflow(tmp_path / "wf", "sigranks", RANK_STEPS)
    env = {"HOME": str(tmp_path), **settings_env(apptainer, tmp_path),
           "HPCML_SIGNING_KEY": str(priv), "HPCML_VERIFY_KEY": str(pub), "HPCML_REQUIRE_SIGNATURES": "true"}
    settings = config.load(env=env)
    outcome = api.run(wf, executor="slurm", settings=settings, watch=False)
    assert outcome.submitted == 1
    for _ in range(900):  # the testbed is shared: the job may wait for others
        st = api.status(workflow=str(wf))
        if st.finished:
            break
        time.sleep(1)
    task_dir = next((wf.parent / ".hpcml" / "tasks" / "ranks").iterdir())
    log = (task_dir / "log").read_text()
    assert st.tasks[0].state == "completed", log
    ranks = sorted(p.read_text().split() for p in (task_dir / "out").glob("rank-*"))
    assert [r[1] for r in ranks] == ["0", "1"] and ranks[0][3] != ranks[1][3], ranks  # two nodes
