"""Faults on the real SLURM testbed, and what each does to a run: the table of docs/reliability.md.

Each scenario runs the real `hpcml` CLI on a tiny busybox workflow, injects its fault for
real (as tests/integration/test_slurm_outage.py, test_full_disk.py and
test_job_limit_slurm.py do), recovers the way the user would, and counts the tasks:
completed (status completed/cached at the end), lost (not), duplicated (extra runs of a
task's command, each appending to its out/ran). Prints one markdown row per scenario.

- controller faults: the hpcml processes read a private copy of slurm.conf whose
  SlurmctldPort is switched to a closed loopback port and back (the shared slurmctld keeps
  running; the client commands really fail with "Unable to contact slurm controller");
- accounting down: the same copy with AccountingStoragePort closed, for `status` of a run
  whose jobs have left squeue (waits MinJobAge, ~6 minutes; `--quick` leaves it out);
- full disk: the workflow directory on a small tmpfs, nearly filled (needs root);
- job limit: a FAKE sbatch answering QOSMaxSubmitJobPerUserLimit after two submissions
  (the shared testbed does not enforce accounting limits; enforcing needs a restart);
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

from testbed import ClientSlurmConf, testbed_status  # noqa: E402 - the tests' helpers, after the path

STEPS = """\
first:
  run: echo x >> {{out}}/ran; sleep {sleep}
sweep:
  needs: [first]
  matrix: {{i: [1, 2]}}
  run: echo x >> {{out}}/ran
"""

IMAGE = """\
hpcml: 1
name: {name}
images:
  bb:
    from: scratch
    shell: sh
    files: {{busybox: /bin/sh}}
    post: |
      /bin/sh --install -s /bin
defaults:
  image: bb
  resources: {{time: 5m, cpus: 1, mem: 100M}}
steps:
"""


@dataclass(frozen=True)
class Row:
    scenario: str
    sees: str
    completed: int
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
        self.conf_source = Path(testbed_status("slurm")["slurm"]["conf"])
        self.base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HPCML_")},
            "HPCML_CATALOGS": str(root / "cat"), "HPCML_CACHE_DIR": str(root / "cache"),
            "HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent",
            "HPCML_EXEC_FLAGS": " ".join(apptainer["exec_flags"]),
            "HPCML_BUILD_FLAGS": " ".join(apptainer["build_flags"]), "HPCML_APPTAINER": apptainer["binary"],
        }

    def workflow(self, where: Path, name: str, steps: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        shutil.copy(shutil.which("busybox") or "/bin/busybox", where / "busybox")
        path = where / "workflow.yaml"
        path.write_text(IMAGE.format(name=name) + textwrap.indent(steps, "  "))
        return path

    def conf(self, name: str) -> ClientSlurmConf:
        return ClientSlurmConf(self.conf_source, self.root / f"conf-{name}")

    def env(self, conf: ClientSlurmConf | None = None, wait_s: int = 300, **extra: str) -> dict[str, str]:
        return {**self.base, **(conf.env() if conf else {}), "HPCML_SLURM_WAIT_S": str(wait_s), **extra}

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


def controller_down_at_start(b: Bench) -> Row:
    path = b.workflow(b.root / "c1", "fault-ctl-start", STEPS.format(sleep=1))
    conf = b.conf("c1")
    conf.cut_controller()
    code, _out, err = hpcml(["run", str(path), "--detach"], b.env(conf, wait_s=20))
    local = (path.parent / ".hpcml" / "tasks").exists()
    conf.restore()
    hpcml(["run", str(path), "--watch"], b.env(conf))
    done = b.count(path, b.env(conf))
    return Row("slurmctld unreachable when `hpcml run` starts (no `--executor`), for longer than `slurm_wait_s` (20 s)",
               f"`executor: slurm (… does not answer now; waiting for it)`, a note, then exit {code}: "
               f"“{short(last_error(err), 110)}”; tasks run on the login node: {'yes' if local else 'none'}. "
               "Rerun once it answers", *done)


def controller_back_before_submit(b: Bench) -> Row:
    path = b.workflow(b.root / "c2", "fault-ctl-back", STEPS.format(sleep=1))
    conf = b.conf("c2")
    conf.cut_controller()
    child = Child(["run", str(path), "--watch", "--executor", "slurm"], b.env(conf))
    child.wait_for("slurmctld does not answer (")
    time.sleep(20)
    conf.restore()
    code, _out, err = child.finish()
    return Row("slurmctld unreachable for ~30 s when `hpcml run --watch` starts",
               f"`slurmctld does not answer (…); waiting for it up to 5 min (before submitting)…`, then "
               f"`slurmctld answers again after …`; exit {code}", *b.count(path, b.env(conf)))


def controller_down_while_watching(b: Bench, watcher: str) -> Row:
    name = "c3" if watcher == "run" else "c4"
    path = b.workflow(b.root / name, f"fault-ctl-{name}", STEPS.format(sleep=30))
    conf = b.conf(name)
    env = b.env(conf)
    if watcher == "run":
        child = Child(["run", str(path), "--watch", "--executor", "slurm"], env)
        child.wait_for("submitted sweep: job")
    else:
        hpcml(["run", str(path), "--detach", "--executor", "slurm"], env)
        child = Child(["status", "--watch", "--workflow", str(path)], env)
        time.sleep(2)
    conf.cut_controller()
    child.wait_for("slurmctld does not answer (")
    time.sleep(40)
    conf.restore()
    code, _out, err = child.finish()
    what = "`hpcml run --watch`" if watcher == "run" else "`hpcml status --watch` of a detached run"
    return Row(f"slurmctld unreachable for ~60 s during {what}",
               f"`slurmctld does not answer (…); waiting for it up to 5 min (following the run); queued jobs keep "
               f"running meanwhile`, then `answers again`; exit {code}", *b.count(path, env))


def accounting_down(b: Bench) -> Row:
    steps = "sweep:\n  matrix: {i: [1, 2, 3]}\n  run: echo x >> {out}/ran\n"
    path = b.workflow(b.root / "a1", "fault-acct", steps)
    conf = b.conf("a1")
    env = b.env(conf)
    out = hpcml(["run", str(path), "--detach", "--executor", "slurm"], env)[1]
    job = next(w.split("=", 1)[1] for w in out.split() if w.startswith("sweep="))
    min_age = int(testbed_status("slurm")["slurm"]["min_job_age"])
    deadline = time.monotonic() + min_age + 300
    while subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i"], capture_output=True,
                         text=True).stdout.strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job} still in squeue")
        time.sleep(10)
    conf.cut_accounting()
    code, out, err = hpcml(["status", "--workflow", str(path)], env)
    note = next((line for line in out.splitlines() if line.startswith("note:")), "")
    done = b.count(path, env)
    conf.restore()
    return Row("accounting (slurmdbd) unreachable; `hpcml status` of a run whose jobs have left squeue",
               f"the table from the exit-code files, exit {code}, and “{short(note, 240)}”", *done)


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
    text = IMAGE.format(name="fault-ro-catalog").replace("defaults:", extra + "defaults:")
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
    "controller-start": controller_down_at_start,
    "controller-back": controller_back_before_submit,
    "controller-run-watch": lambda b: controller_down_while_watching(b, "run"),
    "controller-status-watch": lambda b: controller_down_while_watching(b, "status"),
    "accounting": accounting_down,
    "full-disk": full_disk,
    "job-limit": job_limit,
    "lying-sbatch": lying_sbatch,
    "read-only-catalog": read_only_catalog,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the accounting scenario (~6 minutes)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    names = args.only or [n for n in SCENARIOS if not (args.quick and n == "accounting")]
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
