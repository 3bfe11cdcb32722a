"""What this machine offers the local executor: CPUs, memory and GPUs, and where each came from.

Precedence, for each resource: configuration (`local_cpus`, `local_mem_mb`, `local_gpus`,
i.e. HPCML_LOCAL_* or config.toml) > what this process may use (CPU affinity,
CUDA_VISIBLE_DEVICES) > what the machine has (/proc/meminfo, `nvidia-smi -L`).

Example:

    cap = discover(settings_gpus=("0", "1"))
    cap.gpus      # ('0', '1')
    cap.sources   # {'cpus': 'CPU affinity of this process', 'gpus': 'configuration (local_gpus)', ...}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from hpcml.clients.runner import LocalRunner, Runner


@dataclass(frozen=True)
class Capacity:
    """The slots the local scheduler hands out. `gpus` are device ids as CUDA_VISIBLE_DEVICES
    takes them (indices or UUIDs); `sources` says where each number came from, for messages."""

    cpus: int
    mem_mb: int
    gpus: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line for `hpcml run`: '2 CPUs, 23.4 GiB, GPUs 0,1 (from …)'."""
        gpus = f"GPUs {','.join(self.gpus)}" if self.gpus else "no GPUs"
        return f"{self.cpus} CPUs, {self.mem_mb / 1024:.1f} GiB memory, {gpus}"


def discover(
    *,
    settings_cpus: int | None = None,
    settings_mem_mb: int | None = None,
    settings_gpus: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
    meminfo: str = "/proc/meminfo",
) -> Capacity:
    """Find the CPUs, memory and GPUs the local executor may hand out (see module docstring)."""
    env = os.environ if env is None else env
    cpus, cpu_src = _cpus(settings_cpus)
    mem, mem_src = _mem(settings_mem_mb, meminfo)
    gpus, gpu_src = _gpus(settings_gpus, env, runner or LocalRunner())
    return Capacity(cpus, mem, gpus, {"cpus": cpu_src, "mem": mem_src, "gpus": gpu_src})


def _cpus(configured: int | None) -> tuple[int, str]:
    if configured:
        return configured, "configuration (local_cpus)"
    try:
        return len(os.sched_getaffinity(0)), "CPU affinity of this process"
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return os.cpu_count() or 1, "os.cpu_count()"


def _mem(configured: int | None, meminfo: str) -> tuple[int, str]:
    if configured:
        return configured, "configuration (local_mem_mb)"
    try:
        with open(meminfo, encoding="ascii") as fh:
            return parse_meminfo(fh.read()), meminfo
    except (OSError, ValueError):
        # Unknown memory: memory requests cannot be checked, so do not refuse any.
        return 2**31, "unknown (memory requests not limited)"


def parse_meminfo(text: str) -> int:
    """MemTotal of /proc/meminfo text, in MiB. Raises ValueError when absent."""
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    if not match:
        raise ValueError("no MemTotal line")
    return int(match.group(1)) // 1024


def _gpus(
    configured: Sequence[str] | None, env: Mapping[str, str], runner: Runner
) -> tuple[tuple[str, ...], str]:
    if configured is not None:
        return tuple(configured), "configuration (local_gpus / HPCML_LOCAL_GPUS)"
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_visible_devices(env["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    done = runner.run(["nvidia-smi", "-L"], timeout=30)
    if done.ok:
        return parse_nvidia_smi_list(done.stdout), "nvidia-smi -L"
    return (), "none found (no local_gpus, no CUDA_VISIBLE_DEVICES, no working nvidia-smi)"


def parse_visible_devices(text: str) -> tuple[str, ...]:
    """CUDA_VISIBLE_DEVICES → device ids. CUDA stops at the first invalid (e.g. -1) entry."""
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        out.append(item)
    return tuple(out)


def parse_nvidia_smi_list(text: str) -> tuple[str, ...]:
    """`nvidia-smi -L` output → device indices ('GPU 0: NVIDIA A100 (UUID: GPU-…)' → '0')."""
    return tuple(m.group(1) for m in re.finditer(r"^GPU (\d+):", text, re.MULTILINE))
