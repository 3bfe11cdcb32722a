"""The job script of `hpcml doctor --gpu`, and the reading of its output. Pure.

The job asks for one GPU on a GPU partition, then reports, one tagged line each, what the
host's driver offers (`nvidia-smi`: driver version, the newest CUDA it supports) and
what the image sees when started with `--nv` (its devices, and the CUDA toolkit version
from `/usr/local/cuda/version.json` when the image has one).

Example:

    render_gpu_script(GpuJobSpec("gpu", ["--gres=gpu:1"], "/c/doctor/out", "apptainer", (), "/c/img.sif"))
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from hpcml.render.jobs import _directive_value, check_path, sbatch_lines

JOB_NAME = "hpcml-doctor-gpu"


@dataclass(frozen=True)
class GpuJobSpec:
    partition: str
    gpu_flags: Sequence[str]  # from render.gpus.sbatch_gpu_flags: validated there
    output: str  # the job's output file (absolute)
    apptainer: str
    exec_flags: Sequence[str]
    sif: str


@dataclass(frozen=True)
class GpuReport:
    """What the job printed: driver and devices on the host and inside the image."""

    driver: str | None = None
    driver_cuda: str | None = None  # the newest CUDA the driver supports
    devices: tuple[str, ...] = ()  # `nvidia-smi -L` inside the container
    image_cuda: str | None = None  # /usr/local/cuda/version.json inside the image
    errors: tuple[str, ...] = field(default=())


def render_gpu_script(spec: GpuJobSpec) -> str:
    check_path(spec.output, "doctor output")
    check_path(spec.sif, "image")
    q = shlex.quote
    inner = ("nvidia-smi -L 2>&1 | sed 's/^/device /'; "
             "if [ -r /usr/local/cuda/version.json ]; then printf 'cuda-json '; tr -d '\\n' < /usr/local/cuda/version.json; echo; fi")
    lines = [
        "#!/bin/bash",
        "# hpcml doctor --gpu: one GPU, the image started with --nv; prints tagged lines for hpcml to read.",
        *sbatch_lines([f"--job-name={JOB_NAME}", f"--partition={_directive_value('partition', spec.partition)}",
                       *spec.gpu_flags, "--ntasks=1", "--time=00:05:00", f"--output={spec.output}"]),
        "",
        "set -u",
        "if command -v nvidia-smi >/dev/null 2>&1; then",
        "  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n 1 | sed 's/^/driver /'",
        "  nvidia-smi 2>&1 | sed -n 's/.*CUDA Version: *\\([0-9.]*\\).*/driver-cuda \\1/p'",
        "else",
        "  echo 'error nvidia-smi is not installed on the compute node'",
        "fi",
        " ".join(q(a) for a in [spec.apptainer, "exec", "--nv", *spec.exec_flags, spec.sif, "sh", "-c", inner]),
        "echo \"container-exit $?\"",
        "",
    ]
    return "\n".join(lines)


def parse_gpu_output(text: str) -> GpuReport:
    """The job's tagged lines → GpuReport (untagged lines are apptainer's own messages)."""
    driver = driver_cuda = image_cuda = None
    devices: list[str] = []
    errors: list[str] = []
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        rest = rest.strip()
        if tag == "driver" and re.fullmatch(r"[0-9.]+", rest):
            driver = rest
        elif tag == "driver-cuda" and rest:
            driver_cuda = rest
        elif tag == "device" and rest.startswith("GPU "):
            devices.append(rest)
        elif tag == "device" and rest:
            errors.append(f"in the image: {rest}")
        elif tag == "cuda-json":
            image_cuda = cuda_from_json(rest)
        elif tag == "error":
            errors.append(rest)
        elif tag == "container-exit" and rest != "0":
            errors.append(f"`apptainer exec --nv` exited {rest}")
    return GpuReport(driver, driver_cuda, tuple(devices), image_cuda, tuple(errors))


def cuda_from_json(text: str) -> str | None:
    """`/usr/local/cuda/version.json`'s toolkit version (`{"cuda": {"version": "12.1.1"}}`)."""
    try:
        version = json.loads(text)["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(version)


def cuda_from_labels(labels: dict[str, str]) -> str | None:
    """A CUDA version an image declares in its labels (CUDA_VERSION, cuda, ….cuda.version)."""
    for key, value in sorted(labels.items()):
        if re.fullmatch(r"(?i)(cuda_version|cuda|.*\.cuda\.version|cuda\.version)", key) and re.match(r"\d+\.\d+", value):
            return value
    return None
