"""Time limits on the real SLURM testbed (with accounting): a checkpointing step is
signalled, requeues itself, resumes from its checkpoint and completes; a step without
checkpointing ends TIMEOUT and says so. Both run side by side to keep the tier short
(SLURM's requeue waits ~160 s before restarting a job; a 1-minute limit ends at ~80 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml import api
from hpcml.config import Settings
from test_run_slurm import catalog, outs, ran, settings, write_workflow  # noqa: F401 - fixtures

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# The first attempt works (counts seconds in `n`) until SLURM's checkpoint signal, saves
# `n` and exits; the requeued attempt resumes from `n` and finishes at once. (SLURM sends
# `--signal` up to a minute early, so with a 1-minute limit it may come at any time: the
# second attempt must not depend on getting time before it.)
CHECKPOINTED = """\
  ckpt:
    resources: {time: 1m}
    retries: 2
    checkpoint: {signal: USR2, grace: 30}
    run: |
      if [ -f {out}/n ]; then
        echo "resuming at $(cat {out}/n)"
        echo x >> {out}/ran
        exit 0
      fi
      n=0
      echo "resuming at $n"
      trap 'echo $n > {out}/n; echo "checkpoint at $n"; exit 99' USR2
      while [ $n -lt 300 ]; do n=$((n+1)); sleep 1; done
"""

SLOW = """\
  slow:
    resources: {time: 1m}
    run: sleep 150; echo x >> {out}/ran
"""


def test_checkpoint_requeue_and_timeout(tmp_path: Path, settings: Settings) -> None:
    wf = write_workflow(tmp_path / "limits", "limits", CHECKPOINTED + SLOW)
    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=2)
    states = {t.step: t for t in outcome.status.tasks}
    assert not outcome.ok  # slow timed out

    ckpt = states["ckpt"]
    assert ckpt.state == "completed", ckpt
    out = outs(wf, "ckpt")[0]
    log = (out.parent / "log").read_text()
    assert "checkpoint at" in log and "scontrol requeue" in log
    resumed = [int(l.split()[-1]) for l in log.splitlines() if l.startswith("resuming at")]
    saved = [int(l.split()[-1]) for l in log.splitlines() if l.startswith("checkpoint at")]
    assert resumed[0] == 0 and resumed[-1] == saved[-1], log  # the last attempt started from the checkpoint
    assert ran(out) == 1
    assert ckpt.attempt >= 2

    slow = states["slow"]
    assert slow.state == "timeout", slow
    assert ran(outs(wf, "slow")[0]) == 0
