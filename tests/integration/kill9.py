"""Trials of `kill -9` of `hpcml run` during a 1,000-task sweep, and the count of the SLURM
job instances each task got afterwards: shared by test_kill9_trials.py and bench/faults.py.

One trial: start the real CLI (`hpcml run --detach`, or watching) in a subprocess, SIGKILL
it after a random delay drawn from the time an unkilled submission takes (plus the start of
the watch), rerun `hpcml run --detach` until it exits 0, then count, from `squeue -r` and
`sacct -X`, the job instances of every task of the workflow: each must have exactly one
(none lost, none duplicated). What the killed run had journalled says where the kill fell.

The sweep waits behind a `gate` task (`sleep`), so its 1,000 tasks stay pending and
submission is exercised without running them: the testbed's single node starts about one
array task per second (measured: 595 trivial tasks in 816 s), so 20 x 1,000 executions
would take hours. After counting, a trial cancels its own jobs by id.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from testbed import run_quietly, write_busybox_workflow

TASKS = 1000

STEPS = """\
gate:
  resources: {{time: 15m}}
  run: sleep {gate_s}
sweep:
  needs: [gate]
  matrix: {{i: {{range: [0, {tasks}]}}}}
  run: echo x >> {{out}}/ran
merge:
  needs: [sweep]
  run: echo x >> {{out}}/ran
"""

_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")


@dataclass(frozen=True)
class Trial:
    """One kill and its recovery, counted."""

    number: int
    mode: str  # "detach" or "watch"
    delay_s: float  # when the SIGKILL was sent, after the start
    killed: bool  # False when `hpcml run` had already exited by then
    moment: str  # how far the killed run got, from its journal
    reruns: int  # `hpcml run --detach` calls until one exited 0
    tasks: int
    lost: int  # tasks with no job instance
    duplicated: int  # extra job instances of a task


def write_workflow(root: Path, name: str, gate_s: int = 600, tasks: int = TASKS) -> Path:
    """`root/workflow.yaml` (and the busybox its image copies in)."""
    return write_busybox_workflow(root, name, STEPS.format(gate_s=gate_s, tasks=tasks))


def hpcml(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcml.cli", *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def timed_submission(path: Path, env: dict[str, str]) -> float:
    """Seconds an unkilled `hpcml run --detach` of the workflow takes (its jobs then cancelled)."""
    t0 = time.monotonic()
    done = hpcml(["run", str(path), "--executor", "slurm", "--detach"], env)
    took = time.monotonic() - t0
    if done.returncode != 0:
        raise AssertionError(f"hpcml run failed:\n{done.stderr}")
    cancel_workflow(path.parent, _name(path))
    return took


def run_trial(number: int, rng: random.Random, path: Path, env: dict[str, str], mode: str, span_s: float,
              keep: bool = False, at: tuple[str, ...] = ()) -> Trial:
    """Kill `hpcml run` (mode "detach" or "watch") after a delay drawn in [0, span_s) — or,
    with `at`, as soon as its journal's last event starts with one of `at` (e.g. "submitted
    gate": mid-submission) — rerun it until it exits 0, and count the job instances of every task;
    then cancel the jobs, unless `keep` (the caller lets them run)."""
    delay = rng.uniform(0, span_s)
    argv = [sys.executable, "-m", "hpcml.cli", "run", str(path), "--executor", "slurm", f"--{mode}"]
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    started = time.monotonic()
    if at:
        while child.poll() is None and not journal_moment(path.parent).startswith(at):
            time.sleep(0.005)
        delay = time.monotonic() - started
    try:
        child.wait(timeout=0 if at else delay)
        killed = False
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed = True
    moment = journal_moment(path.parent)
    reruns, errors = 0, []
    while True:
        reruns += 1
        done = hpcml(["run", str(path), "--executor", "slurm", "--detach"], env)
        if done.returncode == 0:
            break
        errors.append(done.stderr[-2000:])
        if reruns >= 3:
            raise AssertionError(f"trial {number}: `hpcml run` failed {reruns} times:\n" + "\n---\n".join(errors))
    name = _name(path)
    per_task = wait_for_accounting(path.parent, name)
    if not keep:
        cancel_workflow(path.parent, name)
    lost = sum(1 for n in per_task.values() if n == 0)
    duplicated = sum(max(0, n - 1) for n in per_task.values())
    return Trial(number, mode, round(delay, 2), killed, moment, reruns, len(per_task), lost, duplicated)


def slow_sbatch_trial(root: Path, env: dict[str, str], name: str) -> tuple[subprocess.CompletedProcess[str], Counter[str]]:
    """kill -9 of `hpcml run --detach` while its sbatch of the sweep waits on a controller slow
    to answer (a FAKE sbatch, `fake_sbatch_slow`, sleeps 4 s, then runs the real one), and an
    immediate rerun: (the rerun, job instances per task). The killed run's sbatch goes on."""
    fake = root / "fake_sbatch_slow"
    fake.mkdir()
    (fake / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/bash
        # fake_sbatch_slow: the sweep's submission is answered after 4 s (a busy slurmctld)
        if [[ "$*" == *sweep.sbatch* && ! -e {fake}/started ]]; then touch {fake}/started; sleep 4; fi
        exec {shutil.which("sbatch")} "$@"
        """))
    (fake / "sbatch").chmod(0o755)
    env = {**env, "PATH": f"{fake}:{env['PATH']}"}
    path = write_workflow(root / name, name)
    child = subprocess.Popen([sys.executable, "-m", "hpcml.cli", "run", str(path), "--executor", "slurm", "--detach"],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not (fake / "started").exists():
            if child.poll() is not None or time.monotonic() > end:
                raise AssertionError("hpcml run never reached the sweep's sbatch")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        rerun = hpcml(["run", str(path), "--executor", "slurm", "--detach"], env)
        time.sleep(5)  # past the fake's 4 s: a duplicate would be queued by now
        return rerun, wait_for_accounting(path.parent, name)
    finally:
        cancel_workflow(path.parent, name)


def _name(path: Path) -> str:
    return re.search(r"^name: (\S+)$", path.read_text(), re.M).group(1)  # type: ignore[union-attr]


def journal_moment(wf_dir: Path) -> str:
    """How far the first run got: its last journal event (`intent sweep`, `submitted gate`,
    …), `no run` when it had not created one yet."""
    runs = wf_dir / ".hpcml" / "runs"
    ids = sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) if runs.exists() else []
    if not ids:
        return "no run"
    journal = runs / ids[0] / "journal.jsonl"
    if not journal.exists():
        return "run created"
    lines = journal.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip().endswith("}")]
    if not records:
        return "run created"
    last = records[-1]
    moment = f"{last['event']} {last.get('step', '')}".strip()
    if moment == "submitted gate":  # then the sweep's task directories are written
        made = sum(1 for d in (wf_dir / ".hpcml" / "tasks" / "sweep").glob("*/cmd.sh"))
        moment += f", {made} sweep task dirs written"
    return moment


# ---- counting ------------------------------------------------------------------------------


def instances(wf_dir: Path, workflow: str) -> tuple[Counter[str], set[str], set[str]]:
    """(job instances per task key, instances squeue shows, instances sacct shows) of every
    job named `hpcml.<workflow>.…`. An instance is `JOBID` or `JOBID_TASK`; sacct's pending
    array row `123_[0-999]` is expanded."""
    prefix = f"hpcml.{workflow}."
    queued = _rows(["squeue", "-h", "-r", "-t", "all", "--me", "-o", "%i|%j"], prefix)
    # By job id: sacct's time window leaves out a job never eligible (one waiting on its
    # dependency); the ids are squeue's and those the runs journalled.
    ids = sorted({ref.split("_", 1)[0] for ref in queued} | journalled(wf_dir), key=int)
    accounted = _rows(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,JobName"], prefix) if ids else {}
    seen = {**queued, **accounted}
    keys_by_run_step = _all_keys(wf_dir)
    # Every task of the workflow, from the newest run's manifests (a task no job has counts 0).
    per_task: Counter[str] = Counter({k: 0 for keys in _newest_keys(wf_dir).values() for k in keys.values()})
    for ref, name in seen.items():
        _wf, run_id, step = name.split(".")[1:4]
        if not (wf_dir / ".hpcml" / "runs" / run_id).is_dir():
            continue  # another directory's workflow of the same name (reconciliation skips it too)
        job, _, task = ref.partition("_")
        index = int(task) if task else 0
        key = keys_by_run_step.get((run_id, step), {}).get(index)
        if key is None:
            raise AssertionError(f"job {ref} ({name}) maps to no task of {wf_dir}")
        per_task[key] += 1
    return per_task, set(queued), set(accounted)


def journalled(wf_dir: Path) -> set[str]:
    """The job ids every run of the workflow journalled as submitted."""
    out: set[str] = set()
    for journal in (wf_dir / ".hpcml" / "runs").glob("*/journal.jsonl"):
        for line in journal.read_text().splitlines():
            if '"submitted"' in line and line.rstrip().endswith("}"):
                record = json.loads(line)
                if record.get("event") == "submitted":
                    out.add(str(record["job_id"]).split("_", 1)[0])
    return out


def _all_keys(wf_dir: Path) -> dict[tuple[str, str], dict[int, str]]:
    """(run, step) → {array index: task key}, from every run's manifests."""
    out: dict[tuple[str, str], dict[int, str]] = {}
    for manifest in (wf_dir / ".hpcml" / "runs").glob("*/jobs/*.tasks"):
        run_id, step = manifest.parent.parent.name, manifest.stem
        out[(run_id, step)] = {int(i): k for i, k in (line.split() for line in manifest.read_text().splitlines())}
    return out


def _newest_keys(wf_dir: Path) -> dict[str, dict[int, str]]:
    """step → {index: key} of the newest run (all of its steps' manifests are written)."""
    runs = sorted(p for p in (wf_dir / ".hpcml" / "runs").iterdir() if not p.name.startswith("."))
    return {m.stem: {int(i): k for i, k in (line.split() for line in m.read_text().splitlines())}
            for m in (runs[-1] / "jobs").glob("*.tasks")}


def _rows(argv: list[str], prefix: str) -> dict[str, str]:
    """Instance → job name, from squeue or sacct rows `ID|NAME`."""
    done = run_quietly(argv, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{argv[0]} failed: {done.stderr}")
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        ref, _, name = line.strip().partition("|")
        if not name.startswith(prefix):
            continue
        m = _RANGE.match(ref)
        if m is None:
            out[ref] = name
            continue
        for part in m.group(2).split("%")[0].split(","):
            lo, _, hi = part.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                out[f"{m.group(1)}_{i}"] = name
    return out


def wait_for_accounting(wf_dir: Path, workflow: str, timeout: float = 60) -> Counter[str]:
    """Instances per task once sacct (fed asynchronously by slurmctld) shows every instance
    squeue shows."""
    end = time.monotonic() + timeout
    while True:
        per_task, queued, accounted = instances(wf_dir, workflow)
        if queued <= accounted or time.monotonic() > end:
            return per_task
        time.sleep(2)


def cancel_workflow(wf_dir: Path, workflow: str) -> None:
    """scancel this workflow's own jobs, by id."""
    queued = _rows(["squeue", "-h", "-r", "--me", "-o", "%i|%j"], f"hpcml.{workflow}.")
    jobs = sorted({ref.split("_", 1)[0] for ref in queued})
    if jobs:
        run_quietly(["scancel", *jobs], timeout=120)


def table(trials: list[Trial]) -> str:
    """The trials as markdown, for the test's output and the bench."""
    head = "| trial | mode | kill after (s) | killed at | reruns | tasks | lost | duplicated |\n|---|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {t.number} | {t.mode} | {t.delay_s} | {t.moment if t.killed else 'not killed: had exited'} | {t.reruns} | "
        f"{t.tasks} | {t.lost} | {t.duplicated} |\n" for t in trials)


