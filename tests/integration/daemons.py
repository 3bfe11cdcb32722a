"""Stopping and starting the testbed's real SLURM daemons, for the fault tests of issue 15
(tests/integration/test_daemon_faults.py, bench/faults.py).

Every stop here is real: slurmctld and slurmdbd get SIGTERM (as a service manager's stop
would send), a node's slurmd and the job processes on it get SIGKILL (as when the node
loses power). `Daemons.restore()` brings back whatever is down and waits until the cluster
answers and every node accepts work again; callers run it in `finally` or a fixture's
teardown. These tests stop daemons that other sessions share: run them under the exclusive
testbed lock (`flock -x /tmp/hpcml-testbed.lock`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed import TESTBED, run_quietly

RUN = Path("/run/slurm")
SLURM_LOGS = Path("/var/log/hpcml-testbed/slurm")
DAEMON_LOG = Path("/var/log/hpcml-testbed/daemons.log")
EXTRA_NODES = ("hpcml-n1", "hpcml-n2")


def pid_of(pidfile: Path, name: str) -> int | None:
    """The pid in `pidfile` when it runs a program whose name starts with `name` (as lib.sh)."""
    try:
        pid = int(pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm.startswith(name) else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def poll(what: str, check, timeout: float, every: float = 0.5):  # noqa: ANN001, ANN201 - a predicate
    """check() until it returns something true; AssertionError naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


def start(*argv: str) -> None:
    """Start a daemon as `up` does: detached, its output in daemons.log, no inherited fds
    (the testbed lock's descriptor must not outlive this process in a daemon)."""
    with open(DAEMON_LOG, "ab") as log:
        subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                       start_new_session=True, check=True, timeout=60)


def children(pid: int) -> list[int]:
    """`pid`'s descendants, from /proc (ppid links)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def stepds_of(job_id: str) -> list[int]:
    """pids of the slurmstepd processes of `job_id` (`slurmstepd: [123.batch]`, …)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(f"slurmstepd: [{job_id}."):
                found.append(int(entry.name))
    return found


def node_state(node: str) -> str:
    return run_quietly(["sinfo", "-a", "-h", "-N", "-n", node, "-o", "%T"], timeout=30).stdout.strip()


def node_ok(node: str) -> bool:
    """The node accepts work (as lib.sh's state_ok: not down, drained, not responding)."""
    state = node_state(node)
    return bool(state) and not any(bad in state for bad in ("down", "drain", "*", "unknown", "fail"))


def controller_ok() -> bool:
    return "UP" in run_quietly(["scontrol", "ping"], timeout=30).stdout


def accounting_ok() -> bool:
    return run_quietly(["sacctmgr", "-n", "list", "cluster"], timeout=30).ok


@dataclass
class Daemons:
    """The testbed's daemons, stopped and started for real; remembers what it stopped."""

    main_node: str
    stopped: set[str] = field(default_factory=set)

    def _term(self, pidfile: Path, name: str, timeout: float = 60) -> None:
        pid = pid_of(pidfile, name)
        assert pid is not None, f"{name} is not running ({pidfile})"
        os.kill(pid, signal.SIGTERM)
        poll(f"{name} (pid {pid}) to exit", lambda: not alive(pid), timeout, every=0.1)

    # ---- slurmctld
    def stop_controller(self) -> None:
        self.stopped.add("slurmctld")
        self._term(RUN / "slurmctld.pid", "slurmctld")

    def start_controller(self) -> None:
        if pid_of(RUN / "slurmctld.pid", "slurmctld") is None:
            start("slurmctld")
        poll("slurmctld to answer", controller_ok, 120)
        self.stopped.discard("slurmctld")

    # ---- slurmdbd
    def stop_accounting(self) -> None:
        self.stopped.add("slurmdbd")
        self._term(RUN / "slurmdbd.pid", "slurmdbd")

    def start_accounting(self) -> None:
        if pid_of(RUN / "slurmdbd.pid", "slurmdbd") is None:
            start("slurmdbd")
        poll("slurmdbd to answer", accounting_ok, 120)
        self.stopped.discard("slurmdbd")

    # ---- a node
    def kill_node(self, node: str, job_ids: list[str]) -> list[int]:
        """A node failure: SIGKILL to the node's slurmd and to the given jobs' slurmstepd
        and everything below them (the task, its container). Returns the pids killed."""
        assert node in EXTRA_NODES, f"only the multi partition's nodes are failed here, not {node}"
        self.stopped.add(node)
        slurmd = pid_of(RUN / f"slurmd-{node}.pid", "slurmd")
        assert slurmd is not None, f"slurmd of {node} is not running"
        victims = [slurmd]
        for job in job_ids:
            for stepd in stepds_of(job):
                victims += [stepd, *children(stepd)]
        for pid in victims:  # the daemons first, so nothing notices the children's end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return victims

    def start_node(self, node: str, timeout: float = 180) -> None:
        """Start the node's slurmd again (as `up` does) and wait until the node takes work
        (ReturnToService=2 brings it back; resumed here if it stays DOWN)."""
        if pid_of(RUN / f"slurmd-{node}.pid", "slurmd") is None:
            start("slurmd", "-N", node, "-L", str(SLURM_LOGS / f"slurmd-{node}.log"))
        end = time.monotonic() + timeout
        resumed = False
        while not node_ok(node):
            assert time.monotonic() < end, f"node {node} is {node_state(node)!r} after {timeout:.0f} s"
            if not resumed and "down" in node_state(node) and time.monotonic() > end - timeout + 20:
                run_quietly(["scontrol", "update", f"nodename={node}", "state=resume"], timeout=30)
                resumed = True
            time.sleep(1)
        self.stopped.discard(node)

    def restore(self) -> None:
        """Start whatever is down, then wait for the cluster (all nodes) to answer; last
        resort: `slurm/testbed/up --only slurm` (idempotent)."""
        try:
            if "slurmdbd" in self.stopped or pid_of(RUN / "slurmdbd.pid", "slurmdbd") is None:
                self.start_accounting()
            if "slurmctld" in self.stopped or not controller_ok():
                self.start_controller()
            for node in EXTRA_NODES:
                if node in self.stopped or not node_ok(node):
                    self.start_node(node)
            poll(f"node {self.main_node}", lambda: node_ok(self.main_node), 60)
        except (AssertionError, subprocess.SubprocessError, OSError):
            done = run_quietly([str(TESTBED / "up"), "--only", "slurm"], timeout=600)
            assert done.ok, f"slurm/testbed/up could not restore the cluster: {done.tail()}"


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
