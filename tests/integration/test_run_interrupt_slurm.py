"""Ctrl-C while `hpcml run` watches a SLURM run: the jobs keep running, and RunInterrupted
says so from its fields. The local executor's cases are in tests/unit/test_run_interrupt.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hpcml import api, config
from hpcml.config import Settings
from hpcml.errors import RunInterrupted
from hpcml.results import RunStatus

if TYPE_CHECKING:
    from testbed import Apptainer, SlurmCluster

pytestmark = pytest.mark.testbed

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

WORKFLOW = """\
hpcml: 1
name: interrupt
images:
  bb:
    from: scratch
    shell: sh
    files: {busybox: /bin/sh}
    post: |
      /bin/sh --install -s /bin
defaults:
  image: bb
  resources: {time: 5m, cpus: 1, mem: 100M}
steps:
  slow:
    run: sleep 60
"""


@pytest.fixture
def settings(apptainer: Apptainer, tmp_path: Path, slurm_cluster: SlurmCluster) -> Settings:
    env = {
        "HOME": str(tmp_path),
        "HPCML_CATALOGS": str(tmp_path / "cat"),
        "HPCML_CACHE_DIR": str(tmp_path / "cache"),
        "HPCML_BUILD_FLAGS": " ".join(apptainer.build_flags),
        "HPCML_EXEC_FLAGS": " ".join(apptainer.exec_flags),
        "HPCML_APPTAINER": apptainer.binary,
        "HPCML_SITE_CONFIG": "/nonexistent",
        "HPCML_CONFIG": "/nonexistent",
    }
    return config.load(env=env)


def test_interrupt_while_watching_leaves_slurm_jobs_running(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "wf"
    root.mkdir()
    shutil.copy(BUSYBOX, root / "busybox")
    wf = root / "workflow.yaml"
    wf.write_text(WORKFLOW)

    def interrupt(_st: RunStatus) -> None:
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as caught:
        api.run(wf, executor="slurm", settings=settings, poll_s=1, on_update=interrupt)
    err = caught.value
    try:
        assert (err.submitted, err.executor, err.tasks_cancelled) == (1, "slurm", False)
        assert str(err) == (
            "interrupted: the SLURM jobs keep running; `hpcml status` follows them, `hpcml cancel` stops them"
        )
        st = api.status(workflow=str(wf), settings=settings)
        assert st.run_id == err.run_id and [t.state for t in st.tasks] in (["pending"], ["running"])
    finally:
        run_id, jobs = api.cancel(workflow=str(wf), settings=settings)
    assert run_id == err.run_id and len(jobs) == 1
