"""The testbed's SLURM daemons really stopped while runs go on (issue 15, "Faults"):

- slurmctld stopped (SIGTERM) for ~60 s while one `hpcml run --watch` is submitting, one
  `hpcml run --watch` and one `hpcml status --watch` follow a run whose job is running, one
  `hpcml run --watch` starts, one `hpcml run` without `--executor` and one `--executor local`
  run of a workflow an earlier run sent to SLURM (a short `slurm_wait_s`) start: the first
  four wait, say why and finish (exit 0), the last two give up clearly having run nothing (these cover, with the daemon really stopped, what
  the former test_slurm_outage.py showed with a closed port in a private slurm.conf);
- slurmdbd stopped for a whole run and until its jobs have left squeue: `status` works from
  squeue and the exit-code files, then says in a note that causes are unknown; once
  slurmdbd is back, slurmctld's queued accounting arrives and the causes appear;
- in the same window, a node of the `multi` partition dies (SIGKILL to its slurmd and to the
  job's processes on it): the job ends NODE_FAIL, SLURM requeues it on the other node and
  the run completes.

Counts: each task's command appends a line to its out/ran; sacct counts the allocations
too. Run under the exclusive testbed lock (`flock -x /tmp/hpcml-testbed.lock`): these tests
stop daemons other sessions use. `Daemons.restore()` (fixture teardown) starts whatever is
down and waits for every node, even when an assertion failed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from daemons import Daemons, Hpcml, poll
from test_run_slurm import catalog, outs, ran, settings_env, write_workflow  # noqa: F401 - fixtures
from testbed import SlurmCluster, run_quietly

pytestmark = pytest.mark.testbed

OUTAGE_S = 60


@pytest.fixture
def daemons(slurm_cluster: SlurmCluster) -> Iterator[Daemons]:
    assert slurm_cluster.accounting, "these faults need the cluster with accounting"
    d = Daemons(slurm_cluster.node)
    try:
        yield d
    finally:
        d.restore()


def env_for(apptainer, catalog: Path, wait_s: int = 300) -> dict[str, str]:  # noqa: ANN001
    return {**os.environ, **settings_env(apptainer, catalog), "HPCML_SLURM_WAIT_S": str(wait_s)}


def journal_has(wf: Path, event: str) -> bool:
    return any(f'"event": "{event}"' in p.read_text() for p in (wf.parent / ".hpcml" / "runs").glob("*/journal.jsonl"))


def sacct_runs(workflow: str, since: str) -> dict[str, list[str]]:
    """Job id → states of its allocations (`sacct -X --duplicates`), this workflow's jobs."""
    done = run_quietly(["sacct", "-X", "--duplicates", "--parsable2", "--noheader", "-S", since,
                        "-o", "JobID,JobName,State"], timeout=60)
    assert done.ok, done.tail()
    out: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        job_id, name, state = line.split("|")[:3]
        if name.startswith(f"hpcml.{workflow}."):
            out.setdefault(job_id, []).append(state.split()[0])
    return out


def counts(wf: Path, steps: tuple[str, ...]) -> list[int]:
    return [ran(o) for s in steps for o in outs(wf, s)]


# ---------------------------------------------------------------- slurmctld stopped

CHAIN = "".join(f"s{i}:\n{'  needs: [s' + str(i - 1) + ']' + chr(10) if i else ''}  run: echo x >> {{out}}/ran\n"
                for i in range(6)) + "fan:\n  needs: [s5]\n  matrix: {i: [1, 2, 3]}\n  run: echo x >> {out}/ran\n"
CHAIN_STEPS = tuple(f"s{i}" for i in range(6)) + ("fan",)

WATCHED = """\
first:
  run: echo x >> {out}/ran; sleep 40
sweep:
  needs: [first]
  matrix: {i: [1, 2]}
  run: echo x >> {out}/ran
"""


def test_slurmctld_stopped_while_submitting_and_watching(
    tmp_path: Path, apptainer, catalog: Path, daemons: Daemons,  # noqa: ANN001
) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    env = env_for(apptainer, catalog)
    watched = write_workflow(tmp_path / "watched", "ctlwatched", WATCHED)
    earlier = write_workflow(tmp_path / "earlier", "ctlearlier", "once:\n  run: echo x >> {out}/ran\n")
    code, _out, err = Hpcml("run", str(earlier), "--detach", "--executor", "slurm", env=env).finish()
    assert code == 0, err
    watcher = Hpcml("run", str(watched), "--watch", "--executor", "slurm", env=env)
    watcher.wait_for("submitted sweep: job", timeout=120)
    follower = Hpcml("status", "--watch", "--workflow", str(watched), env=env)
    poll("first task of the watched run to start", lambda: ran(outs(watched, "first")[0]), 120)
    poll("the earlier run's task to run", lambda: ran(outs(earlier, "once")[0]), 120)

    submitting = write_workflow(tmp_path / "submitting", "ctlsubmit", CHAIN)
    late = write_workflow(tmp_path / "late", "ctllate", WATCHED.replace("sleep 40", "true"))
    gives_up = write_workflow(tmp_path / "givesup", "ctlgivesup", WATCHED.replace("sleep 40", "true"))
    hpcml = Hpcml("run", str(submitting), "--watch", "--executor", "slurm", env=env)
    # Stop slurmctld as soon as the run's first job is journaled: the others are still to come.
    poll("the run's first submission", lambda: journal_has(submitting, "submitted"), 120, every=0.02)
    daemons.stop_controller()
    stopped = time.monotonic()
    starter = Hpcml("run", str(late), "--watch", "--executor", "slurm", env=env)
    quitter = Hpcml("run", str(gives_up), "--detach", env=env_for(apptainer, catalog, wait_s=12))
    # --executor local where an earlier run went to SLURM: its jobs may still be queued, so it
    # waits for the controller too (past 12 s: a clear error), never runs them here a second time.
    local = Hpcml("run", str(earlier), "--executor", "local", env=env_for(apptainer, catalog, wait_s=12))
    for child in (hpcml, watcher, follower, starter):
        child.wait_for("slurmctld does not answer (", timeout=60)
    code, _out, quit_err = quitter.finish()
    local_code, local_out, local_err = local.finish()
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    daemons.start_controller()

    results = {name: child.finish(timeout=300) for name, child in
               (("submitting", hpcml), ("watching", watcher), ("following", follower), ("starting", starter))}
    # Without --executor and past slurm_wait_s: a clear error, nothing submitted, nothing run here.
    assert code == 1, quit_err
    assert "executor: slurm (slurm" in quit_err and "does not answer now; waiting for it" in quit_err
    assert "error: slurmctld did not answer for 12 s (before submitting)" in quit_err
    assert "nothing was submitted" in quit_err and "Traceback" not in quit_err
    assert not (gives_up.parent / ".hpcml" / "tasks").exists()
    assert local_code == 1, local_out + local_err
    assert "(looking for queued jobs of earlier runs)" in local_err and "Traceback" not in local_err, local_err
    assert re.search(r"error: slurmctld did not answer for \d+ s \(looking for queued", local_err), local_err
    assert counts(earlier, ("once",)) == [1]
    for name, (code, out, err) in results.items():
        assert code == 0, f"{name}: exit {code}\n{out}\n{err}"
        assert "slurmctld answers again after" in err and "Traceback" not in err, f"{name}:\n{err}"
    for name in ("watching", "following"):  # both were following the run when it stopped
        assert "(following the run); queued jobs keep running meanwhile" in results[name][2], results[name][2]
    sub_err = results["submitting"][2]
    assert "(submitting hpcml.ctlsubmit." in sub_err, sub_err  # the outage came mid-submission
    assert "(before submitting)" in results["starting"][2]
    # Every task ran exactly once: none lost, none twice (its own file, and SLURM's records).
    assert counts(submitting, CHAIN_STEPS) == [1] * 9
    assert counts(watched, ("first", "sweep")) == [1] * 3
    assert counts(late, ("first", "sweep")) == [1] * 3
    for wf, jobs in (("ctlsubmit", 9), ("ctlwatched", 3), ("ctllate", 3)):
        runs = poll(f"sacct records of {wf}", lambda wf=wf, jobs=jobs: (
            r if len(r := sacct_runs(wf, since)) == jobs and all(s == ["COMPLETED"] for s in r.values()) else None),
            120, every=2)
        assert len(runs) == jobs


# ---------------------------------------------------------------- slurmdbd down, a node dies

ACCOUNTED = """\
sweep:
  matrix: {i: [1, 2, 3]}
  run: |
    echo x >> {out}/ran
    if [ {i} = 2 ]; then exit 3; fi
    if [ {i} = 3 ]; then sleep 300; fi
"""

ON_MULTI = """\
long:
  resources: {partition: multi, time: 5m, cpus: 1, mem: 100M}
  run: echo x >> {out}/ran; sleep 45; echo x >> {out}/done
"""


def task_json(wf: Path, env: dict[str, str]) -> tuple[int, dict, str]:
    code, out, err = Hpcml("status", "--json", "--workflow", str(wf), env=env).finish()
    assert "Traceback" not in err, err
    return code, json.loads(out), err


@pytest.mark.slow
def test_slurmdbd_down_for_a_whole_run_while_a_node_dies(
    tmp_path: Path, apptainer, catalog: Path, daemons: Daemons, slurm_cluster: SlurmCluster,  # noqa: ANN001
) -> None:
    """slurmdbd is stopped before the runs and started again only after their jobs have left
    squeue (MinJobAge): meanwhile a `multi` node fails under a running job. Task 3 of the
    sweep is killed by SIGKILL (`scancel --signal=KILL --batch`, as the kernel's OOM killer
    would: the wrapper writes no exit code), so only SLURM knows what became of it."""
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    env = env_for(apptainer, catalog)
    accounted = write_workflow(tmp_path / "acct", "dbdown", ACCOUNTED)
    on_multi = write_workflow(tmp_path / "node", "nodefail", ON_MULTI)
    daemons.stop_accounting()
    run_a = Hpcml("run", str(accounted), "--watch", "--executor", "slurm", env=env)
    run_n = Hpcml("run", str(on_multi), "--watch", "--executor", "slurm", env=env)

    # A node failure: SIGKILL to its slurmd and to the job's processes on it.
    (task_n,) = poll("the multi run's plan", lambda: run_outs(on_multi, "long"), 120)
    poll("the multi job to start", lambda: ran(task_n), 180)
    (job_n,) = {t.job.split("_")[0] for t in api_tasks(on_multi)}
    node = run_quietly(["squeue", "-h", "-j", job_n, "-o", "%N"], timeout=30).stdout.strip()
    assert node in ("hpcml-n1", "hpcml-n2"), node
    daemons.kill_node(node, [job_n])

    # Task 3 killed without a trace of its own.
    task_3 = outs(accounted, "sweep")[2]
    poll("sweep/2 to start", lambda: ran(task_3), 180)
    (ref_3,) = [t.job for t in api_tasks(accounted) if t.index == 2]
    assert run_quietly(["scancel", "--signal=KILL", "--batch", ref_3], timeout=30).ok
    code_a, out_a, err_a = run_a.finish(timeout=300)
    assert code_a == 1 and "Traceback" not in err_a, out_a + err_a  # 1: tasks failed
    # squeue still knows the jobs: every state and cause, no note, while slurmdbd is down
    code, doc, _ = task_json(accounted, env)
    assert code == 1 and doc["notes"] == [], doc
    assert [(t["state"], t["exit_code"]) for t in doc["tasks"]] == [("completed", 0), ("failed", 3), ("failed", None)]
    assert "FAILED" in doc["tasks"][2]["detail"]

    # The node-failed task, once SLURM has requeued it (SlurmdTimeout, then NODE_FAIL), is
    # shown requeued until it runs again, not pending as if new.
    poll("the node-failed task to show requeued", lambda: task_json(on_multi, env)[1]["tasks"][0]["state"] == "requeued",
         240, every=1)

    code_n, out_n, err_n = run_n.finish(timeout=420)
    assert code_n == 0, out_n + err_n
    assert ran(task_n) == 2 and (task_n / "done").read_text().count("x") == 1  # killed once, ran once to the end
    daemons.start_node(node)
    _, doc_n, _ = task_json(on_multi, env)
    assert [(t["state"], t["attempt"]) for t in doc_n["tasks"]] == [("completed", 2)], doc_n

    # squeue forgets the jobs (MinJobAge): only exit-code files, and a note, while slurmdbd is down.
    jobs_a = {t.job.split("_")[0] for t in api_tasks(accounted)}
    poll("the jobs to leave squeue", lambda: not any(
        run_quietly(["squeue", "-h", "-r", "-t", "all", "-j", j, "-o", "%i"], timeout=30).stdout.strip()
        for j in jobs_a), slurm_cluster.min_job_age + 240, every=10)
    code, doc, _ = task_json(accounted, env)
    assert code == 1, doc
    assert [(t["state"], t["exit_code"]) for t in doc["tasks"]] == [("completed", 0), ("failed", 3), ("lost", None)]
    assert "cause unknown (accounting did not answer)" in doc["tasks"][2]["detail"]
    (note,) = doc["notes"]
    assert note.startswith("accounting did not answer (") and "ended job(s) is unknown for now" in note, note
    code, out, err = Hpcml("status", "--workflow", str(accounted), env=env).finish()
    assert code == 1 and "note: accounting did not answer" in out and "sweep/1: failed (exit 3)" in out, out + err

    # slurmdbd back: slurmctld sends what it queued, the causes appear and the note goes.
    daemons.start_accounting()
    runs = poll("sacct records of the runs", lambda: (
        r if len(r := sacct_runs("dbdown", since)) == 3 and len(sacct_runs("nodefail", since)) == 1 else None),
        180, every=2)
    assert sorted(s[-1] for s in runs.values()) == ["COMPLETED", "FAILED", "FAILED"], runs
    (states_n,) = sacct_runs("nodefail", since).values()
    assert states_n[0] == "NODE_FAIL" and states_n[-1] == "COMPLETED", states_n
    code, doc, _ = task_json(accounted, env)
    assert code == 1 and doc["notes"] == [], doc
    assert [(t["state"], t["exit_code"]) for t in doc["tasks"]] == [("completed", 0), ("failed", 3), ("failed", None)]
    assert doc["tasks"][2]["detail"].startswith("the job was killed by signal 9 (FAILED)"), doc["tasks"][2]


def api_tasks(wf: Path):  # noqa: ANN201 - hpcml's TaskState
    from hpcml import api

    return api.status(workflow=str(wf)).tasks


def run_outs(wf: Path, step: str) -> list[Path]:
    """`outs` once the run exists (an `hpcml run` just started may not have written it yet)."""
    try:
        return outs(wf, step)
    except Exception:  # noqa: BLE001 - no run yet: poll again
        return []
