"""Which local command line becomes which command on the cluster.

A command takes a workflow file (run, build, plan: the file is validated and planned
locally, its directory synced, and the remote path passed on), a workflow directory
(status, logs, cancel, runs, retry: `-C DIR` or `--workflow FILE` name the local directory,
whose synced copy the cluster's command reads), or nothing (catalog list|show|verify). Pure: the
paths on the cluster come from `to_remote`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hpcml.errors import RemoteError

#: Commands that `hpcml --remote NAME` runs on the cluster (group commands as "catalog list").
SUPPORTED = ("run", "retry", "status", "logs", "cancel", "runs", "build", "plan", "catalog list", "catalog show",
             "catalog verify", "catalog scan")


@dataclass(frozen=True)
class RemoteCommand:
    """The cluster's `hpcml ARGV`, and what the laptop does first."""

    name: str
    argv: tuple[str, ...]
    workflow: Path | None = None  # validated and planned here, its directory synced
    watch: bool = False  # `run`, `retry`: follow the run from here once submitted
    where: tuple[str, ...] = ()  # `run`, `retry`: the cluster's `--workflow F` / `-C DIR` to follow it by


def check_supported(path: tuple[str, ...]) -> str:
    """The command's name; RemoteError listing the supported ones when it has no remote form."""
    name = " ".join(path)
    if name not in SUPPORTED:
        raise RemoteError(f"`hpcml {name}` does not run with --remote; these do: {', '.join(SUPPORTED)}")
    return name


def pin_run(cmd: RemoteCommand, run_id: str) -> RemoteCommand:
    """`retry` of the latest run made `retry RUN_ID`: done again after a dropped connection,
    it still names the run that failed, not the retry the first attempt started."""
    if cmd.name != "retry" or (len(cmd.argv) > 1 and cmd.argv[1] != "--detach"):
        return cmd
    return replace(cmd, argv=(cmd.argv[0], run_id, *cmd.argv[1:]))


def translate(
    path: tuple[str, ...], params: Mapping[str, Any], cwd: Path, to_remote: Callable[[Path], str], tty: bool
) -> RemoteCommand:
    """The remote form of the parsed command `path` (e.g. ("catalog", "list")) with `params`.

    `to_remote(local_dir)` is the directory the cluster's copy of `local_dir` is synced to;
    `tty` says whether stdout is a terminal (run watches by default there, as locally).
    """
    name = check_supported(path)
    p = dict(params)

    def file_on_cluster(file: str) -> tuple[Path, str]:
        local = Path(os.path.abspath(cwd / file))
        return local, f"{to_remote(local.parent)}/{local.name}"

    def where() -> list[str]:
        if p.get("workflow"):
            return ["--workflow", file_on_cluster(p["workflow"])[1]]
        return ["-C", to_remote(Path(os.path.abspath(cwd / (p.get("directory") or "."))))]

    flags = {"as_json": "--json"}
    json_flag = [flags["as_json"]] if p.get("as_json") else []
    if name in ("run", "build", "plan"):
        local, remote = file_on_cluster(p["file"])
        if name == "run":
            argv = ["run", remote, "--detach", *(["--executor", p["executor"]] if p.get("executor") else [])]
            for flag, key in (("--only", "only"), ("--from", "start"), ("--until", "until"), ("--force", "force")):
                argv += [a for v in p.get(key) or () for a in (flag, v)]
            watch = tty if p.get("watch") is None else bool(p["watch"])
            return RemoteCommand(name, tuple(argv), local, watch, ("--workflow", remote))
        if name == "build":
            argv = ["build", remote, *p.get("images", ()), *(["-j", str(p["jobs"])] if p.get("jobs") else []),
                    *(["--scan"] if p.get("scan") else [])]
        else:
            argv = ["plan", remote, *json_flag]
        return RemoteCommand(name, tuple(argv), local)
    if name == "retry":
        # No sync: a retry reruns the cluster's copy as its run saw it (an edited copy would
        # change the keys, which the cluster's `hpcml retry` refuses).
        argv = ["retry", *([p["run"]] if p.get("run") else []), "--detach",
                *(["--executor", p["executor"]] if p.get("executor") else []), *where()]
        watch = tty if p.get("watch") is None else bool(p["watch"])
        return RemoteCommand(name, tuple(argv), None, watch, tuple(where()))
    if name == "status":
        return RemoteCommand(name, ("status", *([p["run"]] if p.get("run") else []), *json_flag, *where()))
    if name == "logs":
        argv = ["logs", p["target"], *(["-f"] if p.get("follow") else []),
                *(["--run", p["run"]] if p.get("run") else []), *where()]
        return RemoteCommand(name, tuple(argv))
    if name == "cancel":
        return RemoteCommand(name, ("cancel", *([p["run"]] if p.get("run") else []), *where()))
    if name == "runs":
        return RemoteCommand(name, ("runs", *json_flag, *where()))
    if name == "catalog scan":
        argv = ["catalog", "scan", *p.get("refs", ()), *(["--all"] if p.get("all_images") else []),
                *(["--stale", p["stale"]] if p.get("stale") else []),
                *(["--fail-on", p["fail_on"]] if p.get("fail_on") else []), *json_flag]
        return RemoteCommand(name, tuple(argv))
    # catalog list | show | verify
    sub = path[1]
    return RemoteCommand(name, ("catalog", sub, *([p["ref"]] if p.get("ref") else []), *json_flag))
