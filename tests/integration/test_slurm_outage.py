"""A slurmctld that does not answer, for real, to the client commands of `hpcml` (issue 15,
findings 1 and 2), without stopping the testbed's shared daemons: each `hpcml` here reads
a private copy of slurm.conf (`ClientSlurmConf`) whose SlurmctldPort is switched to a
closed loopback port and back while it runs. Its squeue/sbatch/scontrol then really fail
with "Unable to contact slurm controller (connect failure)"; the jobs already queued keep
running in the real cluster. Counts: every task ran exactly once, none lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_run_slurm import catalog, outs, ran, settings_env, write_workflow  # noqa: F401 - fixtures
from testbed import ClientSlurmConf, SlurmCluster

pytestmark = pytest.mark.testbed

STEPS = """\
first:
  run: echo x >> {out}/ran; sleep {sleep}
sweep:
  needs: [first]
  matrix: {i: [1, 2]}
  run: echo x >> {out}/ran
"""


class Hpcml:
    """`hpcml ARGS` as a child process whose stderr is read as it comes."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "hpcml.cli", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.err: list[str] = []
        self.out = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            assert self.proc.poll() is None or any(text in line for line in self.err), \
                f"hpcml ended ({self.proc.returncode}) before saying {text!r}:\n{''.join(self.err)}"
            assert time.monotonic() < end, f"no {text!r} within {timeout} s:\n{''.join(self.err)}"
            time.sleep(0.2)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()  # stderr is the reader thread's alone (not communicate())
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.proc.returncode, self.out, "".join(self.err)


@pytest.fixture
def client_conf(tmp_path: Path, slurm_cluster: SlurmCluster) -> ClientSlurmConf:
    return ClientSlurmConf(slurm_cluster.conf, tmp_path / "client-slurm-conf")


def env_for(apptainer, catalog: Path, conf: ClientSlurmConf, wait_s: int) -> dict[str, str]:  # noqa: ANN001
    return {**os.environ, **settings_env(apptainer, catalog), **conf.env(), "HPCML_SLURM_WAIT_S": str(wait_s)}


def test_run_without_executor_waits_for_the_controller_then_fails_clearly(
    tmp_path: Path, apptainer, catalog: Path, client_conf: ClientSlurmConf,  # noqa: ANN001
) -> None:
    wf = write_workflow(tmp_path / "w", "outagenone", STEPS.replace("{sleep}", "1"))
    client_conf.cut_controller()
    started = time.monotonic()
    code, _out, err = Hpcml("run", str(wf), "--detach", env=env_for(apptainer, catalog, client_conf, 12)).finish()
    assert code == 1, err
    # SLURM stays the executor: the outage is waited for, never a reason to run here
    assert "executor: slurm (slurm" in err and "does not answer now; waiting for it" in err
    assert "slurmctld does not answer (" in err and "waiting for it up to 12 s" in err
    assert "error: slurmctld did not answer for 12 s (before submitting)" in err and "nothing was submitted" in err
    assert time.monotonic() - started >= 12
    assert not (wf.parent / ".hpcml" / "runs").exists() or not any((wf.parent / ".hpcml" / "runs").iterdir())
    assert not (wf.parent / ".hpcml" / "tasks").exists()  # nothing ran on this machine


def test_run_waits_for_the_controller_then_submits(
    tmp_path: Path, apptainer, catalog: Path, client_conf: ClientSlurmConf,  # noqa: ANN001
) -> None:
    wf = write_workflow(tmp_path / "w", "outagestart", STEPS.replace("{sleep}", "1"))
    client_conf.cut_controller()
    child = Hpcml("run", str(wf), "--watch", "--executor", "slurm", env=env_for(apptainer, catalog, client_conf, 300))
    child.wait_for("slurmctld does not answer (", timeout=120)
    time.sleep(5)
    client_conf.restore()  # the controller answers again
    code, out, err = child.finish()
    assert code == 0, out + err
    assert "slurmctld answers again after" in err
    assert [ran(o) for s in ("first", "sweep") for o in outs(wf, s)] == [1, 1, 1]


@pytest.mark.parametrize("watcher", ["run --watch", "status --watch"])
def test_watching_rides_out_an_outage(
    tmp_path: Path, apptainer, catalog: Path, client_conf: ClientSlurmConf, watcher: str,  # noqa: ANN001
) -> None:
    name = "outagewatch" if watcher == "run --watch" else "outagestatus"
    wf = write_workflow(tmp_path / "w", name, STEPS.replace("{sleep}", "20"))
    env = env_for(apptainer, catalog, client_conf, 300)
    if watcher == "run --watch":
        child = Hpcml("run", str(wf), "--watch", "--executor", "slurm", env=env)
        child.wait_for("submitted sweep: job", timeout=120)
    else:
        code, _out, err = Hpcml("run", str(wf), "--detach", "--executor", "slurm", env=env).finish()
        assert code == 0, err
        child = Hpcml("status", "--watch", "--workflow", str(wf), env=env)
        time.sleep(2)
    client_conf.cut_controller()  # while `first` runs (20 s): its jobs keep running
    child.wait_for("slurmctld does not answer (", timeout=120)
    assert "queued jobs keep running meanwhile" in "".join(child.err)
    time.sleep(15)
    client_conf.restore()
    code, out, err = child.finish()
    assert code == 0, out + err
    assert "slurmctld answers again after" in err and "Traceback" not in err
    assert [ran(o) for s in ("first", "sweep") for o in outs(wf, s)] == [1, 1, 1]  # none lost, none twice


def test_local_executor_does_not_take_tasks_slurm_may_hold_while_it_does_not_answer(
    tmp_path: Path, apptainer, catalog: Path, client_conf: ClientSlurmConf,  # noqa: ANN001
) -> None:
    """`--executor local` while slurmctld does not answer: the earlier run's job may still be
    queued, so hpcml waits for the controller (here past a 12 s wait: a clear error) instead of
    running the task a second time on this machine."""
    wf = write_workflow(tmp_path / "w", "outagelocal", "long:\n  run: echo x >> {out}/ran; sleep 30\n")
    env = env_for(apptainer, catalog, client_conf, 12)
    code, _out, err = Hpcml("run", str(wf), "--detach", "--executor", "slurm", env=env).finish()
    assert code == 0, err
    client_conf.cut_controller()
    code, out, err = Hpcml("run", str(wf), "--executor", "local", env=env).finish()
    client_conf.restore()
    assert code == 1, out + err
    assert "slurmctld does not answer (" in err and "(looking for queued jobs of earlier runs)" in err, err
    assert "error: slurmctld did not answer for " in err and "Traceback" not in err, err
    code, _out, err = Hpcml("cancel", "--workflow", str(wf), env=env).finish()
    assert code == 0, err
    assert [ran(o) for o in outs(wf, "long")] in ([0], [1])  # never twice (0: cancelled before it started)


ENDED = """\
sweep:
  matrix: {i: [1, 2, 3]}
  run: |
    echo x >> {out}/ran
    if [ {i} = 2 ]; then exit 3; fi
"""


@pytest.mark.slow
def test_status_of_an_older_run_while_accounting_does_not_answer(
    tmp_path: Path, apptainer, catalog: Path, client_conf: ClientSlurmConf, slurm_cluster: SlurmCluster,  # noqa: ANN001
) -> None:
    """Finding 3: the run's jobs have left squeue (MinJobAge), so `status` needs sacct for
    causes; sacct really fails (its AccountingStoragePort is a closed port in this test's
    SLURM_CONF: "Connection refused"). The exit-code files still say what happened."""
    import json

    wf = write_workflow(tmp_path / "w", "acctdown", ENDED)
    env = env_for(apptainer, catalog, client_conf, 60)
    code, out, err = Hpcml("run", str(wf), "--detach", "--executor", "slurm", env=env).finish()
    assert code == 0, out + err
    (job,) = [w.split("=", 1)[1].split(";")[0] for w in out.split() if w.startswith("sweep=")]
    # Wait for slurmctld to forget the jobs (MinJobAge, then its purge sweep).
    deadline = time.monotonic() + slurm_cluster.min_job_age + 240
    while slurm_cluster.run("squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i").stdout.strip():
        assert time.monotonic() < deadline, f"job {job} still in squeue"
        time.sleep(10)

    client_conf.cut_accounting()
    code, out, err = Hpcml("status", "--json", "--workflow", str(wf), env=env).finish()
    assert code == 1 and "Traceback" not in err, out + err  # 1: a task failed (exit 3), not a crash
    doc = json.loads(out)
    assert [(t["state"], t["exit_code"]) for t in doc["tasks"]] == [("completed", 0), ("failed", 3), ("completed", 0)]
    (note,) = doc["notes"]
    assert note.startswith("accounting did not answer (") and "Connection refused" in note
    code, out, err = Hpcml("status", "--workflow", str(wf), env=env).finish()
    assert code == 1 and "note: accounting did not answer" in out and "sweep/1: failed (exit 3)" in out, out + err

    client_conf.restore()  # accounting answers again: no note
    code, out, err = Hpcml("status", "--json", "--workflow", str(wf), env=env).finish()
    assert code == 1 and json.loads(out)["notes"] == [], out + err
