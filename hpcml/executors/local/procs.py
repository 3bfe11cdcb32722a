"""Processes on this machine, as the local executor sees them through Linux's /proc: the
members of a task's session, processes marked with an environment variable, a process's
start time (to tell it from a later one reusing its pid), and killing a whole session."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP meanwhile (main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def session_members(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose session id is `sid` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        # After ')': state, ppid, pgrp, session.
        if fields and len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            members.append(int(entry))
    return members


def processes_with_env(name: str, value: str | None) -> list[int]:
    """Pids of processes whose environment holds `name=value` (any value when None), among
    those this user may read; never this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        environ = process_env(int(entry))
        if name in environ and (value is None or environ[name] == value):
            found.append(int(entry))
    return found


def process_env(pid: int) -> dict[str, str]:
    """The environment a process started with ({} when it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def start_time(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot, /proc/PID/stat field 22), which
    tells a process from a later one that reuses its pid; None when it is gone."""
    fields = _stat_fields(str(pid))
    if not fields or len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def kill_session_of(pid: int) -> None:
    """SIGKILL every process of the session `pid` belongs to (never hpcml's own session)."""
    try:
        sid = os.getsid(pid)
    except OSError:
        return
    if sid == os.getsid(0):  # never our own session: only tasks have their own
        kill(pid, signal.SIGKILL)
        return
    for member in session_members(sid) or [pid]:
        kill(member, signal.SIGKILL)
