"""A step's GPU request → sbatch flags and apptainer flags.

SLURM offers two spellings for "N GPUs per node": the classic generic resource
(`--gres=gpu[:type]:N`, every SLURM) and the TRES form (`--gpus-per-node=[type:]N`,
needs `select/cons_tres`). Which one a cluster takes is detected from `scontrol show
config` and can be forced with the `gpu_request` setting.

Inside the container the step sees exactly the devices SLURM allocated: the job wrapper
passes CUDA_VISIBLE_DEVICES (and the ROCm equivalents: `protocol.DEVICE_ENV_VARS`)
through `--cleanenv` as APPTAINERENV_* variables, and `--nv`/`--rocm` is added only when
the step has GPUs.

Example:

    sbatch_gpu_flags(Resources(gpus=2, gpu_type="a100", cpus_per_gpu=4), "gres")
    # ['--gres=gpu:a100:2', '--cpus-per-gpu=4']
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Protocol

from hpcml.errors import SubmitError
from hpcml.model import Resources

GpuStyle = Literal["gres", "gpus-per-node"]
STYLES: tuple[GpuStyle, ...] = ("gres", "gpus-per-node")

# A GPU type ends up inside an sbatch directive: keep it to what SLURM type names use.
_GPU_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def sbatch_gpu_flags(resources: Resources, style: GpuStyle) -> list[str]:
    """The sbatch flags asking for the step's GPUs; empty for a CPU-only step.

    Example: ``sbatch_gpu_flags(Resources(gpus=1), "gpus-per-node") == ["--gpus-per-node=1"]``.
    """
    if resources.gpus <= 0:
        return []
    if style not in STYLES:
        raise SubmitError(f"unknown GPU request style {style!r}; allowed: {', '.join(STYLES)}")
    gpu_type = resources.gpu_type
    if gpu_type is not None and not _GPU_TYPE.fullmatch(gpu_type):
        raise SubmitError(f"invalid gpu_type {gpu_type!r}: letters, digits, '.', '_' and '-' only")
    if style == "gres":
        flags = [f"--gres=gpu:{gpu_type}:{resources.gpus}" if gpu_type else f"--gres=gpu:{resources.gpus}"]
    else:
        flags = [f"--gpus-per-node={gpu_type}:{resources.gpus}" if gpu_type else f"--gpus-per-node={resources.gpus}"]
    if resources.cpus_per_gpu:
        flags.append(f"--cpus-per-gpu={resources.cpus_per_gpu}")
    return flags


def container_gpu_flags(resources: Resources) -> list[str]:
    """`--nv` (NVIDIA) or `--rocm` (AMD) for a GPU step; nothing for a CPU-only step."""
    if resources.gpus <= 0:
        return []
    return ["--rocm"] if resources.gpu_vendor == "amd" else ["--nv"]


def style_from_config(config: Mapping[str, str], override: str = "auto") -> GpuStyle:
    """Pick the request style from parsed `scontrol show config` (see slurm.parse_config).

    `override` is the `gpu_request` setting: "gres" or "gpus-per-node" win; "auto" takes
    `--gpus-per-node` where the cluster uses select/cons_tres (the only plugin that
    understands it) and `--gres` everywhere else.
    """
    if override in STYLES:
        return override  # type: ignore[return-value]
    if override != "auto":
        raise SubmitError(f"invalid gpu_request {override!r}; allowed: auto, {', '.join(STYLES)}")
    select = config.get("SelectType", "")
    return "gpus-per-node" if "cons_tres" in select else "gres"


class SlurmLike(Protocol):
    """What detect_style needs of hpcml.clients.slurm.Slurm."""

    def show_config(self) -> Mapping[str, str]: ...


def detect_style(slurm: SlurmLike, override: str = "auto") -> GpuStyle:
    """Ask the cluster (one `scontrol show config`) unless `override` already decides."""
    if override in STYLES:
        return override  # type: ignore[return-value]
    return style_from_config(slurm.show_config(), override)
