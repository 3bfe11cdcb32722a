"""A lock file that works on NFS/Lustre, with detection of dead owners.

`flock` is not trusted on network filesystems, so the lock is taken by the hard-link trick
(atomic on NFS): the owner writes its identity (host, pid, process start time, a random
token) to a unique file and links it to the lock name; the link succeeds for exactly one
process. While held, a heartbeat thread touches the lock file's mtime.

A lock is stale when its owner is dead: on the same host, the pid is gone or belongs to a
process started at another time (pid reuse); on another host, the heartbeat is older than
`stale_after` by the file server's clock (`server_now`). An owner that was only stopped
(Ctrl-Z, an NFS stall) can find its lock broken when it resumes: `still_held` tells it, and
the catalog publishes nothing for a builder that lost its lock. Breaking is serialised by a second, short-lived lock (`<lock>.break`) and
re-reads the owner token just before removing, so two breakers never remove a fresh lock.

Example:

    with FileLock(Path("catalog/locks/abc.lock")):
        ...  # re-check, build, publish
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hpcml.errors import CatalogError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str  # process start time (/proc/PID/stat field 22), "" where unknown
    token: str

    @staticmethod
    def me() -> "Owner":
        pid = os.getpid()
        return Owner(socket.gethostname(), pid, process_start(pid) or "", uuid.uuid4().hex)


def process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': fields after the last ')' are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_is_dead(owner: Owner, mtime: float, now: float, stale_after: float) -> bool:
    """Whether the lock held by `owner` (lock file mtime `mtime`) can be broken."""
    if owner.host == socket.gethostname():
        started = process_start(owner.pid)
        if started is None:
            return True
        return bool(owner.start) and started != owner.start
    return now - mtime > stale_after


class FileLock:
    """An exclusive lock at `path`, NFS-safe, breaking locks of dead owners.

    `on_wait(owner)` is called once when the lock is busy, e.g. to show "waiting for
    host:pid" in a progress display.
    """

    def __init__(
        self,
        path: Path,
        *,
        poll_s: float = 0.2,
        max_poll_s: float = 2.0,
        timeout_s: float | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        on_wait: Callable[[Owner | None], None] | None = None,
    ):
        self.path = Path(path)
        self.poll_s, self.max_poll_s, self.timeout_s = poll_s, max_poll_s, timeout_s
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.on_wait = on_wait
        self.owner: Owner | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Block until the lock is ours. Raises CatalogError after `timeout_s`."""
        me = Owner.me()
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        delay, told = self.poll_s, False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not self._try_link(me):
            holder = read_owner(self.path)
            if holder is not None and self._is_stale(holder):
                self._break(holder)
                continue
            if not told and self.on_wait is not None:
                self.on_wait(holder)
                told = True
            if deadline is not None and time.monotonic() > deadline:
                raise CatalogError(f"timed out waiting for lock {self.path} held by {_who(holder)}")
            time.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_s)
        self.owner = me
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock:{self.path.name}", daemon=True)
        self._beat.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still ours."""
        if self.owner is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        holder = read_owner(self.path)
        if holder is not None and holder.token == self.owner.token:
            _unlink(self.path)
        else:
            log.warning("lock %s was broken by someone else while held", self.path)
        self.owner = None

    def _try_link(self, me: Owner) -> bool:
        tmp = self.path.with_name(f"{self.path.name}.{me.host}.{me.pid}.{me.token[:8]}")
        tmp.write_text(json.dumps(me.__dict__), encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            # NFS may report failure for a link that did happen (lost reply): the link
            # count on our own file is the truth.
            return os.stat(tmp).st_nlink == 2
        finally:
            _unlink(tmp)

    def still_held(self) -> bool:
        """Whether the lock file still holds our token (False once someone broke it)."""
        holder = read_owner(self.path)
        return self.owner is not None and holder is not None and holder.token == self.owner.token

    def _is_stale(self, holder: Owner) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return False
        if holder.host == socket.gethostname():
            return owner_is_dead(holder, mtime, 0.0, self.stale_after_s)  # judged by its pid, not by time
        return owner_is_dead(holder, mtime, server_now(self.path.parent), self.stale_after_s)

    def _break(self, holder: Owner) -> None:
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o664)
        except FileExistsError:
            # Another process is breaking it; a breaker that died leaves this file behind,
            # and breaking takes milliseconds, so an old one is itself stale.
            try:
                if time.time() - os.stat(breaker).st_mtime > 30:
                    _unlink(breaker)
            except FileNotFoundError:
                pass
            time.sleep(self.poll_s)
            return
        os.close(fd)
        try:
            current = read_owner(self.path)
            if current is not None and current.token == holder.token:
                log.warning("breaking lock %s of dead owner %s", self.path, _who(holder))
                _unlink(self.path)
        finally:
            _unlink(breaker)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.still_held():
                # Broken while we were stopped, and maybe taken: touching it would keep
                # someone else's lock alive in our name. Publishing checks still_held too.
                log.warning("lock %s was broken by someone else while held", self.path)
                return
            try:
                os.utime(self.path)
            except OSError:
                log.warning("lock %s disappeared while held", self.path)


def server_now(directory: Path) -> float:
    """The current time by the clock of the file server holding `directory`: the mtime of a
    probe file created there. Heartbeats are mtimes set by that server, so comparing them
    with this machine's clock would break live locks on a skewed client (issue 12)."""
    probe = directory / f".clock-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return time.time()  # a directory we cannot write: our clock is all there is
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        _unlink(probe)


def read_owner(path: Path) -> Owner | None:
    """The owner recorded in a lock file, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Owner(str(data["host"]), int(data["pid"]), str(data["start"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _who(owner: Owner | None) -> str:
    return f"{owner.host}:{owner.pid}" if owner else "an unknown process"


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
