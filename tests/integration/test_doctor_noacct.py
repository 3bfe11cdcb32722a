"""`hpcml doctor` on the testbed with accounting off: a warning naming it, with the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_doctor_testbed import doctor
from test_run_slurm import catalog, settings_env  # noqa: F401 - fixtures

pytestmark = [pytest.mark.testbed, pytest.mark.parametrize("slurm_cluster", ["no-accounting"], indirect=True)]


def test_accounting_off_is_named(apptainer, catalog: Path, slurm_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    assert not slurm_cluster.accounting
    env = {**os.environ, "HOME": str(tmp_path), **settings_env(apptainer, catalog)}
    rc, checks = doctor(env)
    acct = checks["slurm.accounting"]
    assert acct["status"] == "warn" and "accounting is off" in acct["detail"]
    assert "slurmdbd" in acct["fix"]
    assert rc == 0  # hpcml works without accounting, with less to say about failures
