"""`hpcml --remote NAME COMMAND …`: validate and plan here, then do the command on the cluster.

The order is the promise to the user: a spec error is reported with this machine's
file:line:col before any connection is opened; a missing secret before anything is sent;
then one connection carries the sync (SFTP), the secrets file (SFTP), the cluster's
`hpcml` and, for `run`, every polling round.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcml import plan as _plan
from hpcml.errors import RemoteDetached, RemoteError, SubmitError
from hpcml.remote.commands import check_supported, pin_run, translate
from hpcml.remote.session import Notice, Session, Write
from hpcml.remote.settings import Remote
from hpcml.results import RemoteOutcome, RunStatus
from hpcml.spec import checker as _spec


@dataclass(frozen=True)
class Streams:
    """Where the cluster's output and the laptop's own notes go."""

    out: Write
    err: Write
    notice: Notice
    on_update: Callable[[RunStatus], None]


def invoke(
    remote: Remote,
    home: Path,
    path: tuple[str, ...],
    params: Mapping[str, Any],
    streams: Streams,
    *,
    cwd: Path | None = None,
    tty: bool = False,
    env: Mapping[str, str] | None = None,
    poll_s: float = 2.0,
) -> RemoteOutcome:
    """Run the parsed command `path` with `params` on `remote` (see the module doc)."""
    check_supported(path)
    cwd = cwd or Path.cwd()
    env = os.environ if env is None else env
    secrets: dict[str, str] = {}
    if "file" in params and path[0] in ("run", "build", "plan"):
        plan = _plan.build(_spec.load(cwd / params["file"]))  # local file:line:col errors, before connecting
        if path[0] == "run":
            secrets = _secrets(plan, env, "run")
    elif path[0] == "retry":
        local = _retry_workflow(params, cwd)
        if local is not None:
            secrets = _secrets(_plan.build(_spec.load(local)), env, "retry")
    session = Session(remote, home, streams.notice)
    session.open()
    try:
        cmd = translate(path, params, cwd, session.remote_dir, tty)
        synced = None
        if cmd.workflow is not None:
            synced = session.sync(cmd.workflow.parent)
            streams.notice(
                f"synced {cmd.workflow.parent} to {remote.name}:{synced.remote_dir}: {len(synced.sent)} sent "
                f"({synced.bytes_sent} bytes), {synced.unchanged} unchanged, {len(synced.deleted)} removed"
            )
        if cmd.name == "retry":
            cmd = pin_run(cmd, session.status(list(cmd.where)).run_id)
        if cmd.name not in ("run", "retry"):
            return RemoteOutcome(_found(session.hpcml(cmd.argv, streams.out, streams.err), remote), synced)
        try:
            code = session.submit(cmd.argv, streams.out, streams.err, secrets)
        except KeyboardInterrupt:
            raise RemoteDetached(remote.name, None) from None
        if code != 0 or not cmd.watch:
            return RemoteOutcome(_found(code, remote), synced)
        where = list(cmd.where)
        first = session.status(where)  # the newest run there: the one just submitted
        final = session.watch([first.run_id, *where], streams.on_update, first.run_id, poll_s=poll_s)
        return RemoteOutcome(0 if final.ok else 1, synced, final)
    finally:
        session.close()


def _found(code: int, remote: Remote) -> int:
    """`code`, unless it is the shell's 127: the cluster's hpcml command was not found."""
    if code == 127:
        raise RemoteError(
            f"the cluster has no command {remote.hpcml!r} (exit 127, the shell's message is above): install "
            f"hpcml there and set `hpcml = \"/full/path/to/hpcml\"` in [remotes.{remote.name}] (docs/remote.md)"
        )
    return code


def _retry_workflow(params: Mapping[str, Any], cwd: Path) -> Path | None:
    """The local copy of the workflow a remote `retry` reruns, for the secrets its steps
    name: `--workflow FILE`, else the directory's workflow.yaml (None when there is none:
    the cluster's `hpcml retry` then names any secret it lacks)."""
    if params.get("workflow"):
        return cwd / params["workflow"]
    default = cwd / (params.get("directory") or ".") / "workflow.yaml"
    return default if default.is_file() else None


def _secrets(plan: Any, env: Mapping[str, str], command: str) -> dict[str, str]:
    """The secrets the steps name, from this machine's environment (as `hpcml run` reads them)."""
    wanted = sorted({s for sp in plan.steps.values() for s in sp.step.secrets})
    missing = [s for s in wanted if s not in env]
    if missing:
        raise SubmitError(
            f"secret(s) {', '.join(missing)} are not set in this environment; export them before "
            f"`hpcml --remote … {command}` (they travel to the cluster over SFTP, never on a command line)"
        )
    return {s: env[s] for s in wanted}
