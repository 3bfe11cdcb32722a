"""Faults on the real SLURM testbed, and what each does to a run: the table of docs/reliability.md.

Each scenario runs the real `hpcml` CLI on a tiny busybox workflow, injects its fault for
real (as tests/integration/test_daemon_faults.py, test_full_disk.py and
test_job_limit_slurm.py do), recovers the way the user would, and counts the tasks:
completed (status completed/cached at the end), lost (not), duplicated (extra runs of a
task's command, each appending to its out/ran). Prints one markdown row per scenario.

- full disk: the workflow directory on a small tmpfs, nearly filled (needs root);
- job limit: a FAKE sbatch answering QOSMaxSubmitJobPerUserLimit after two submissions
  (the shared testbed does not enforce accounting limits; enforcing needs a restart);
- preemption: a plain `sbatch -p high` job needing the whole node preempts a run of a
  checkpointing and a plain task on partition `low` (PreemptMode=REQUEUE, GraceTime 20 s).
- daemons really stopped (tests/integration/test_daemon_faults.py; `daemons.Daemons`):
  slurmctld-stopped (SIGTERM for 60 s during submission and watching), slurmdbd-stopped
  (a whole run, until its jobs left squeue; ~7 minutes), node-failure (SIGKILL to a
  `multi` node's slurmd and the job's processes). They stop daemons other sessions share:
  run them under `flock -x /tmp/hpcml-testbed.lock`.
- kill9: a real SIGKILL of `hpcml run` at a random moment, 24 trials of a 1,000-task sweep
  held behind a gate task; the job instances of every task counted (tests/integration/kill9.py);
  kill9-slow-sbatch: the same while its sbatch waits on a FAKE slow sbatch, immediate rerun;
  kill9-run-through: one such trial whose sweep then runs to the end (~25 min).
- lying sbatch: three FAKE sbatch that queue the job for real, then exit 1 with an unknown
  error, hang past `sbatch_timeout_s`, or report a socket time-out (first call only);
- read-only catalog: the lab catalog bind-mounted read-only (needs root), first in
  `catalogs`, holding one of the workflow's two images.

    .venv/bin/python bench/faults.py [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from daemons import Daemons  # noqa: E402 - the tests' helpers, after the path
from testbed import BUSYBOX_WORKFLOW, testbed_status, write_busybox_workflow  # noqa: E402

STEPS = """\
first:
  run: echo x >> {{out}}/ran; sleep {sleep}
sweep:
  needs: [first]
  matrix: {{i: [1, 2]}}
  run: echo x >> {{out}}/ran
"""

@dataclass(frozen=True)
class Row:
    scenario: str
    sees: str
    completed: int | str
    lost: int
    duplicated: int


class Child:
    """`hpcml ARGS` as a child process whose stderr is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "hpcml.cli", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr or ()), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"hpcml did not say {text!r}:\n{''.join(self.err)}")
            time.sleep(0.2)

    def finish(self, timeout: float = 900) -> tuple[int, str, str]:
        out = self.proc.stdout.read() if self.proc.stdout else ""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.err)


def hpcml(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    return Child(args, env).finish()


class Bench:
    def __init__(self, root: Path):
        self.root = root
        apptainer = testbed_status("apptainer")["apptainer"]
        self.base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HPCML_")},
            "HPCML_CATALOGS": str(root / "cat"), "HPCML_CACHE_DIR": str(root / "cache"),
            "HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent",
            "HPCML_EXEC_FLAGS": " ".join(apptainer["exec_flags"]),
            "HPCML_BUILD_FLAGS": " ".join(apptainer["build_flags"]), "HPCML_APPTAINER": apptainer["binary"],
        }

    def workflow(self, where: Path, name: str, steps: str) -> Path:
        return write_busybox_workflow(where, name, steps)

    def env(self, wait_s: int = 300, **extra: str) -> dict[str, str]:
        return {**self.base, "HPCML_SLURM_WAIT_S": str(wait_s), **extra}

    def count(self, path: Path, env: dict[str, str]) -> tuple[int, int, int]:
        """(completed, lost, duplicated) of the workflow's latest run, and the task files."""
        doc = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])
        completed = sum(t["state"] in ("completed", "cached") for t in doc["tasks"])
        runs = [len(p.read_text().splitlines()) for p in (path.parent / ".hpcml" / "tasks").glob("*/*/out/ran")]
        return completed, len(doc["tasks"]) - completed, sum(max(0, n - 1) for n in runs)


def last_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("hpcml: error:")]
    return lines[-1].removeprefix("hpcml: ") if lines else ""


def short(text: str, n: int = 150) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- scenarios -------------------------------------------------------------------------


def full_disk(b: Bench) -> Row:
    disk = b.root / "small-fs"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8192k", "hpcml-bench-full", str(disk)], check=True)
    try:
        steps = "prep:\n  run: echo x >> {out}/ran\nsweep:\n  needs: [prep]\n  matrix: {i: {range: [0, 60]}}\n" \
                "  run: echo x >> {out}/ran\n"
        path = b.workflow(disk / "wf", "fault-disk", steps)
        env = b.env()
        hpcml(["build", str(path)], env)
        st = os.statvfs(disk)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - 256 * 1024))
        code, _out, err = hpcml(["run", str(path), "--executor", "slurm", "--detach"], env)
        time.sleep(20)
        temps = [p for p in (path.parent / ".hpcml" / "tasks").rglob("*") if ".tmp." in p.name]
        filler.unlink()
        hpcml(["run", str(path), "--executor", "slurm", "--watch"], env)
        done = b.count(path, env)
        return Row("the run directory's file system full (8 MiB tmpfs) while submitting; space freed, rerun",
                   f"exit {code}: “{short(last_error(err).replace(str(b.root), '$TMP'), 400)}”; wrapper temporary "
                   f"files left: {len(temps)}", *done)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def job_limit(b: Bench) -> Row:
    fake = b.root / "fake_sbatch_qos_limit"
    fake.mkdir()
    real = shutil.which("sbatch")
    (fake / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/bash
        # fake_sbatch_qos_limit: the first 2 submissions are real, then the QOS limit answers
        if [[ " $* " == *" --parsable "* ]]; then
          n=$(( $(cat {fake}/submitted 2>/dev/null || echo 0) + 1 )); echo "$n" > {fake}/submitted
          if (( n > 2 )); then
            echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2
            echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" >&2
            exit 1
          fi
        fi
        exec {real} "$@"
        """))
    (fake / "sbatch").chmod(0o755)
    steps = "".join(f"{s}:\n{'  needs: [' + p + ']' + chr(10) if p else ''}  run: echo x >> {{out}}/ran\n"
                    for s, p in (("a", ""), ("b", "a"), ("c", "b"), ("d", "c")))
    path = b.workflow(b.root / "j1", "fault-limit", steps)
    env = b.env(PATH=f"{fake}:{os.environ['PATH']}")
    started = time.monotonic()
    code, _out, err = hpcml(["run", str(path), "--executor", "slurm", "--detach"], env)
    took = time.monotonic() - started
    time.sleep(15)
    states = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])["counts"]
    (fake / "submitted").write_text("0\n")
    hpcml(["run", str(path), "--executor", "slurm", "--watch"], env)
    return Row("the cluster's job limit (QOSMaxSubmitJobPerUserLimit, FAKE sbatch) after 2 of 4 jobs; then room, rerun",
               f"after {took:.0f} s, exit {code}: “{short(last_error(err), 130)}”; the 2 others "
               f"`not submitted` ({states})", *b.count(path, env))


PREEMPT_STEPS = """\
ckpt:
  resources: {partition: low}
  retries: 0
  checkpoint: {signal: USR1, grace: 15}
  run: |
    if [ -f {out}/n ]; then echo "resumed $(cat {out}/n)" > {out}/result; exit 0; fi
    echo x >> {out}/ran
    n=0
    trap 'echo $n > {out}/n; exit 99' USR1
    touch {out}/started
    while [ $n -lt 600 ]; do n=$((n+1)); sleep 1; done
plain:
  resources: {partition: low}
  retries: 0
  run: |
    echo x >> {out}/ran
    touch {out}/started
    if [ "$(wc -l < {out}/ran)" -ge 2 ]; then exit 0; fi
    sleep 600
"""


def preemption(b: Bench) -> Row:
    # The checkpointing task appends to `ran` only when it starts from scratch: a resume is
    # not a duplicate. The plain one must rerun from scratch (by design): 1 duplicate.
    path = b.workflow(b.root / "p1", "fault-preempt", PREEMPT_STEPS)
    env = b.env()
    t0 = time.monotonic()
    hpcml(["run", str(path), "--detach", "--executor", "slurm"], env)
    tasks = path.parent / ".hpcml" / "tasks"
    deadline = time.monotonic() + 600
    while len(list(tasks.glob("*/*/out/started"))) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("the low tasks never started (is the node busy with other jobs?)")
        time.sleep(1)
    time.sleep(2)
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "-c", "2", "--mem=100M", "-J", "hpcml-bench-high",
                           "-o", "/dev/null", "--wrap", "sleep 2"], capture_output=True, text=True, check=True)
    preempted_at = time.monotonic()
    labels: set[str] = set()
    while True:
        doc = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])
        labels |= {f"{t['state']} (preempted ×{t['preempted']})" if t["preempted"] else t["state"] for t in doc["tasks"]}
        if doc["finished"] or time.monotonic() > preempted_at + 600:
            break
        time.sleep(1)
    back = time.monotonic() - preempted_at
    subprocess.run(["scancel", high.stdout.strip().split(";")[0]], capture_output=True)
    table = hpcml(["status", "--workflow", str(path)], env)[1]
    final = sorted(set(re.findall(r"\d+ \w+ \(preempted ×\d+\)", table)))
    shown = ", ".join(f"`{s}`" for s in sorted(labels - {"running"}))
    ckpt, plain = (next(tasks.glob(f"{step}/*")) for step in ("ckpt", "plain"))
    saved = (ckpt / "out" / "n").read_text().strip() if (ckpt / "out" / "n").exists() else "?"
    resumed = (ckpt / "out" / "result").read_text().strip() if (ckpt / "out" / "result").exists() else "did not resume"
    plain_runs = len((plain / "out" / "ran").read_text().splitlines())
    spent = sum(int((t / "tries").read_text()) for t in (ckpt, plain) if (t / "tries").exists())
    return Row("a `high`-partition job takes the node from a run on partition `low` (PreemptMode=REQUEUE, "
               "GraceTime 20 s): one checkpointing and one plain task, `retries: 0`",
               f"status while waiting and after: {shown}; each step's row: {', '.join(final) or '?'}; the "
               f"checkpointing task saved n={saved} and {resumed}, the plain one ran {plain_runs} times from "
               f"scratch; retries spent: {spent}; {back:.0f} s from the preemption to both completed "
               f"({time.monotonic() - t0:.0f} s in all)",
               *b.count(path, env))


# ---- real daemon faults (tests/integration/test_daemon_faults.py): the daemons really stop;
# run under `flock -x /tmp/hpcml-testbed.lock`, as they are shared.


def _daemons() -> Daemons:
    return Daemons(testbed_status("slurm")["slurm"]["node"])


def _journaled(path: Path) -> bool:
    journals = (path.parent / ".hpcml" / "runs").glob("*/journal.jsonl")
    return any('"event": "submitted"' in j.read_text() for j in journals)


def slurmctld_stopped(b: Bench) -> Row:
    chain = "".join(f"s{i}:\n{'  needs: [s' + str(i - 1) + ']' + chr(10) if i else ''}  run: echo x >> {{out}}/ran\n"
                    for i in range(6)) + "fan:\n  needs: [s5]\n  matrix: {i: [1, 2, 3]}\n  run: echo x >> {out}/ran\n"
    watched = b.workflow(b.root / "d1w", "fault-dctl-watched", STEPS.format(sleep=40))
    submitting = b.workflow(b.root / "d1s", "fault-dctl-submit", chain)
    late = b.workflow(b.root / "d1l", "fault-dctl-late", STEPS.format(sleep=1))
    gives_up = b.workflow(b.root / "d1q", "fault-dctl-quit", STEPS.format(sleep=1))
    env, daemons = b.env(), _daemons()
    try:
        watcher = Child(["run", str(watched), "--watch", "--executor", "slurm"], env)
        watcher.wait_for("submitted sweep: job")
        follower = Child(["status", "--watch", "--workflow", str(watched)], env)
        time.sleep(5)
        sub = Child(["run", str(submitting), "--watch", "--executor", "slurm"], env)
        end = time.monotonic() + 120
        while not _journaled(submitting) and time.monotonic() < end:
            time.sleep(0.02)
        daemons.stop_controller()
        stopped = time.monotonic()
        starter = Child(["run", str(late), "--watch", "--executor", "slurm"], env)
        quitter = Child(["run", str(gives_up), "--detach"], b.env(wait_s=20))
        for child in (sub, watcher, follower, starter):
            child.wait_for("slurmctld does not answer (")
        quit_code, _out, quit_err = quitter.finish()
        time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
        daemons.start_controller()
        outcomes = [c.finish() for c in (sub, watcher, follower, starter)]
    finally:
        daemons.restore()
    local = (gives_up.parent / ".hpcml" / "tasks").exists()
    hpcml(["run", str(gives_up), "--watch"], env)  # the user's rerun once it answers
    done = [b.count(p, env) for p in (submitting, watched, late, gives_up)]
    mid = "mid-submission" if "(submitting hpcml." in outcomes[0][2] else "after submission"
    return Row("slurmctld stopped (SIGTERM) for 60 s: while `hpcml run --watch` submits a 9-task run, while "
               "`run --watch` and `status --watch` follow a running job, when a `run --watch` starts, and when a "
               "`run` without `--executor` starts with `slurm_wait_s` 20 s (rerun once it answers)",
               f"each of the first four: `slurmctld does not answer (…); waiting for it up to 5 min (submitting …/"
               f"following the run/before submitting)`, then `slurmctld answers again after …`; exits "
               f"{', '.join(str(o[0]) for o in outcomes)} (the stop came {mid}); the last: exit {quit_code}, "
               f"“{short(last_error(quit_err), 110)}”, tasks run on the login node: {'yes' if local else 'none'}",
               *(sum(d[i] for d in done) for i in range(3)))


def slurmdbd_stopped(b: Bench) -> Row:
    steps = ("sweep:\n  matrix: {i: [1, 2, 3]}\n  run: |\n    echo x >> {out}/ran\n"
             "    if [ {i} = 2 ]; then exit 3; fi\n    if [ {i} = 3 ]; then sleep 300; fi\n")
    path = b.workflow(b.root / "d2", "fault-dbd", steps)
    env, daemons = b.env(), _daemons()
    seen: list[str] = []
    try:
        daemons.stop_accounting()
        child = Child(["run", str(path), "--watch", "--executor", "slurm"], env)
        end = time.monotonic() + 180
        while time.monotonic() < end:  # task 3 killed by SIGKILL, as an OOM killer would: no exit code
            try:
                task3 = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])["tasks"][2]
            except json.JSONDecodeError:  # no run yet
                time.sleep(1)
                continue
            started = (path.parent / ".hpcml" / "tasks" / "sweep" / task3["key"] / "out" / "ran").exists()
            if task3["state"] == "running" and started:
                subprocess.run(["scancel", "--signal=KILL", "--batch", task3["job"]], check=True)
                break
            time.sleep(1)
        code, _out, _err = child.finish()
        tasks = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])["tasks"]
        jobs = {t["job"].split("_")[0] for t in tasks}
        end = time.monotonic() + int(testbed_status("slurm")["slurm"]["min_job_age"]) + 300
        while any(subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", j, "-o", "%i"], capture_output=True,
                                 text=True).stdout.strip() for j in jobs) and time.monotonic() < end:
            time.sleep(10)
        doc = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])
        seen += ["note: " + " ".join(doc["notes"]), "{state} ({detail})".format(**doc["tasks"][2])]
        daemons.start_accounting()
        back = time.monotonic()
        while True:  # slurmctld sends the records it kept a little after slurmdbd answers
            doc = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])
            if doc["tasks"][2]["state"] != "lost" or time.monotonic() - back > 180:
                break
            time.sleep(2)
        task3 = doc["tasks"][2]
        seen.append(f"after {time.monotonic() - back:.0f} s: {task3['state']} ({task3['detail']}); "
                    f"notes: {len(doc['notes'])}")
    finally:
        daemons.restore()
    seen = [text.replace("`", "") for text in seen]  # inside the row's code spans
    return Row("slurmdbd stopped for a whole run and until its jobs left squeue (by design task 2 exits 3 and task 3 "
               "is SIGKILLed: the 2 not completed)",
               f"`run --watch` exit {code}, states from squeue; once squeue forgot the jobs: “{short(seen[0], 200)}”, "
               f"task 3 `{short(seen[1], 120)}`; slurmdbd back: task 3 `{short(seen[2], 200)}`", *b.count(path, env))


def node_failure(b: Bench) -> Row:
    steps = ("long:\n  resources: {partition: multi, time: 5m, cpus: 1, mem: 100M}\n"
             "  run: echo x >> {out}/ran; sleep 45; echo x >> {out}/done\n")
    path = b.workflow(b.root / "d3", "fault-node", steps)
    env, daemons = b.env(), _daemons()
    try:
        child = Child(["run", str(path), "--watch", "--executor", "slurm"], env)
        child.wait_for("submitted long: job")
        end = time.monotonic() + 180
        while not list((path.parent / ".hpcml" / "tasks" / "long").glob("*/out/ran")) and time.monotonic() < end:
            time.sleep(0.5)
        job = json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])["tasks"][0]["job"]
        node = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True).stdout.strip()
        killed = time.monotonic()
        daemons.kill_node(node, [job])
        code, _out, err = child.finish()
        took = time.monotonic() - killed
        daemons.start_node(node)
    finally:
        daemons.restore()
    states = subprocess.run(["sacct", "-X", "--duplicates", "-n", "-P", "-j", job, "-o", "State"], capture_output=True,
                            text=True).stdout.split()
    done_lines = sum(len(p.read_text().splitlines()) for p in (path.parent / ".hpcml" / "tasks").glob("*/*/out/done"))
    completed, lost, _dup = b.count(path, env)
    return Row("a `multi` node fails (SIGKILL to its slurmd and the job's processes) under a running job",
               f"the job ends NODE_FAIL, SLURM requeues it on the other node (sacct: {' → '.join(states)}); "
               f"`run --watch` exit {code} {took:.0f} s after the failure; the killed attempt's line is in out/ran, "
               "the rerun finished once", completed, lost, max(0, done_lines - 1))


def kill9_trials(b: Bench, trials: int = 24) -> Row:
    """kill -9 of `hpcml run` at random moments of a 1,000-task sweep (as
    test_kill9_trials.py does): per trial, the job instances of every task after a rerun."""
    import random
    from collections import Counter

    import kill9

    seed = random.SystemRandom().randrange(10**6)
    env = b.env()
    kill9.timed_submission(kill9.write_workflow(b.root / "k9cal", f"k9cal-{seed}"), env)  # builds the image
    took = kill9.timed_submission(kill9.write_workflow(b.root / "k9cal2", f"k9cal2-{seed}"), env)
    rng = random.Random(seed)
    done = [kill9.run_trial(n, random.Random(rng.random()), kill9.write_workflow(b.root / f"k9-{n}", f"k9-{n}-{seed}"),
                            env, mode, took * 1.1 if mode == "detach" else took + 3)
            for n, mode in ((n, "detach" if n % 2 else "watch") for n in range(1, trials + 1))]
    print(kill9.table(done), file=sys.stderr)
    moments = Counter(t.moment.split(",")[0] if t.killed else "had exited" for t in done)
    tasks = sum(t.tasks for t in done)
    return Row(f"`kill -9` of `hpcml run` at a random moment of a 1,000-task sweep (+ gate and merge tasks), "
               f"{trials} trials (half `--detach`, half watching; seed {seed}; an unkilled submission takes "
               f"{took:.1f} s); rerun `hpcml run --detach`",
               f"every rerun exit 0 ({sum(t.reruns for t in done)} reruns in all); kills fell at: "
               + ", ".join(f"{k} ×{v}" for k, v in moments.most_common())
               + "; then the job instances of every task, counted with squeue -r and sacct (lost: none; duplicated: "
               "extra instances)",
               f"not run: held behind the gate, cancelled after counting ({tasks} tasks)",
               sum(t.lost for t in done), sum(t.duplicated for t in done))


def kill9_run_through(b: Bench) -> Row:
    """One kill -9 trial, mid-submission (once the gate's job is journalled), whose 1,000-task
    sweep then runs to the end (the gate lasts 1 s):
    every task's command ran exactly once (one line in its out/ran) and sacct holds one
    COMPLETED instance per task. ~25 minutes: the testbed starts about one array task a second."""
    import random

    import kill9

    seed = random.SystemRandom().randrange(10**6)
    env = b.env()
    took = kill9.timed_submission(kill9.write_workflow(b.root / "k9run-cal", f"k9run-cal-{seed}", gate_s=1), env)
    name = f"k9run-{seed}"
    path = kill9.write_workflow(b.root / "k9run", name, gate_s=1)
    # Killed mid-submission: once the gate's job is journalled, while the sweep's is on its way.
    trial = kill9.run_trial(1, random.Random(seed), path, env, "detach", took, keep=True,
                            at=("submitted gate", "intent sweep"))
    t0 = time.monotonic()
    while not json.loads(hpcml(["status", "--json", "--workflow", str(path)], env)[1])["finished"]:
        if time.monotonic() - t0 > 3600:
            kill9.cancel_workflow(path.parent, name)
            raise SystemExit(f"{name}: not finished after an hour")
        time.sleep(30)
    ran_for = time.monotonic() - t0
    per_task = kill9.wait_for_accounting(path.parent, name, timeout=120)
    jobs = ",".join(sorted(kill9.journalled(path.parent)))
    done = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-j", jobs, "-o", "JobName,State"],
                          capture_output=True, text=True).stdout.split()
    completed_instances = sum(1 for row in done if row.startswith(f"hpcml.{name}.") and row.endswith("|COMPLETED"))
    completed, lost, duplicated = b.count(path, env)
    return Row("`kill -9` of `hpcml run --detach` in the middle of submitting a 1,000-task sweep (+ gate and "
               "merge tasks) whose tasks then run; rerun `hpcml run --detach`, wait for the end",
               f"killed after {trial.delay_s:.1f} s, at: {trial.moment if trial.killed else 'had exited'}; "
               f"rerun exit 0 after {trial.reruns} call(s); job instances per task after the rerun: lost {trial.lost}, duplicated {trial.duplicated}; "
               f"all tasks ended {ran_for / 60:.0f} min later; sacct: {completed_instances} COMPLETED instances "
               f"for {len(per_task)} tasks, {sum(max(0, n - 1) for n in per_task.values())} extra",
               completed, lost, duplicated)


def kill9_slow_sbatch(b: Bench) -> Row:
    """kill -9 of `hpcml run` while its sbatch waits on a slow controller (FAKE sbatch, 4 s),
    then an immediate rerun (as test_kill9_trials.py does)."""
    import kill9

    kill9.timed_submission(kill9.write_workflow(b.root / "k9s-cal", f"k9s-cal-{os.getpid()}"), b.env())  # the image
    rerun, per_task = kill9.slow_sbatch_trial(b.root, b.env(), f"k9-slow-{os.getpid()}")
    said = next((line.removeprefix("hpcml: ") for line in rerun.stderr.splitlines() if "an sbatch left" in line), "")
    said = said.replace(str(b.root), "$TMP")
    return Row("`kill -9` of `hpcml run` while its sbatch of the 1,000-task sweep waits on a slow controller "
               "(FAKE sbatch answering after 4 s); immediate rerun `hpcml run --detach`",
               f"exit {rerun.returncode}: “{short(said, 200)}”; the sweep's job, created by the killed run's "
               "sbatch after the rerun started, is adopted",
               f"not run: held behind the gate ({len(per_task)} tasks)",
               sum(1 for n in per_task.values() if n == 0), sum(max(0, n - 1) for n in per_task.values()))


#: Fakes of an sbatch that queues the job, then loses the answer (first call only).
LYING_SBATCH = {
    "fake_sbatch_error": 'echo "sbatch: error: Batch job submission failed: Unexpected message received" >&2; exit 1',
    "fake_sbatch_hang": "exec sleep 300",
    "fake_sbatch_socket_timeout":
        'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1',
}


def lying_sbatch(b: Bench) -> Row:
    children = []
    for name, then in LYING_SBATCH.items():
        fake = b.root / name
        fake.mkdir()
        real = shutil.which("sbatch")
        (fake / "sbatch").write_text(textwrap.dedent(f"""\
            #!/bin/bash
            # {name}: the job is queued, then the answer is lost (first call only)
            if [[ " $* " == *" --parsable "* && ! -e {fake}/tripped ]]; then
              touch {fake}/tripped
              {real} "$@" >/dev/null
              {then}
            fi
            exec {real} "$@"
            """))
        (fake / "sbatch").chmod(0o755)
        path = b.workflow(b.root / f"l-{name}", f"fault-{name.replace('_', '-')}", STEPS.format(sleep=1))
        env = b.env(PATH=f"{fake}:{os.environ['PATH']}", HPCML_SBATCH_TIMEOUT_S="10")
        children.append((path, env, time.monotonic(), Child(["run", str(path), "--watch", "--executor", "slurm"], env)))
    codes, took, adopted, totals = [], [], 0, [0, 0, 0]
    for path, env, started, child in children:
        code, _out, err = child.finish()
        codes.append(code)
        took.append(time.monotonic() - started)
        adopted += "exists: adopting it" in err
        totals = [t + n for t, n in zip(totals, b.count(path, env))]
    return Row("sbatch queues the job, then exits 1 with an unknown error / hangs past `sbatch_timeout_s` (10 s) / "
               "reports a socket time-out (3 FAKE sbatch, 3 runs of 3 tasks)",
               f"a warning `sbatch of hpcml.… failed [ambiguously] but job N exists: adopting it` in {adopted} of 3; exit codes {codes}; "
               f"runs took {', '.join(f'{t:.0f}' for t in took)} s", *totals)


def read_only_catalog(b: Bench) -> Row:
    where = b.root / "ro"
    where.mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", where / "busybox")
    extra = "  extra:\n    from: scratch\n    shell: sh\n    files: {busybox: /bin/sh}\n" \
            "    post: |\n      /bin/sh --install -s /bin\n      echo extra > /extra\n"
    text = BUSYBOX_WORKFLOW.format(name="fault-ro-catalog").replace("defaults:", extra + "defaults:")
    path = where / "workflow.yaml"
    path.write_text(text + textwrap.indent(STEPS.format(sleep=1) + "late:\n  needs: [sweep]\n  image: extra\n"
                                           "  run: cat /extra >> {out}/ran\n", "  "))
    source, lab, user = b.root / "lab-rw", b.root / "lab", b.root / "user-cat"
    lab.mkdir()
    hpcml(["build", str(path), "bb"], b.env(HPCML_CATALOGS=str(source)))
    subprocess.run(["mount", "--bind", str(source), str(lab)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(lab)], check=True)
        before = sorted(lab.rglob("*"))
        env = b.env(HPCML_CATALOGS=f"{lab}:{user}")
        code, _out, err = hpcml(["run", str(path), "--watch", "--executor", "slurm"], env)
        built = [line.split(":")[1].split()[1] for line in err.splitlines() if ": building (" in line]
        push, _o, perr = hpcml(["catalog", "push", "extra", "--to", str(lab)], env)
        written = len(set(lab.rglob("*")) - set(before))
        return Row("the lab catalog on a read-only mount (first in `catalogs`, a writable one after it); one of "
                   "the 2 images is in it",
                   f"exit {code}; built: {', '.join(built) or 'none'} (into the writable catalog); files written "
                   f"in the read-only one: {written}; tracebacks: {err.count('Traceback')}; `catalog push --to` "
                   f"it: exit {push}, “{short(last_error(perr).replace(str(b.root), '$TMP'), 150)}”",
                   *b.count(path, env))
    finally:
        subprocess.run(["umount", "-l", str(lab)], capture_output=True)


SCENARIOS: dict[str, Callable[[Bench], Row]] = {
    "full-disk": full_disk,
    "job-limit": job_limit,
    "preemption": preemption,
    "slurmctld-stopped": slurmctld_stopped,
    "slurmdbd-stopped": slurmdbd_stopped,
    "node-failure": node_failure,
    "kill9": kill9_trials,
    "kill9-slow-sbatch": kill9_slow_sbatch,
    "kill9-run-through": kill9_run_through,
    "lying-sbatch": lying_sbatch,
    "read-only-catalog": read_only_catalog,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="leave out the slow scenarios (slurmdbd-stopped waits for MinJobAge; kill9-run-through "
                             "runs 1,002 tasks)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    names = args.only or [n for n in SCENARIOS if not (args.quick and n in ("slurmdbd-stopped", "kill9-run-through"))]
    print("| scenario | what the user sees | completed | lost | duplicated |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-faults-") as tmp:
        bench = Bench(Path(tmp))
        for name in names:
            t0 = time.monotonic()
            row = SCENARIOS[name](bench)
            print(f"| {row.scenario} | {row.sees} | {row.completed} | {row.lost} | {row.duplicated} |", flush=True)
            print(f"  ({name}: {time.monotonic() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
