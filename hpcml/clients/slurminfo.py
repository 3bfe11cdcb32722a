"""What a cluster offers, for `hpcml doctor`: partitions and nodes, argv builders and pure
parsers (kept apart from clients/slurm.py, which is about jobs).

- `scontrol show partition -o`: one line per partition, `Key=Value` pairs separated by
  spaces (`PartitionName=cpu AllowGroups=ALL … State=UP … TRES=cpu=2,…,gres/gpu=2`).
- `scontrol show node -o`: one line per node (`NodeName=vm … Gres=gpu:a100:4(S:0) …
  Partitions=cpu,gpu …`).

Example:

    parts = parse_partitions(text)
    parts[0].name, parts[0].up, parts[0].allow_groups   # ('cpu', True, ('ALL',))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARTITIONS_ARGV = ("scontrol", "show", "partition", "-o")
NODES_ARGV = ("scontrol", "show", "node", "-o")


@dataclass(frozen=True)
class Partition:
    name: str
    up: bool
    default: bool
    hidden: bool
    root_only: bool
    allow_groups: tuple[str, ...]  # ('ALL',) when anyone may use it
    deny_accounts: tuple[str, ...]
    allow_accounts: tuple[str, ...]
    nodes: str
    gpus: int  # gres/gpu in the partition's TRES (0: none)

    def usable_by(self, groups: set[str], root: bool = False) -> bool:
        """Whether a user in `groups` may submit here (accounts are not known locally)."""
        if self.root_only and not root:
            return False
        return root or "ALL" in self.allow_groups or bool(groups & set(self.allow_groups))


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    gpus: dict[str, int]  # GPU type ('' when untyped) → count
    state: str


def _pairs(line: str) -> dict[str, str]:
    """`A=1 B=x y=2` → {A: '1', B: 'x', y: '2'}; a value runs to the next ` Key=`."""
    out: dict[str, str] = {}
    for match in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/]*=|\s*$)", line):
        out.setdefault(match.group(1), match.group(2).strip())
    return out


def _list(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v and v != "(null)")


def parse_partitions(text: str) -> list[Partition]:
    """`scontrol show partition -o` → one Partition per line."""
    out = []
    for line in text.splitlines():
        if not line.startswith("PartitionName="):
            continue
        kv = _pairs(line)
        tres = dict(p.partition("=")[::2] for p in kv.get("TRES", "").split(",") if "=" in p)
        out.append(Partition(
            name=kv["PartitionName"],
            up=kv.get("State", "UP") == "UP",
            default=kv.get("Default") == "YES",
            hidden=kv.get("Hidden") == "YES",
            root_only=kv.get("RootOnly") == "YES",
            allow_groups=_list(kv.get("AllowGroups", "ALL")) or ("ALL",),
            deny_accounts=_list(kv.get("DenyAccounts", "")),
            allow_accounts=_list(kv.get("AllowAccounts", "ALL")) or ("ALL",),
            nodes=kv.get("Nodes", ""),
            gpus=_int(tres.get("gres/gpu", "0")),
        ))
    return out


def parse_gres(text: str) -> dict[str, int]:
    """A node's `Gres=` value → GPUs per type: `gpu:a100:4(S:0-1),gpu:2` → {'a100': 4, '': 2}."""
    out: dict[str, int] = {}
    for item in re.split(r",(?![^()]*\))", text):
        fields = re.sub(r"\(.*\)$", "", item.strip()).split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        gpu_type, count = ("", fields[1]) if len(fields) == 2 else (fields[1], fields[2])
        out[gpu_type] = out.get(gpu_type, 0) + _int(count)
    return out


def parse_nodes(text: str) -> list[Node]:
    """`scontrol show node -o` → one Node per line."""
    out = []
    for line in text.splitlines():
        if not line.startswith("NodeName="):
            continue
        kv = _pairs(line)
        out.append(Node(kv["NodeName"], _list(kv.get("Partitions", "")), parse_gres(kv.get("Gres", "")),
                        kv.get("State", "")))
    return out


def _int(text: str) -> int:
    match = re.match(r"\d+", text)
    return int(match.group()) if match else 0
