"""Fixtures for the integration tier: the real SLURM, Apptainer and sshd of `slurm/testbed/`.

Each fixture asks `slurm/testbed/status --json` what runs. A part that is down is brought
up by the fixture itself (`slurm/testbed/up --only PART`) when the tests run as root on
Debian; anywhere else the test is skipped with the reason, and under
HPCML_REQUIRE_TESTBED=1 (CI) it fails instead.

`slurm_cluster` has two modes. Plain use gives the cluster with accounting (sacct works);
a module that needs the cluster *without* accounting asks for it with

    pytestmark = pytest.mark.parametrize("slurm_cluster", ["no-accounting"], indirect=True)

The fixture is session-scoped and parametrized, so pytest groups the tests of each mode
and switches (restarting slurmctld/slurmd, ~2 s) only when the mode changes; after the
no-accounting tests it switches back, so the machine is left with accounting on.
See docs/testbed.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from testbed import (
    MODES,
    SIF_CACHE,
    BUSYBOX_DEF,
    TESTBED,
    Apptainer,
    SifCache,
    SlurmCluster,
    Sshd,
    can_provision,
    ensure_up,
    run_quietly,
)


@pytest.fixture(scope="session")
def apptainer() -> Apptainer:
    """The real Apptainer (brought up with `slurm/testbed/up --only apptainer` if needed)."""
    info = ensure_up("apptainer")["apptainer"]
    return Apptainer(info["binary"], info["version"], tuple(info["build_flags"]), tuple(info["exec_flags"]))


@pytest.fixture(scope="session")
def sif_cache(apptainer: Apptainer, tmp_path_factory: pytest.TempPathFactory) -> SifCache:
    """Session-wide cache of tiny base SIFs (see `SifCache`)."""
    root = SIF_CACHE
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        root = tmp_path_factory.mktemp("sifs")
    return SifCache(apptainer, root)


@pytest.fixture(scope="session")
def busybox_sif(sif_cache: SifCache) -> Path:
    """A ~1 MB `Bootstrap: scratch` image: busybox-static with /bin/sh and common applets."""
    return sif_cache.get(BUSYBOX_DEF.read_text(encoding="utf-8"), name="busybox")


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """The real SLURM cluster; "accounting" (default) or "no-accounting" via indirect param."""
    mode = getattr(request, "param", "accounting")
    if mode not in MODES:
        raise ValueError(f"slurm_cluster mode {mode!r}; allowed: {', '.join(MODES)}")
    status = ensure_up("slurm", mode)
    info = status["slurm"]
    yield SlurmCluster(
        accounting=status["mode"] == "accounting",
        partitions=tuple(info["partitions"]),
        default_partition=info["default_partition"],
        gpus=int(info["gpus"]),
        node=info["node"],
        conf=Path(info["conf"]),
        max_array_size=int(info["max_array_size"]),
        min_job_age=int(info["min_job_age"]),
        logs=Path(info["logs"]),
    )
    if mode != "accounting" and can_provision() is None:
        # Leave the machine as other sessions expect it: accounting on.
        run_quietly([str(TESTBED / "up"), "--only", "slurm"], timeout=300)


@pytest.fixture(scope="session")
def sshd() -> Sshd:
    """The test sshd (127.0.0.1:2222, its own host key, one authorized client key)."""
    info = ensure_up("sshd")["sshd"]
    return Sshd(info["host"], int(info["port"]), info["user"], Path(info["key"]), Path(info["known_hosts"]))

