"""One command on the cluster: the connection (with reconnects), sync, secrets, the remote
`hpcml`, and watching a run from the laptop.

Design (docs/remote.md): the cluster's own `hpcml` does the work next to its SLURM, its
Apptainer and its `.hpcml/` state, started through `SshRunner` over one SSH connection; the
laptop validates and plans first (local file:line:col errors), syncs the directory over
SFTP on the same connection, and renders. Watching is one remote `hpcml status --json` per
polling round (one squeue on the cluster) over the open connection, so a dropped link costs
a reconnect and a round, never the run.
"""

from __future__ import annotations

import json
import posixpath
import secrets as _secrets
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hpcml.clients.ssh import CONNECTION_ERRORS, ConnectionLost, Hop, SshRunner, connect
from hpcml.errors import RemoteDetached, RemoteError
from hpcml.remote.settings import Endpoint, Remote, resolve
from hpcml.remote.sync import SyncReport, makedirs, put_private, sync
from hpcml.results import RunStatus
from hpcml.run.tasks import TaskState

if TYPE_CHECKING:
    import paramiko

Write = Callable[[bytes], object]
Notice = Callable[[str], None]

#: Pauses between reconnect attempts (seconds): about two minutes in all.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0)
#: Drops in a row under one command before giving up (each already reconnected).
MAX_DROPS = 5
#: A polling round with no answer for this long is taken for a dead link (seconds).
STALL_S = 120.0
#: The first line a started remote command writes on stderr: its process id on the cluster.
PID_MARK = "hpcml-remote-pid"
#: The shell prologue of a submission: say the pid, load the secrets file (if any) into the
#: environment and delete it, then become hpcml. Words after it arrive as "$@", quoted.
_PROLOGUE = (
    'echo "' + PID_MARK + ' $$" >&2; '
    'if [ -n "$1" ]; then set -a; . "$1" || exit 1; rm -f "$1"; set +a; fi; shift; exec "$@"'
)


class Session:
    """An open connection to one remote, reopened with backoff when it drops."""

    def __init__(self, remote: Remote, home: Path, notice: Notice | None = None, backoff: Sequence[float] = BACKOFF):
        self.remote = remote
        self.endpoint: Endpoint = resolve(remote, home)
        self.known_hosts = remote.known_hosts or (str(home / ".ssh" / "known_hosts"),)
        self.notice = notice or (lambda _m: None)
        self.backoff = tuple(backoff)
        self._hop: Hop | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._work_root: str | None = None

    # ---- the connection ----------------------------------------------------------------

    def open(self) -> None:
        """Connect (RemoteError with the reason when refused or unreachable)."""
        self._hop = connect(self.endpoint, self.known_hosts, self.remote.connect_timeout)

    def close(self) -> None:
        """Close the connection (quietly: it may already be dead)."""
        for closer in (self._sftp, self._hop):
            if closer is not None:
                try:
                    closer.close()
                except CONNECTION_ERRORS:
                    pass
        self._hop = self._sftp = None

    def reconnect(self) -> None:
        """Reopen a dropped connection, waiting longer after each failed attempt."""
        self.close()
        last: RemoteError | None = None
        for pause in self.backoff:
            self.notice(f"connection to {self.remote.name} lost; reconnecting in {pause:g}s")
            time.sleep(pause)
            try:
                self.open()
                self.notice(f"reconnected to {self.remote.name}")
                return
            except RemoteError as err:
                last = err
        raise RemoteError(f"could not reconnect to {self.remote.name}: {last}")

    @property
    def runner(self) -> SshRunner:
        if self._hop is None:
            self.open()
        assert self._hop is not None
        return SshRunner(self._hop.client)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP channel of the one connection (opened once)."""
        if self._sftp is None:
            self._sftp = self.runner.client.open_sftp()
        return self._sftp

    def retrying(self, op: Callable[[], int]) -> int:
        """`op()`, run again after a reconnect each time the connection drops under it
        (MAX_DROPS times at most: a link that drops under every command is not one to trust)."""
        for _ in range(MAX_DROPS):
            try:
                return op()
            except ConnectionLost:
                self.reconnect()
        raise RemoteError(f"the connection to {self.remote.name} dropped {MAX_DROPS} times in a row; giving up")

    # ---- paths and files ---------------------------------------------------------------

    @property
    def work_root(self) -> str:
        """The absolute work root on the cluster (created when missing)."""
        if self._work_root is None:
            makedirs(self.sftp, self.remote.work_root)
            self._work_root = self.sftp.normalize(self.remote.work_root)
        return self._work_root

    def remote_dir(self, local_dir: Path) -> str:
        """Where a local workflow directory lives on the cluster: WORK_ROOT/<its name>."""
        return posixpath.join(self.work_root, dir_name(local_dir))

    def sync(self, local_dir: Path) -> SyncReport:
        """Mirror `local_dir` to its remote directory (see hpcml.remote.sync); a sync cut
        by a dropped connection is redone after reconnecting (it is idempotent)."""
        for _ in range(MAX_DROPS):
            try:
                return sync(self.sftp, local_dir, self.work_root, dir_name(local_dir))
            except (RemoteError, *CONNECTION_ERRORS) as err:
                if self.alive():
                    raise RemoteError(f"sync to {self.remote.name} failed: {err}") from None
                self.reconnect()
        raise RemoteError(f"the connection to {self.remote.name} dropped {MAX_DROPS} times during the sync; giving up")

    def alive(self) -> bool:
        """Whether the connection is still up."""
        transport = self._hop.client.get_transport() if self._hop is not None else None
        return transport is not None and transport.is_active()

    def put_secrets(self, values: Mapping[str, str]) -> str:
        """The secrets as a 0600 env file on the cluster (over SFTP, never a command line);
        the remote command's prologue sources and deletes it. Returns its path."""
        path = posixpath.join(self.work_root, ".hpcml-secrets", f"{_secrets.token_hex(8)}.env")
        text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
        put_private(self.sftp, path, text.encode())
        return path

    # ---- the remote hpcml --------------------------------------------------------------

    def hpcml_argv(self, args: Sequence[str]) -> list[str]:
        env = [f"{k}={v}" for k, v in self.remote.remote_env().items()]
        return (["env", *env] if env else []) + [self.remote.hpcml, *args]

    def hpcml(self, args: Sequence[str], out: Write, err: Write) -> int:
        """Run the cluster's `hpcml ARGS`, streaming its output; its exit status. Reconnects and
        runs it again when the connection drops (for commands that are safe to repeat)."""
        return self.retrying(lambda: self.runner.stream(self.hpcml_argv(args), out, err))

    def submit(self, args: Sequence[str], out: Write, err: Write, secrets: Mapping[str, str]) -> int:
        """`hpcml run … --detach` on the cluster. When the connection drops mid-submission, wait
        for that remote process to end, then run it again: its reconcile adopts the jobs the
        first one submitted (by job name), so nothing is submitted twice."""
        for _ in range(MAX_DROPS):
            pid: list[str] = []
            secrets_file = self.put_secrets(secrets) if secrets else ""
            argv = ["sh", "-c", _PROLOGUE, "sh", secrets_file, *self.hpcml_argv(args)]
            try:
                return self.runner.stream(argv, out, _PidFilter(err, pid))
            except ConnectionLost:
                self.reconnect()
                if secrets_file:
                    self.runner.run(["rm", "-f", secrets_file])
                if pid:
                    self._wait_gone(pid[0])
                self.notice("submitting again: jobs already submitted are found by name and not duplicated")
        raise RemoteError(
            f"the connection to {self.remote.name} dropped {MAX_DROPS} times during the submission; "
            f"`hpcml -r {self.remote.name} status` shows what was submitted, a rerun submits the rest"
        )

    def _wait_gone(self, pid: str) -> None:
        """Wait until the interrupted remote `hpcml run` has ended (it holds the run lock)."""
        said = False
        while True:
            try:
                alive = self.runner.run(["kill", "-0", pid]).ok
            except ConnectionLost:
                self.reconnect()
                continue
            if not alive:
                return
            if not said:
                self.notice(f"waiting for the interrupted submission (pid {pid} on {self.remote.name}) to end")
                said = True
            time.sleep(1.0)

    def status(self, args: Sequence[str]) -> RunStatus:
        """One polling round: the cluster's `hpcml status --json ARGS` (one squeue there).
        A round cut by a drop, or with no answer in STALL_S (a link that died silently, as
        a sleeping laptop's does), is done again on a new connection."""
        for _ in range(MAX_DROPS):
            out: list[bytes] = []
            errs: list[bytes] = []
            try:
                code = self.runner.stream(self.hpcml_argv(["status", "--json", *args]), out.append, errs.append,
                                          timeout=STALL_S)
            except ConnectionLost:
                code = 124
            if code == 124:
                self.reconnect()
                continue
            text = b"".join(out).decode(errors="replace")
            if code not in (0, 1, 3) or (code != 0 and not text.strip()):  # an error, not a table
                raise RemoteError(f"`hpcml status` on {self.remote.name} failed (exit {code}): "
                                  f"{b''.join(errs).decode(errors='replace').strip()}")
            return status_from_json(text)
        raise RemoteError(f"no answer to `hpcml status` from {self.remote.name} in {MAX_DROPS} tries; "
                          "the run goes on there")

    def watch(self, args: Sequence[str], on_update: Callable[[RunStatus], None], run_id: str,
              poll_s: float = 2.0, max_poll_s: float = 15.0) -> RunStatus:
        """Poll until every task has ended; Ctrl-C leaves the run going (RemoteDetached)."""
        pause = poll_s
        try:
            while True:
                st = self.status(args)
                on_update(st)
                if st.finished:
                    return st
                time.sleep(pause)
                pause = min(max_poll_s, pause * 1.5)
        except KeyboardInterrupt:
            raise RemoteDetached(self.remote.name, run_id) from None


class _PidFilter:
    """Passes stderr through, minus the prologue's pid line (kept in `pid`)."""

    def __init__(self, write: Write, pid: list[str]):
        self.write = write
        self.pid = pid
        self.head = b""

    def __call__(self, data: bytes) -> None:
        if self.pid or len(self.head) > 200:
            self.write(data)
            return
        self.head += data
        line, nl, rest = self.head.partition(b"\n")
        if not nl:
            return
        if line.startswith(PID_MARK.encode()):
            self.pid.append(line.split()[-1].decode())
        else:
            rest = self.head
            self.pid.append("")
        if rest:
            self.write(rest)


def dir_name(local_dir: Path) -> str:
    """The remote directory name of a local workflow directory: its own name."""
    name = Path(local_dir).resolve().name
    if not name or name in (".", ".."):
        raise RemoteError(f"cannot sync {local_dir}: run from a named workflow directory")
    return name


def status_from_json(text: str) -> RunStatus:
    """The RunStatus of a `hpcml status --json` document."""
    try:
        doc = json.loads(text)
        return RunStatus(doc["run"], doc["workflow"], doc["executor"], tuple(TaskState(**t) for t in doc["tasks"]))
    except (ValueError, KeyError, TypeError) as err:
        raise RemoteError(f"the cluster's `hpcml status --json` answered something unreadable ({err}): {text[:200]!r}") from None


@contextmanager
def opened(remote: Remote, home: Path, notice: Notice | None = None) -> Iterator[Session]:
    """A connected Session, closed on leaving."""
    session = Session(remote, home, notice)
    session.open()
    try:
        yield session
    finally:
        session.close()
