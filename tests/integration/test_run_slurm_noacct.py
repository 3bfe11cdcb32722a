"""On a cluster without accounting (sacct answers "accounting storage is disabled"), a
run still completes and a timed-out task is still reported as a timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml import api
from hpcml.config import Settings
from hpcml.executors.slurm import SlurmExecutor
from hpcml.clients.slurm import Slurm
from test_run_slurm import catalog, outs, settings, write_workflow  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.slow,
    pytest.mark.parametrize("slurm_cluster", ["no-accounting"], indirect=True),
]

STEPS = """\
  quick:
    run: echo ok > {out}/r
  slow:
    resources: {time: 1m}
    run: sleep 150
  after:
    needs: [slow]
    run: echo never > {out}/r
"""


def test_timeout_without_accounting(tmp_path: Path, settings: Settings, slurm_cluster) -> None:  # noqa: ANN001
    assert not slurm_cluster.accounting
    assert Slurm().sacct(["1"]) is None
    wf = write_workflow(tmp_path / "noacct", "noacct", STEPS)
    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=2)
    states = {t.step: t.state for t in outcome.status.tasks}
    assert states == {"quick": "completed", "slow": "timeout", "after": "upstream_failed"}
    # once squeue has forgotten the job, the wrapper's cause file still says why
    assert (outs(wf, "slow")[0].parent / "cause").read_text().strip() == "timeout"
    st = api.status(workflow=str(wf))
    assert {t.step: t.state for t in st.tasks} == states
    # a round that needs sacct (a job squeue does not know) learns there is no accounting
    executor = SlurmExecutor()
    seen = executor.observe(["999999"])
    assert executor.accounting is False and not seen.accounting and seen.records == {}
