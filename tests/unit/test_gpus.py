"""GPU requests → sbatch and apptainer flags; style detection from scontrol config."""

from __future__ import annotations

import pytest

from hpcml.errors import SubmitError
from hpcml.render.gpus import container_gpu_flags, detect_style, sbatch_gpu_flags, style_from_config
from hpcml.model import Resources


@pytest.mark.parametrize(
    ("res", "style", "flags"),
    [
        (Resources(gpus=1), "gres", ["--gres=gpu:1"]),
        (Resources(gpus=2, gpu_type="a100"), "gres", ["--gres=gpu:a100:2"]),
        (Resources(gpus=1), "gpus-per-node", ["--gpus-per-node=1"]),
        (Resources(gpus=4, gpu_type="h100", cpus_per_gpu=8), "gpus-per-node", ["--gpus-per-node=h100:4", "--cpus-per-gpu=8"]),
        (Resources(gpus=0, cpus_per_gpu=8), "gres", []),
    ],
)
def test_sbatch_flags(res: Resources, style: str, flags: list[str]) -> None:
    assert sbatch_gpu_flags(res, style) == flags  # type: ignore[arg-type]


def test_bad_gpu_type_is_refused() -> None:
    with pytest.raises(SubmitError, match="invalid gpu_type"):
        sbatch_gpu_flags(Resources(gpus=1, gpu_type="a100 --uid=0"), "gres")


def test_container_flags_only_for_gpu_steps() -> None:
    assert container_gpu_flags(Resources()) == []
    assert container_gpu_flags(Resources(gpus=1)) == ["--nv"]
    assert container_gpu_flags(Resources(gpus=1, gpu_vendor="amd")) == ["--rocm"]


def test_style_from_config() -> None:
    assert style_from_config({"SelectType": "select/cons_tres", "GresTypes": "gpu"}) == "gpus-per-node"
    assert style_from_config({"SelectType": "select/cons_res"}) == "gres"
    assert style_from_config({"SelectType": "select/cons_tres"}, "gres") == "gres"
    with pytest.raises(SubmitError, match="allowed"):
        style_from_config({}, "tres")


class _Config:
    calls = 0

    def show_config(self) -> dict[str, str]:
        self.calls += 1
        return {"SelectType": "select/linear"}


def test_detect_style_asks_only_when_needed() -> None:
    cfg = _Config()
    assert detect_style(cfg, "gpus-per-node") == "gpus-per-node" and cfg.calls == 0
    assert detect_style(cfg) == "gres" and cfg.calls == 1
