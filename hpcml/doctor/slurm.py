"""`hpcml doctor`: is SLURM reachable, and does it offer what hpcml (and a workflow) needs.

`gather` asks the cluster once (scontrol ping/show config/partition/node, one sacct);
the checks below judge the answers and are pure, so the unit tests feed them pasted
output of other clusters. With a workflow, its steps' partitions and GPUs are checked too.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hpcml.clients.runner import Runner
from hpcml.clients.slurm import ACCOUNTING_DISABLED, Slurm, max_array_size
from hpcml.clients.slurminfo import (
    NODES_ARGV,
    PARTITIONS_ARGV,
    Node,
    Partition,
    parse_nodes,
    parse_partitions,
)
from hpcml.errors import SubmitError
from hpcml.model import Step
from hpcml.render.gpus import style_from_config
from hpcml.results import Check

ACCOUNTING_FIX = ("ask an administrator to run slurmdbd and set AccountingStorageType=accounting_storage/slurmdbd; "
                  "until then `hpcml status` cannot tell why a job that left squeue failed (TIMEOUT, OUT_OF_MEMORY) "
                  "and the run report has no usage figures")


@dataclass(frozen=True)
class Cluster:
    """What the cluster answered (`reachable` False: nothing else was asked)."""

    reachable: bool
    why: str
    config: Mapping[str, str] = field(default_factory=dict)
    sacct_error: str | None = None  # None: sacct answered
    partitions: tuple[Partition, ...] = ()
    nodes: tuple[Node, ...] = ()
    groups: frozenset[str] = frozenset()
    root: bool = False
    partitions_error: str | None = None  # `scontrol show partition` failed: why


def gather(runner: Runner) -> Cluster:
    slurm = Slurm(runner)
    ok, why = slurm.usable()
    if not ok:
        return Cluster(False, why)
    try:
        config = slurm.show_config()
    except SubmitError as err:
        return Cluster(False, str(err))
    acct = runner.run(["sacct", "-X", "--noheader", "--parsable2", "-o", "JobID", "-S", "now"], timeout=60)
    sacct_error = None if acct.ok else (acct.tail(3) or f"exit {acct.returncode}")
    parts = runner.run(list(PARTITIONS_ARGV), timeout=60)
    nodes = runner.run(list(NODES_ARGV), timeout=60)
    return Cluster(True, why, config, sacct_error, tuple(parse_partitions(parts.stdout)),
                   tuple(parse_nodes(nodes.stdout)), _my_groups(), os.getuid() == 0,
                   None if parts.ok else (parts.tail(3) or f"exit {parts.returncode}"))


def checks(cluster: Cluster, *, executor: str, gpu_request: str, steps: Sequence[Step] = (),
           build_partition: str | None = None) -> list[Check]:
    """Every SLURM check, in order; all but the first are skipped when slurmctld is not reached."""
    first = controller_check(cluster, executor)
    if not cluster.reachable:
        skipped = [("slurm.accounting", "SLURM accounting"), ("slurm.arrays", "SLURM job arrays"),
                   ("slurm.partitions", "SLURM partitions"), ("slurm.gpus", "SLURM GPUs")]
        return [first, *(Check(i, t, "skip", "SLURM is not reachable") for i, t in skipped)]
    return [first, accounting_check(cluster), arrays_check(cluster), partitions_check(cluster, steps, build_partition),
            gpus_check(cluster, gpu_request, steps)]


def controller_check(cluster: Cluster, executor: str) -> Check:
    title = "SLURM reachable"
    if cluster.reachable:
        return Check("slurm.controller", title, "pass", cluster.why)
    if executor == "slurm":
        return Check("slurm.controller", title, "fail", f"{cluster.why}, but the setting executor = \"slurm\"",
                     "run hpcml on a login node of the cluster, ask an administrator why slurmctld does not answer "
                     "(`scontrol ping`), or use `hpcml --remote NAME` (docs/remote.md)")
    return Check("slurm.controller", title, "warn", f"{cluster.why}: tasks run with the local executor here",
                 "to use SLURM, run hpcml on a login node of the cluster or use `hpcml --remote NAME` (docs/remote.md)")


def accounting_check(cluster: Cluster) -> Check:
    title = "SLURM accounting"
    storage = cluster.config.get("AccountingStorageType", "accounting_storage/none")
    if storage.endswith("/none"):
        return Check("slurm.accounting", title, "warn", f"accounting is off (AccountingStorageType={storage})",
                     ACCOUNTING_FIX)
    if cluster.sacct_error is not None:
        disabled = ACCOUNTING_DISABLED in cluster.sacct_error.lower()
        return Check("slurm.accounting", title, "warn",
                     f"AccountingStorageType={storage}, but sacct fails: {cluster.sacct_error}"
                     + (" (accounting storage is disabled)" if disabled else ""),
                     "ask an administrator whether slurmdbd runs and answers (`sacctmgr show cluster`)")
    return Check("slurm.accounting", title, "pass", f"sacct answers ({storage})")


def arrays_check(cluster: Cluster) -> Check:
    size = max_array_size(cluster.config)
    title = "SLURM job arrays"
    if size <= 1:
        return Check("slurm.arrays", title, "warn", f"MaxArraySize={size}: job arrays are off, each task is its own job",
                     "ask an administrator to raise MaxArraySize (SLURM's default is 1001)")
    return Check("slurm.arrays", title, "pass",
                 f"MaxArraySize={size}: a step of more than {size} tasks is submitted as several arrays")


def partitions_check(cluster: Cluster, steps: Sequence[Step] = (), build_partition: str | None = None) -> Check:
    """Partitions this user can submit to; with steps, that each step's partition is one
    (and the build jobs' `build_partition`, when set)."""
    title = "SLURM partitions"
    if cluster.partitions_error is not None:
        return Check("slurm.partitions", title, "fail", f"`scontrol show partition` failed: {cluster.partitions_error}",
                     "ask an administrator why scontrol cannot list the partitions")
    usable = [p for p in cluster.partitions if p.up and p.usable_by(set(cluster.groups), cluster.root)]
    names = ", ".join(p.name + ("*" if p.default else "") for p in usable) or "none"
    if not usable:
        return Check("slurm.partitions", title, "fail", "no partition is up and open to you",
                     "ask an administrator which partition (and account) to use")
    by_name = {p.name: p for p in cluster.partitions}
    problems = []
    asks = [(f"step {s.name}", s.resources.partition) for s in steps]
    if build_partition:
        asks.append(("the setting build_partition", build_partition))
    for who, wanted in asks:
        if wanted is None:
            if not any(p.default for p in usable):
                problems.append(f"{who} names no partition and this cluster has no default one you can use")
            continue
        for name in wanted.split(","):
            part = by_name.get(name)
            if part is None:
                problems.append(f"{who} asks for partition {name!r}, which this cluster does not have")
            elif part not in usable:
                why = "is down" if not part.up else "is not open to you (AllowGroups/RootOnly)"
                problems.append(f"{who} asks for partition {name!r}, which {why}")
    if problems:
        return Check("slurm.partitions", title, "fail", "; ".join(problems) + f" (yours: {names}; * default)",
                     f"set `partition:` of those steps (or build_partition) to one of: "
                     f"{', '.join(p.name for p in usable)} (or leave it out for the default)")
    return Check("slurm.partitions", title, "pass", f"you can use: {names} (* default)")


def gpus_check(cluster: Cluster, gpu_request: str, steps: Sequence[Step] = ()) -> Check:
    """GPU generic resources, their types and partitions, and the request style that fits."""
    title = "SLURM GPUs"
    select = cluster.config.get("SelectType", "")
    if gpu_request == "gpus-per-node" and "cons_tres" not in select:
        return Check("slurm.gpus", title, "fail",
                     f"gpu_request = \"gpus-per-node\", but SelectType={select} does not understand --gpus-per-node",
                     "set gpu_request = \"auto\" (or \"gres\") in your configuration (docs/configuration.md)")
    style = style_from_config(cluster.config, gpu_request)
    types: dict[str, int] = {}
    gpu_parts: set[str] = set()
    for node in cluster.nodes:
        for gpu_type, count in node.gpus.items():
            types[gpu_type] = types.get(gpu_type, 0) + count
            gpu_parts.update(node.partitions)
    gpu_parts |= {p.name for p in cluster.partitions if p.gpus}
    default = next((p.name for p in cluster.partitions if p.default), None)
    problems = []
    for step in steps:
        if step.resources.gpus <= 0:
            continue
        parts = (step.resources.partition or default or "").split(",")
        if not any(p in gpu_parts for p in parts):
            problems.append(f"step {step.name} asks for GPUs in partition {','.join(parts) or '(default)'}, "
                            "which has none")
        if step.resources.gpu_type and step.resources.gpu_type not in types:
            problems.append(f"step {step.name} asks for GPU type {step.resources.gpu_type!r}, which no node has")
    found = ", ".join(f"{n} x {t or 'untyped'}" for t, n in sorted(types.items())) or "none"
    detail = f"GPUs: {found}; partitions with GPUs: {', '.join(sorted(gpu_parts)) or 'none'}; requested as {style_flag(style)}"
    if problems:
        typed = ", ".join(sorted(t for t in types if t)) or "no types (ask for a count only)"
        return Check("slurm.gpus", title, "fail", "; ".join(problems) + f" ({detail})",
                     f"use a partition with GPUs ({', '.join(sorted(gpu_parts)) or 'none here'}) and a gpu_type "
                     f"this cluster has: {typed}")
    return Check("slurm.gpus", title, "pass", detail)


def style_flag(style: str) -> str:
    return "--gres=gpu:N" if style == "gres" else "--gpus-per-node=N"


def _my_groups() -> frozenset[str]:
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)
