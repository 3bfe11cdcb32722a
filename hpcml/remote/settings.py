"""The `[remotes.NAME]` tables of the configuration, and their resolution with ~/.ssh/config.

A remote names a host (or an alias of `~/.ssh/config`) and where hpcml works there:

    [remotes.cluster]
    host = "login.example.org"      # or an alias from ~/.ssh/config
    user = "me"                     # default: ~/.ssh/config's User, else the local user
    work_root = "/scratch/me/hpcml" # workflow directories are synced below it
    hpcml = "/opt/hpcml/bin/hpcml"  # the cluster's hpcml command
    catalogs = ["/shared/lab/hpcml"]
    executor = "slurm"

Values given here win over `~/.ssh/config`, as options on ssh's command line do. This module
only parses; it opens nothing (hpcml.clients.ssh does).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A remote's name: it appears in messages and in `hpcml -r NAME`.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: `$` would let "a\n" through
EXECUTORS = ("auto", "slurm", "local")


@dataclass(frozen=True)
class Remote:
    """One `[remotes.NAME]` table, as written (nothing resolved against ~/.ssh/config yet)."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    work_root: str = "hpcml-work"
    hpcml: str = "hpcml"
    catalogs: tuple[str, ...] = ()
    executor: str | None = None
    known_hosts: tuple[str, ...] = ()
    ssh_config: str | None = None
    connect_timeout: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)

    def remote_env(self) -> dict[str, str]:
        """HPCML_* settings the cluster's hpcml is started with (never secrets)."""
        out = dict(self.env)
        if self.catalogs:
            out["HPCML_CATALOGS"] = ":".join(self.catalogs)
        if self.executor:
            out["HPCML_EXECUTOR"] = self.executor
        return out


#: The keys a `[remotes.NAME]` table may hold, with a one-line doc (docs/remote.md).
REMOTE_KEYS = {
    "host": "host name or ~/.ssh/config alias (required)",
    "user": "login name (default: ~/.ssh/config, else the local user)",
    "port": "SSH port (default: ~/.ssh/config, else 22)",
    "identity_file": "private key file (default: the agent, ~/.ssh/config's IdentityFile, ~/.ssh/id_*)",
    "proxy_jump": "jump host, [user@]host[:port] or an alias (default: ~/.ssh/config's ProxyJump)",
    "work_root": "directory on the cluster below which workflow directories are synced (relative: to the remote home)",
    "hpcml": "the hpcml command on the cluster",
    "catalogs": "image catalogs on the cluster (its HPCML_CATALOGS)",
    "executor": "executor on the cluster (its HPCML_EXECUTOR): auto, slurm or local",
    "known_hosts": "known_hosts files to trust (default: ~/.ssh/known_hosts)",
    "ssh_config": "OpenSSH client configuration to honour (default: ~/.ssh/config)",
    "connect_timeout": "seconds to wait for the connection",
    "env": "extra environment for the cluster's hpcml (a table of HPCML_* values)",
}


def parse_remotes(value: Any, home: Path, base: Path | None) -> tuple[Remote, ...]:
    """The `remotes` setting from a TOML table of tables. Raises TypeError/ValueError, which
    config turns into a ConfigError naming the file."""
    if not isinstance(value, Mapping):
        raise TypeError("expected a table of [remotes.NAME] tables (set remotes in a configuration file)")
    out = []
    for name, table in value.items():
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"remote name {name!r} must match {NAME_RE.pattern}")
        if not isinstance(table, Mapping):
            raise TypeError(f"remotes.{name}: expected a table")
        out.append(_one(name, table, home, base))
    return tuple(out)


def _one(name: str, table: Mapping[str, Any], home: Path, base: Path | None) -> Remote:
    unknown = sorted(set(table) - set(REMOTE_KEYS))
    if unknown:
        raise ValueError(f"remotes.{name}: unknown key {unknown[0]!r}; allowed: {', '.join(REMOTE_KEYS)}")
    if "host" not in table:
        raise ValueError(f"remotes.{name}: 'host' is required")
    kw: dict[str, Any] = {"name": name}
    for key, raw in table.items():
        kw[key] = _value(f"remotes.{name}.{key}", key, raw, home, base)
    return Remote(**kw)


def _value(where: str, key: str, raw: Any, home: Path, base: Path | None) -> Any:
    if key == "port":
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 65536:
            raise ValueError(f"{where}: expected a port number, got {raw!r}")
        return raw
    if key == "connect_timeout":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
            raise ValueError(f"{where}: expected a positive number of seconds, got {raw!r}")
        return float(raw)
    if key in ("catalogs", "known_hosts"):
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise TypeError(f"{where}: expected a list of paths, got {raw!r}")
        # known_hosts are local files; catalogs are the cluster's paths, taken as written.
        return tuple(_local_path(i, home, base) for i in items) if key == "known_hosts" else tuple(items)
    if key == "env":
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and k.startswith("HPCML_") and isinstance(v, str) for k, v in raw.items()
        ):
            raise TypeError(f"{where}: expected a table of HPCML_* = \"text\" values")
        return dict(raw)
    if not isinstance(raw, str) or not raw or "\n" in raw or "\0" in raw:
        raise TypeError(f"{where}: expected a non-empty one-line string, got {raw!r}")
    if key == "executor" and raw not in EXECUTORS:
        raise ValueError(f"{where}: got {raw!r}; allowed: {', '.join(EXECUTORS)}")
    if key in ("identity_file", "ssh_config"):
        return _local_path(raw, home, base)
    return raw


def _local_path(text: str, home: Path, base: Path | None) -> str:
    if text == "~" or text.startswith("~/"):
        text = str(home) + text[1:]
    path = Path(text)
    return os.path.normpath(path if path.is_absolute() else (base or Path.cwd()) / path)


def find(remotes: tuple[Remote, ...], name: str) -> Remote:
    """The remote called `name`; ValueError listing the configured ones otherwise."""
    for r in remotes:
        if r.name == name:
            return r
    known = ", ".join(r.name for r in remotes) or "none"
    raise ValueError(
        f"no remote {name!r} is configured (configured: {known}); add a [remotes.{name}] table with at "
        "least `host` to ~/.config/hpcml/config.toml (docs/remote.md)"
    )


# ---- resolution with ~/.ssh/config ------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where one SSH hop goes, resolved: what paramiko connects to."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    jump: Endpoint | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH's known_hosts uses for this host: `[host]:port` unless port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def resolve(remote: Remote, home: Path) -> Endpoint:
    """The remote's endpoint: its own values over `~/.ssh/config` (Host, HostName, User, Port,
    IdentityFile, ProxyJump) over OpenSSH's defaults."""
    config = _ssh_config(remote.ssh_config or str(home / ".ssh" / "config"))
    return _endpoint(
        remote.host, config, home, user=remote.user, port=remote.port,
        identity=remote.identity_file, proxy_jump=remote.proxy_jump, depth=0,
    )


def _ssh_config(path: str) -> Any:
    # start-up speed: paramiko is imported only when a remote is used
    import paramiko

    if os.path.isfile(path):
        return paramiko.SSHConfig.from_path(path)
    return paramiko.SSHConfig()


def _endpoint(
    host: str, config: Any, home: Path, *, user: str | None, port: int | None,
    identity: str | None, proxy_jump: str | None, depth: int,
) -> Endpoint:
    if depth > 5:
        raise ValueError(f"ProxyJump chain through {host!r} is longer than 5 hops (a loop?)")
    found = config.lookup(host)
    hostname = found.get("hostname", host)
    jump_spec = proxy_jump or found.get("proxyjump")
    jump = None
    if jump_spec and jump_spec.lower() != "none":
        # OpenSSH connects through the hops left to right; the last one is next to the target.
        *earlier, last = [j.strip() for j in jump_spec.split(",") if j.strip()]
        ju, jh, jp = _split_jump(last)
        jump = _endpoint(jh, config, home, user=ju, port=jp, identity=None,
                         proxy_jump=",".join(earlier) or "none", depth=depth + 1)
    files = [identity] if identity else [_local_path(f, home, home) for f in found.get("identityfile", [])]
    return Endpoint(
        alias=host,
        hostname=hostname,
        port=port or int(found.get("port", 22)),
        user=user or found.get("user") or _local_user(),
        identity_files=tuple(files),
        jump=jump,
    )


def _local_user() -> str:
    import getpass  # start-up speed: config imports this module; only connecting needs it

    return getpass.getuser()


def _split_jump(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (or ssh://…) of a ProxyJump entry."""
    spec = spec.removeprefix("ssh://")
    user, _, rest = spec.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, p = rest.split(":")
        port = int(p)
    return user or None, host, port
