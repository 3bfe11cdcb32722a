"""Discovery of the local executor's slots: configuration, environment, /proc, nvidia-smi."""

from __future__ import annotations

import shutil
from pathlib import Path

from hpcml.executors.local.resources import (
    discover,
    parse_meminfo,
    parse_nvidia_smi_list,
    parse_visible_devices,
)
from hpcml.clients.runner import LocalRunner

NVIDIA_SMI_L = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5e2f0c1a-0000-1111-2222-333344445555)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6f3a1d2b-0000-1111-2222-333344445555)
"""


def test_parsers() -> None:
    assert parse_nvidia_smi_list(NVIDIA_SMI_L) == ("0", "1")
    assert parse_nvidia_smi_list("") == ()
    assert parse_visible_devices("0,2") == ("0", "2")
    assert parse_visible_devices("GPU-5e2f,GPU-6f3a") == ("GPU-5e2f", "GPU-6f3a")
    assert parse_visible_devices("") == ()
    assert parse_visible_devices("1,-1,2") == ("1",)  # CUDA stops at the first invalid id
    assert parse_meminfo("MemTotal:       24563744 kB\nMemFree: 1 kB\n") == 23988


def test_configuration_wins_over_environment(tmp_path: Path) -> None:
    cap = discover(
        settings_cpus=3, settings_mem_mb=1000, settings_gpus=("0", "1"),
        env={"CUDA_VISIBLE_DEVICES": "5"},
    )
    assert (cap.cpus, cap.mem_mb, cap.gpus) == (3, 1000, ("0", "1"))
    assert "local_gpus" in cap.sources["gpus"]
    assert cap.describe() == "3 CPUs, 1.0 GiB memory, GPUs 0,1"


def test_visible_devices_then_machine(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2097152 kB\n")
    cap = discover(env={"CUDA_VISIBLE_DEVICES": "2,3"}, meminfo=str(meminfo))
    assert cap.gpus == ("2", "3") and cap.mem_mb == 2048 and cap.cpus >= 1
    # No configuration, no CUDA_VISIBLE_DEVICES: nvidia-smi decides.
    cap = discover(env={}, runner=LocalRunner(), meminfo=str(meminfo))
    if shutil.which("nvidia-smi") is None:
        assert cap.gpus == () and "none found" in cap.sources["gpus"]
    else:
        assert cap.sources["gpus"] == "nvidia-smi -L"
