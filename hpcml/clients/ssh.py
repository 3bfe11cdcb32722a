"""SSH with paramiko: one strict connection per command, and a Runner over it.

`connect` opens the connection to a resolved `Endpoint` (ProxyJump hops as direct-tcpip
channels through the previous hop), refusing unknown or changed host keys with the
fingerprint and the known_hosts file to edit, and never asking for a password. `SshRunner`
implements the `Runner` protocol over that connection: every argv word is quoted for the
remote shell (shlex.quote), so paths and values with spaces, quotes, `$` or `;` arrive as
written. Each command is its own channel of the one connection (SSH multiplexes them).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paramiko

from hpcml.clients.runner import Completed
from hpcml.errors import RemoteError

if TYPE_CHECKING:
    from hpcml.remote.settings import Endpoint

log = logging.getLogger(__name__)

#: What a dropped connection looks like to paramiko and the socket layer.
CONNECTION_ERRORS = (paramiko.SSHException, EOFError, OSError)


class ConnectionLost(RemoteError):
    """The SSH connection dropped while a command ran (its exit status never came)."""


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:…` as `ssh-keygen -lf` and OpenSSH's own messages print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Refuse(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, with a message a user can act on."""

    def __init__(self, files: Sequence[str], endpoint: Endpoint):
        self.files = files
        self.endpoint = endpoint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        where = self.files[0] if self.files else "~/.ssh/known_hosts"
        ep = self.endpoint
        raise RemoteError(
            f"host key of {hostname} is unknown: it offered {key.get_name()} {fingerprint(key)}, and no "
            f"known_hosts file trusts it ({', '.join(self.files) or 'none read'}). Check that fingerprint "
            f"with the cluster's administrators, then add the host to {where}: connect once with "
            f"`ssh -p {ep.port} {ep.user}@{ep.hostname}`, or `ssh-keyscan -p {ep.port} {ep.hostname} >> {where}` "
            "after checking"
        )


@dataclass(frozen=True)
class Hop:
    """An open connection to one endpoint, and the connections it runs through."""

    client: paramiko.SSHClient
    through: tuple[paramiko.SSHClient, ...]

    def close(self) -> None:
        self.client.close()
        for c in reversed(self.through):
            c.close()


def connect(endpoint: Endpoint, known_hosts: Sequence[str], timeout: float = 10.0) -> Hop:
    """Open the connection to `endpoint`, through its jump hosts. Raises RemoteError with a
    message saying what to do: unknown/changed host key, no accepted key, unreachable."""
    through: list[paramiko.SSHClient] = []
    sock: paramiko.Channel | None = None
    if endpoint.jump is not None:
        jump = connect(endpoint.jump, known_hosts, timeout)
        through = [*jump.through, jump.client]
        transport = jump.client.get_transport()
        assert transport is not None
        try:
            sock = transport.open_channel(
                "direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0), timeout=timeout
            )
        except (paramiko.SSHException, OSError) as err:
            jump.close()
            raise RemoteError(
                f"jump host {endpoint.jump} could not open a connection to {endpoint.hostname}:{endpoint.port}: "
                f"{err} (does the jump host allow TCP forwarding, and can it reach the target?)"
            ) from None
    try:
        client = _open(endpoint, known_hosts, timeout, sock)
    except BaseException:
        for c in reversed(through):
            c.close()
        raise
    return Hop(client, tuple(through))


def _open(endpoint: Endpoint, known_hosts: Sequence[str], timeout: float, sock: paramiko.Channel | None) -> paramiko.SSHClient:
    files = [f for f in known_hosts if os.path.isfile(f)]
    client = paramiko.SSHClient()
    for f in files:
        client.load_system_host_keys(f)  # system: never written back by paramiko
    client.set_missing_host_key_policy(_Refuse(list(known_hosts), endpoint))
    try:
        client.connect(
            endpoint.hostname,
            port=endpoint.port,
            username=endpoint.user,
            key_filename=list(endpoint.identity_files) or None,
            allow_agent=True,
            look_for_keys=not endpoint.identity_files,
            password=None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            sock=sock,
        )
    except RemoteError:
        client.close()
        raise
    except paramiko.BadHostKeyException as err:
        client.close()
        raise RemoteError(
            f"HOST KEY CHANGED for {endpoint.known_hosts_name}: it offered {err.key.get_name()} "
            f"{fingerprint(err.key)}, but known_hosts holds {err.expected_key.get_name()} "
            f"{fingerprint(err.expected_key)}. Someone may be intercepting the connection; if the "
            f"administrators confirm the new key, remove the old line from {_holder(files, endpoint)} "
            f"(`ssh-keygen -R '{endpoint.known_hosts_name}' -f FILE`) and add the new one"
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise RemoteError(
            f"the key for {endpoint} is protected by a passphrase and no agent holds it: hpcml never "
            "prompts; load it into your agent (`ssh-add KEYFILE`) and retry"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise RemoteError(
            f"{endpoint} accepted none of the keys offered (agent, "
            f"{', '.join(endpoint.identity_files) or '~/.ssh/id_*'}), and hpcml never asks for a password. "
            "Set up a key: `ssh-keygen -t ed25519`, then `ssh-copy-id` (or ask the administrators to add the "
            ".pub file to ~/.ssh/authorized_keys on the cluster), and name it with identity_file or "
            "IdentityFile if it is not a default one"
        ) from None
    except TimeoutError as err:
        client.close()
        raise RemoteError(f"cannot reach {endpoint}: timed out ({err or 'no answer'}); check host, port and network") from None
    except (OSError, paramiko.SSHException, EOFError) as err:
        client.close()
        reason = str(err)
        if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError):  # one error per address tried
            reason = "; ".join(sorted({e.strerror or str(e) for e in err.errors.values()}))
        raise RemoteError(f"cannot reach {endpoint}: {reason}; check host, port and that sshd runs there") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)  # a dead link is noticed within a polling round or two
    return client


def _holder(files: Sequence[str], endpoint: Endpoint) -> str:
    """The known_hosts file that holds the host's (old) key: the one to edit."""
    for f in files:
        hk = paramiko.HostKeys(f)
        if hk.lookup(endpoint.known_hosts_name) is not None:
            return f
    return files[0] if files else "~/.ssh/known_hosts"


# ---- commands ---------------------------------------------------------------------------


def command_line(argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The one string the remote shell gets: `cd DIR && env K=V argv…`, every word quoted.

    Example: ``command_line(["echo", "a b; $x"])`` → ``"echo 'a b; $x'"``.
    """
    words = [str(a) for a in argv]
    if env:
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    line = shlex.join(words)
    if cwd:
        line = f"cd {shlex.quote(cwd)} && {line}"
    return line


class SshRunner:
    """The Runner protocol over an open SSH connection: each command one channel."""

    def __init__(self, client: paramiko.SSHClient):
        self.client = client

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        out: list[bytes] = []
        err: list[bytes] = []
        code = self.stream(argv, out.append, err.append, input=input, cwd=cwd, env=env, timeout=timeout)
        return Completed(tuple(map(str, argv)), code, b"".join(out).decode("utf-8", "replace"),
                         b"".join(err).decode("utf-8", "replace"))

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
        """Like `run`; output is appended to the local file `log_path` as it comes. The
        remote command gets the SSH session's environment, plus `exact_env`; `pass_fds`
        (local descriptors) cannot travel and are ignored."""
        with open(log_path, "ab") as sink:
            def write(data: bytes) -> None:
                sink.write(data)
                sink.flush()

            code = self.stream(argv, write, write, cwd=cwd, env=exact_env, timeout=timeout)
        with open(log_path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - (64 << 10)))
            tail = fh.read().decode("utf-8", "replace")
        return Completed(tuple(map(str, argv)), code, "", tail)

    def stream(
        self,
        argv: Sequence[str],
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        *,
        input: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run `argv` remotely, passing output to the callbacks as it arrives; the exit status.

        Raises ConnectionLost when the connection drops before the command's exit status
        arrives (the remote command may still be running: the caller decides what that means).
        """
        line = command_line(argv, cwd=cwd, env=env)
        log.debug("ssh run %s", line)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionLost("the SSH connection is closed")
        try:
            chan = transport.open_session(timeout=10)
            chan.exec_command(line)
            if input is not None:
                chan.sendall(input.encode())
            chan.shutdown_write()
            deadline = None if timeout is None else time.monotonic() + timeout
            chan.settimeout(0.2)
            while True:
                got = False
                while chan.recv_ready():
                    on_stdout(chan.recv(32768))
                    got = True
                while chan.recv_stderr_ready():
                    on_stderr(chan.recv_stderr(32768))
                    got = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not transport.is_active():
                    raise ConnectionLost(f"the SSH connection dropped while running {argv[0]}")
                if deadline is not None and time.monotonic() > deadline:
                    chan.close()
                    on_stderr(f"\ntimed out after {timeout}s".encode())
                    return 124
                if not got:
                    chan.status_event.wait(0.05)
            code = chan.recv_exit_status()
            chan.close()
        except ConnectionLost:
            raise
        except CONNECTION_ERRORS as err:
            raise ConnectionLost(f"the SSH connection dropped while running {argv[0]}: {err}") from None
        if code == -1:  # the channel closed without an exit status: the link went away
            raise ConnectionLost(f"the SSH connection dropped while running {argv[0]}")
        return code
