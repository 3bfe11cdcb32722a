"""`hpcml doctor`: a preflight for a new user on a new cluster (docs/doctor.md lists every
check). Each check says pass, warn or fail, what it found, and the fix.

The checks live by subject: `apptainer` (version, how it can build and run), `slurm`
(controller, accounting, arrays, partitions, GPUs), `storage` (catalogs, build scratch
space, CA bundle) and `gpu` (the optional `--gpu` job). Facts are gathered through the
runner; judging them is pure, so other machines' facts can be tested here.

Example:

    report = doctor.run(config.load(), LocalRunner())
    report.ok, [c.status for c in report.checks]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hpcml.clients.runner import Runner
from hpcml.config import Settings
from hpcml.doctor import apptainer as _apptainer
from hpcml.doctor import slurm as _slurm
from hpcml.doctor import storage as _storage
from hpcml.model import Step
from hpcml.results import Check, DoctorReport


def run(
    settings: Settings,
    runner: Runner,
    *,
    steps: Sequence[Step] = (),
    gpu: bool = False,
    gpu_sif: str | None = None,
    gpu_partition: str | None = None,
    env: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Every check, in the order docs/doctor.md lists them. `steps` (a workflow's) adds
    their partitions and GPU requests to the SLURM checks; `gpu` submits the GPU job."""
    facts = _apptainer.gather(settings, runner)
    checks: list[Check] = [_apptainer.version_check(facts), _apptainer.build_check(facts), _apptainer.run_check(facts)]
    cluster = _slurm.gather(runner)
    checks += _slurm.checks(cluster, executor=settings.executor, gpu_request=settings.gpu_request, steps=steps,
                            build_partition=settings.build_partition if settings.build_on == "slurm" else None)
    checks += _storage.catalog_checks(settings)
    checks += _storage.space_checks(env)
    checks.append(_storage.ca_check(settings))
    if gpu:
        from hpcml.doctor.gpu import (
            gpu_check,  # start-up speed: only --gpu submits a job
        )

        checks.append(gpu_check(settings, runner, cluster, gpu_sif, partition=gpu_partition))
    return DoctorReport(tuple(checks))


__all__ = ["run"]
