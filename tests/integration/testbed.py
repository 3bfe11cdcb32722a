"""Helpers and types for the integration tier; the fixtures themselves are in conftest.py.

Test modules import the types for annotations: `from testbed import SlurmCluster`
(pytest puts this directory on sys.path, as tests/integration has no __init__.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from hpcml.clients.runner import Completed, LocalRunner

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "slurm" / "testbed"
BUSYBOX_DEF = TESTBED / "busybox.def"
REQUIRE = os.environ.get("HPCML_REQUIRE_TESTBED") == "1"
SIF_CACHE = Path("/var/cache/hpcml-testbed/sifs")
MODES = ("accounting", "no-accounting")

_runner = LocalRunner()

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

#: The head of the tiny workflow most testbed tests and the fault bench run: one `scratch`
#: image holding busybox (copied next to the workflow), small default resources.
BUSYBOX_WORKFLOW = """\
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


def write_busybox_workflow(root: Path, name: str, steps: str) -> Path:
    """`root/workflow.yaml`: BUSYBOX_WORKFLOW with `steps` (dedented, then indented under
    `steps:`), and the busybox its image copies in."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, root / "busybox")
    path = root / "workflow.yaml"
    path.write_text(BUSYBOX_WORKFLOW.format(name=name) + textwrap.indent(textwrap.dedent(steps), "  "))
    return path


def run_quietly(argv: list[str], timeout: float) -> Completed:
    """Run argv through hpcml's LocalRunner (fixtures' own housekeeping commands)."""
    return _runner.run(argv, timeout=timeout)


def testbed_unavailable(reason: str) -> NoReturn:
    """Skip the test with `reason`, or fail it when HPCML_REQUIRE_TESTBED=1 (CI)."""
    if REQUIRE:
        pytest.fail(f"testbed required (HPCML_REQUIRE_TESTBED=1) but {reason}", pytrace=False)
    pytest.skip(f"testbed: {reason}")


def can_provision() -> str | None:
    """None when this machine can run slurm/testbed/up (root on Debian), else why not."""
    if os.geteuid() != 0:
        return "not root, so slurm/testbed/up cannot start it (run `sudo slurm/testbed/up`)"
    if not Path("/etc/debian_version").exists():
        return "not Debian, so slurm/testbed/up cannot provision it"
    return None


def testbed_status(only: str | None = None) -> dict:
    """The parsed `slurm/testbed/status --json` (exit status ignored: it is in `all_up`)."""
    argv = [str(TESTBED / "status"), "--json"] + (["--only", only] if only else [])
    done = _runner.run(argv, timeout=60)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        testbed_unavailable(f"`{shlex.join(argv)}` failed: {done.tail()}")


def ensure_up(part: str, mode: str = "accounting") -> dict:
    """Make sure testbed part `part` runs (in `mode` for slurm); return the status JSON."""
    status = testbed_status(part)
    if status["all_up"] and (part != "slurm" or status["mode"] == mode):
        return status
    why_not = can_provision()
    if why_not:
        down = [name for name, up in status["components"].items() if not up]
        testbed_unavailable(f"{', '.join(down) or part} not running, and {why_not}")
    argv = [str(TESTBED / "up"), "--only", part]
    if part == "slurm" and mode == "no-accounting":
        argv.append("--no-accounting")
    done = _runner.run(argv, timeout=900)
    if not done.ok:
        testbed_unavailable(f"`{shlex.join(argv)}` failed (logs in /var/log/hpcml-testbed):\n{done.tail()}")
    return testbed_status(part)


# ------------------------------------------------------------------ apptainer


@dataclass(frozen=True)
class Apptainer:
    """The testbed's Apptainer and the flags that work here.

    Root on the test machines lacks CAP_SYS_RESOURCE: images are built with `--fakeroot`
    and run with `--userns`. hpcml gets these flags from its configuration; tests pass
    them explicitly (`build_argv`, `exec_argv`).
    """

    binary: str
    version: str
    build_flags: tuple[str, ...]
    exec_flags: tuple[str, ...]

    def build_argv(self, sif: Path, definition: Path) -> list[str]:
        """argv of `apptainer build` of `definition` into `sif` with the working flags."""
        return [self.binary, "build", *self.build_flags, str(sif), str(definition)]

    def exec_argv(self, sif: Path, *command: str, nv: bool = False) -> list[str]:
        """argv of `apptainer exec` of `command` in `sif` (with --nv when `nv`)."""
        return [self.binary, "-s", "exec", *self.exec_flags, *(["--nv"] if nv else []), str(sif), *command]

    def build(self, sif: Path, definition: Path) -> Completed:
        """Build `definition` into `sif`; fail the test with apptainer's output on error."""
        done = _runner.run(self.build_argv(sif, definition), timeout=900)
        assert done.ok, f"apptainer build of {definition} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done


@dataclass(frozen=True)
class SifCache:
    """Tiny base SIFs built once and kept by content: `<sha256(def text + version)>.sif`.

    Lives in /var/cache/hpcml-testbed/sifs so it survives across sessions; falls back to a
    session temp dir when that is not writable. Publishing is atomic (temp file + replace),
    so concurrent sessions at worst build the same image twice.
    """

    apptainer: Apptainer
    root: Path

    def get(self, definition_text: str, name: str = "image") -> Path:
        """The SIF built from `definition_text` (built now if not cached)."""
        key = hashlib.sha256((self.apptainer.version + "\n" + definition_text).encode()).hexdigest()[:32]
        sif = self.root / f"{name}-{key}.sif"
        if sif.exists():
            return sif
        work = self.root / f".build-{key}-{os.getpid()}"
        work.mkdir(parents=True, exist_ok=True)
        try:
            (work / "image.def").write_text(definition_text, encoding="utf-8")
            self.apptainer.build(work / "image.sif", work / "image.def")
            os.replace(work / "image.sif", sif)
        finally:
            for leftover in work.iterdir():
                leftover.unlink()
            work.rmdir()
        return sif


# ------------------------------------------------------------------ slurm

FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)


@dataclass(frozen=True)
class SlurmCluster:
    """The testbed's SLURM cluster in one accounting mode, with helpers for tests."""

    accounting: bool
    partitions: tuple[str, ...]
    default_partition: str
    gpus: int
    node: str
    conf: Path
    max_array_size: int
    min_job_age: int
    logs: Path

    def run(self, *argv: str, timeout: float = 60) -> Completed:
        """Run a SLURM client command (argv list) through hpcml's LocalRunner."""
        return _runner.run(list(argv), timeout=timeout)

    def sbatch(self, *args: str, script: str | None = None) -> str:
        """Submit with `sbatch --parsable ARGS` (script text on stdin if given); the job id."""
        done = _runner.run(["sbatch", "--parsable", *args], input=script, timeout=60)
        assert done.ok, f"sbatch {shlex.join(args)} failed: {done.tail()}"
        return done.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str | None:
        """JobState from `scontrol show job` (None once the job left slurmctld's memory)."""
        done = _runner.run(["scontrol", "-o", "show", "job", job_id], timeout=30)
        if not done.ok:
            return None
        for word in done.stdout.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return None

    def wait(self, job_id: str, timeout: float = 300) -> str:
        """Wait until the job reaches a final state and return it (e.g. COMPLETED, TIMEOUT).

        `timeout` only stops a hung test; tests assert on states, never on durations.
        """
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in FINAL_STATES:
                return state
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not finished after {timeout}s (last state {state})")

    def sacct(self, job_id: str, fields: str = "JobID,State,ExitCode,AllocTRES") -> list[dict[str, str]]:
        """`sacct -X --parsable2` rows of the job's allocation as dicts (needs accounting)."""
        done = _runner.run(
            ["sacct", "-X", "--duplicates", "--parsable2", "-j", job_id, f"--format={fields}"], timeout=60
        )
        assert done.ok, f"sacct failed: {done.tail()}"
        lines = done.stdout.strip().splitlines()
        header = lines[0].split("|") if lines else []
        return [dict(zip(header, line.split("|"))) for line in lines[1:]]

    def wait_sacct(self, job_id: str, timeout: float = 120) -> dict[str, str]:
        """The job's sacct row once slurmdbd recorded it in a final state."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            rows = self.sacct(job_id)
            if rows and rows[-1]["State"].split()[0] in FINAL_STATES:
                return rows[-1]
            time.sleep(0.5)
        raise AssertionError(f"sacct has no final record of job {job_id} after {timeout}s: {rows}")


# ------------------------------------------------------------------ sshd


@dataclass(frozen=True)
class Sshd:
    """The testbed's sshd on loopback: connect with `key_path`, trust only `known_hosts`."""

    host: str
    port: int
    username: str
    key_path: Path
    known_hosts: Path


#: A loopback port nothing listens on (tcpmux): a connection to it is refused at once.
CLOSED_PORT = 1


class ClientSlurmConf:
    """A private copy of the testbed's SLURM configuration for the client commands of one
    test (point their SLURM_CONF at `path`), whose faults are real for every command that
    reads it: `cut_controller()` points SlurmctldPort at a closed loopback port, so squeue,
    sbatch and scontrol fail with "Unable to contact slurm controller (connect failure)";
    `cut_accounting()` does the same to AccountingStoragePort, so sacct fails ("Connection
    refused") while squeue works. The daemons, shared with other sessions, are never
    stopped or reconfigured. `restore()` undoes both; each change is an atomic rename, as
    every client command reads the file anew."""

    def __init__(self, source: Path, root: Path):
        self.source, self.root = source, root
        root.mkdir(parents=True, exist_ok=True)
        for item in source.parent.iterdir():  # gres.conf, cgroup.conf, plugstack.conf(.d)
            if item.name in ("slurm.conf", "slurmdbd.conf") or item.name.startswith("."):
                continue
            if item.is_dir():
                import shutil

                shutil.copytree(item, root / item.name, dirs_exist_ok=True)
            else:
                (root / item.name).write_bytes(item.read_bytes())
        self.path = root / "slurm.conf"
        self.restore()

    def _write(self, **ports: int) -> None:
        lines = []
        for line in self.source.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            lines.append(f"{key}={ports[key]}" if key in ports else line)
        tmp = self.path.with_name(".slurm.conf.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(self.path)

    def cut_controller(self) -> None:
        self._write(SlurmctldPort=CLOSED_PORT)

    def cut_accounting(self) -> None:
        self._write(AccountingStoragePort=CLOSED_PORT)

    def restore(self) -> None:
        self._write()

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.path)}
