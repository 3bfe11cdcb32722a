"""The one place where hpcml runs external programs.

Callers pass argv lists (never shell strings), get a `Completed` back whatever the exit
status, and turn failures into domain errors carrying `Completed.tail()`. The SSH runner
for remote clusters plugs in behind the same `Runner` protocol.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of stderr (or stdout when stderr is empty), for error messages."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-lines:])


class Runner(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed: ...

    def run_logged(
        self,
        argv: Sequence[str],
        *,
        log_path: str,
        cwd: str | None = None,
        timeout: float | None = None,
        exact_env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> Completed: ...


class LocalRunner:
    """Runs commands on this machine with subprocess.

    `env` entries are added to (not replacing) the current environment. A program that
    cannot be started, or runs past `timeout`, gives returncode 127 (missing), 126 (not
    executable) or 124 like a shell.
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        args = tuple(str(a) for a in argv)
        log.debug("run %s", args)
        full_env = {**os.environ, **env} if env else None
        try:
            proc = subprocess.run(
                args,
                input=input,
                cwd=cwd,
                env=full_env,
                timeout=timeout,
                capture_output=True,
                text=True,
                errors="replace",  # undecodable output (a file name in an image) must not crash the caller
                check=False,
            )
        except OSError as err:
            return _not_started(args, err)
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            errs = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
            return Completed(args, 124, out, errs + f"\ntimed out after {timeout}s")
        return Completed(args, proc.returncode, proc.stdout, proc.stderr)

    def run_logged(
        self,
        argv: Sequence[str],
        *,
        log_path: str,
        cwd: str | None = None,
        timeout: float | None = None,
        exact_env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> Completed:
        """Like `run`, but stdout and stderr are appended to the file `log_path` as they come
        (someone can `tail -f` a long build, and a killed run leaves what it printed).
        With `exact_env` the program gets exactly that environment, nothing of ours;
        `pass_fds` stay open in it under the same numbers.

        The returned `stderr` holds the end of that output, for error messages. The log is
        opened without following a symbolic link.
        """
        args = tuple(str(a) for a in argv)
        log.debug("run %s >> %s", args, log_path)
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with open(fd, "ab") as sink:
                proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink,
                                        stderr=subprocess.STDOUT,
                                        env=dict(exact_env) if exact_env is not None else None,
                                        pass_fds=tuple(pass_fds))
        except OSError as err:
            return _not_started(args, err)
        try:
            code = proc.wait(timeout=timeout)
            tail = ""
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            tail = f"\ntimed out after {timeout}s"
        return Completed(args, 124 if tail else code, "", _file_tail(log_path) + tail)


def _not_started(args: tuple[str, ...], err: OSError) -> Completed:
    """A program that could not be started answers like a shell: 127 when it is missing,
    126 when it is there but cannot be executed (e.g. a PATH entry the user cannot read)."""
    if isinstance(err, FileNotFoundError):
        return Completed(args, 127, "", f"{args[0]}: command not found ({err})")
    return Completed(args, 126, "", f"{args[0]}: cannot execute ({err})")


def _file_tail(path: str, size: int = 64 << 10) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
        return fh.read().decode("utf-8", "replace")


# ---- long-running children (the local executor) -------------------------------------
# `run` waits for its command; the local executor instead starts job scripts that run for
# hours, each in its own session so that it can be signalled as a whole (like a SLURM job)
# and so that a Ctrl-C on the terminal reaches only hpcml, which then cancels cleanly.


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    output: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session with exactly `env`; stdout+stderr appended to `output`.

    Raises OSError when the program cannot be started. The caller owns the process: it polls,
    signals (os.killpg on the returned pid) and reaps it.
    """
    args = tuple(str(a) for a in argv)
    log.debug("spawn %s", args)
    sink = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if output:
            sink.close()  # type: ignore[union-attr]  # the child holds its own descriptor
