"""`hpcml doctor --gpu`: one short SLURM job on a GPU partition runs an image with `--nv`
and reports the devices it sees and the driver's CUDA version against the image's.

The job is submitted with `sbatch --wait`, so the check takes as long as the queue does
(it is cancelled after `timeout` seconds).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from hpcml.clients.apptainer import Apptainer
from hpcml.clients.runner import Runner
from hpcml.clients.slurm import parse_sbatch
from hpcml.config import Settings
from hpcml.doctor.slurm import Cluster
from hpcml.errors import HpcmlError
from hpcml.model import Resources
from hpcml.render.doctorjob import (
    GpuJobSpec,
    GpuReport,
    cuda_from_labels,
    parse_gpu_output,
    render_gpu_script,
)
from hpcml.render.gpus import sbatch_gpu_flags, style_from_config
from hpcml.results import Check

TITLE = "GPU job with --nv"


def gpu_check(settings: Settings, runner: Runner, cluster: Cluster, sif: str | None, *,
              partition: str | None = None, timeout: float = 600) -> Check:
    """Submit the GPU job and judge what it printed."""
    if not cluster.reachable:
        return Check("gpu.job", TITLE, "skip", "SLURM is not reachable")
    if sif is None:
        return Check("gpu.job", TITLE, "fail", "no image to run",
                     "pass --image NAME[:TAG] (from a catalog) or --image /path/to/image.sif, or a workflow "
                     "with a GPU step whose image is built")
    part = partition or pick_gpu_partition(cluster)
    if part is None:
        return Check("gpu.job", TITLE, "fail", "no partition of this cluster has GPUs",
                     "ask an administrator which partition has GPUs, then pass --partition NAME")
    out_dir = Path(settings.cache_dir) / "doctor"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    output = out_dir / f"gpu-{stamp}-{os.getpid()}.out"
    script = out_dir / f"gpu-{stamp}-{os.getpid()}.sbatch"
    flags = sbatch_gpu_flags(Resources(gpus=1), style_from_config(cluster.config, settings.gpu_request))
    try:
        text = render_gpu_script(GpuJobSpec(part, flags, str(output), settings.apptainer, settings.exec_flags, sif))
    except HpcmlError as err:
        return Check("gpu.job", TITLE, "fail", str(err), "copy the image to a path without blanks or special characters")
    script.write_text(text, encoding="utf-8")
    done = runner.run(["sbatch", "--wait", "--parsable", str(script)], timeout=timeout)
    job = _job_id(done.stdout)
    if done.returncode == 124 and job:
        runner.run(["scancel", job], timeout=60)
        return Check("gpu.job", TITLE, "fail", f"job {job} on partition {part} did not end within {timeout:.0f}s "
                     "(still queued?); cancelled", "try again when the GPU partition is less busy")
    if job is None:
        return Check("gpu.job", TITLE, "fail", f"sbatch on partition {part} failed: {done.tail(5)}",
                     "check the partition and your account (`sacctmgr show assoc user=$USER`)")
    report = parse_gpu_output(_read(output))
    return judge(report, part, job, _image_cuda(settings, runner, sif, report))


def pick_gpu_partition(cluster: Cluster) -> str | None:
    """A partition with GPUs: one named like it (`gpu`, `a100-gpu`) before the default
    partition, which on most clusters is the CPU one even where its nodes have GPUs."""
    with_gpus = {p.name for p in cluster.partitions if p.gpus and p.up}
    with_gpus |= {n for node in cluster.nodes if node.gpus for n in node.partitions}
    default = {p.name for p in cluster.partitions if p.default}
    ranked = sorted(with_gpus, key=lambda n: ("gpu" not in n.lower(), n in default, n))
    return ranked[0] if ranked else None


def judge(report: GpuReport, partition: str, job: str, image_cuda: str | None) -> Check:
    """Devices seen inside the image, and whether the driver is new enough for its CUDA."""
    where = f"job {job} on partition {partition}"
    if not report.devices:
        why = "; ".join(report.errors) or "nvidia-smi inside the image listed no GPU"
        return Check("gpu.job", TITLE, "fail", f"{where}: the image saw no GPU ({why})",
                     "check that the GPU nodes have the NVIDIA driver and that `apptainer exec --nv` works there "
                     "(ask an administrator); the image needs nothing of its own for --nv")
    seen = f"{where}: {len(report.devices)} GPU(s) seen in the image ({report.devices[0]}); driver " \
           f"{report.driver or '?'} supports CUDA {report.driver_cuda or '?'}"
    if image_cuda and report.driver_cuda and _major_minor(image_cuda) > _major_minor(report.driver_cuda):
        return Check("gpu.job", TITLE, "fail", f"{seen}, but the image has CUDA {image_cuda}",
                     f"use an image built on CUDA {report.driver_cuda} or older, or ask for a newer driver")
    return Check("gpu.job", TITLE, "pass", seen + (f"; image CUDA {image_cuda}" if image_cuda else ""))


def _image_cuda(settings: Settings, runner: Runner, sif: str, report: GpuReport) -> str | None:
    if report.image_cuda:
        return report.image_cuda
    try:
        return cuda_from_labels(Apptainer(runner, settings.apptainer).inspect_labels(sif))
    except HpcmlError:
        return None


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


def _job_id(stdout: str) -> str | None:
    try:
        return parse_sbatch(stdout)
    except HpcmlError:
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
