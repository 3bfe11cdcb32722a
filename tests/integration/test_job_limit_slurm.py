"""At the cluster's job limit (issue 15, finding 6): sbatch's refusal is named at once, not
retried, and what was never submitted shows `not submitted`, not `upstream failed`.

The limit is a FAKE sbatch (`fake_sbatch_qos_limit`), which passes the first two submissions
to the real sbatch and then answers as SLURM 22.05 does when a QOS's MaxSubmitJobsPerUser is
reached. The real limit cannot be produced on demand here: the shared testbed runs with
AccountingStorageEnforce=none, and enforcing limits needs a slurmctld restart that would
disturb the other sessions using it (a test QOS or account with MaxSubmitJobs=2 is accepted
and ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_run_slurm import catalog, outs, ran, settings_env, write_workflow  # noqa: F401 - fixtures

pytestmark = pytest.mark.testbed

STEPS = """\
a:
  run: echo x >> {out}/ran
b:
  needs: [a]
  run: echo x >> {out}/ran
c:
  needs: [b]
  run: echo x >> {out}/ran
d:
  needs: [c]
  run: echo x >> {out}/ran
"""


def fake_sbatch_qos_limit(where: Path, allowed: int) -> Path:
    """A directory with the fake sbatch; `calls` counts the refused submissions."""
    where.mkdir()
    real = shutil.which("sbatch")
    (where / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/bash
        # fake_sbatch_qos_limit: the first {allowed} submissions are real, then the QOS limit answers
        if [[ " $* " == *" --parsable "* ]]; then
          n=$(( $(cat {where}/submitted 2>/dev/null || echo 0) + 1 ))
          echo "$n" > {where}/submitted
          if (( n > {allowed} )); then
            echo x >> {where}/refused
            echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
            echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" >&2
            exit 1
          fi
        fi
        exec {real} "$@"
        """))
    (where / "sbatch").chmod(0o755)
    return where


def test_a_job_limit_is_named_at_once_and_the_rest_is_not_submitted(
    tmp_path: Path, apptainer, catalog: Path, slurm_cluster,  # noqa: ANN001
) -> None:
    fake = fake_sbatch_qos_limit(tmp_path / "fake_sbatch_qos_limit", allowed=2)
    wf = write_workflow(tmp_path / "w", "joblimit", STEPS)
    env = {**os.environ, **settings_env(apptainer, catalog), "PATH": f"{fake}:{os.environ['PATH']}"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hpcml.cli", "run", str(wf), "--executor", "slurm", "--detach"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith("hpcml: error: the cluster refuses more jobs: your QOS allows no more queued jobs per user "
                          "(MaxSubmitJobsPerUser)."), err
    assert "had submitted a (job " in err and ", b (job " in err and "the rest was not submitted" in err
    assert "sbatch said: sbatch: error: Batch job submission failed: Job violates accounting/QOS policy" in err
    assert (fake / "refused").read_text().count("x") == 1  # refused once, never retried
    assert time.monotonic() - started < 120

    for _ in range(120):  # a and b run on; c and d were never submitted
        st = json.loads(subprocess.run([sys.executable, "-m", "hpcml.cli", "status", "--json", "--workflow", str(wf)],
                                       env=env, capture_output=True, text=True).stdout)
        if st["finished"]:
            break
        time.sleep(1)
    assert {t["step"]: t["state"] for t in st["tasks"]} == {"a": "completed", "b": "completed", "c": "not_submitted",
                                                             "d": "not_submitted"}
    (fake / "submitted").write_text("0\n")  # room again: a rerun submits the rest
    again = subprocess.run([sys.executable, "-m", "hpcml.cli", "run", str(wf), "--executor", "slurm", "--watch"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [ran(o) for s in "abcd" for o in outs(wf, s)] == [1, 1, 1, 1]
