"""`hpcml init`: the starter templates render as their golden files, validate and plan; an
existing requirements.txt or environment.yml is adopted; nothing is ever overwritten."""

from __future__ import annotations

import py_compile
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcml import api
from hpcml.errors import InitError
from hpcml.render import starter

HPCML = [sys.executable, "-m", "hpcml.cli"]


@pytest.mark.parametrize("template", sorted(starter.TEMPLATES))
def test_each_template_validates_plans_and_matches_its_golden(
    template: str, tmp_path: Path, golden: Callable[[str, str], None]
) -> None:
    result = api.init(tmp_path / "My Project", template)
    wf = tmp_path / "My Project" / "workflow.yaml"
    assert result.files[0] == str(wf) and result.adopted is None
    golden(f"init-{template}.yaml", wf.read_text())
    assert api.validate(wf).workflow.name == "my-project"
    plan = api.plan(wf)
    assert [s.name for s in plan.workflow.steps.values()][:1] == ["prepare"]
    for path in result.files[1:]:
        py_compile.compile(path, doraise=True, cfile=str(tmp_path / "pyc"))
    assert "docs/spec.md" in wf.read_text()


def test_gpu_template_checkpoints_and_asks_for_gpus(tmp_path: Path) -> None:
    api.init(tmp_path, "gpu-train")
    train = api.load(tmp_path / "workflow.yaml").steps["train"]
    assert train.checkpoint is not None and train.resources.gpus == 1 and train.retries == 3


def test_requirements_txt_is_adopted(tmp_path: Path, golden: Callable[[str, str], None]) -> None:
    tmp_path = tmp_path / "proj"
    tmp_path.mkdir()
    (tmp_path / "requirements.txt").write_text("numpy>=1.24\n")
    result = api.init(tmp_path)
    assert result.adopted == "requirements.txt"
    golden("init-cpu-sweep-requirements.yaml", (tmp_path / "workflow.yaml").read_text())
    wf = api.load(tmp_path / "workflow.yaml")
    assert wf.images["app"].requirements == "requirements.txt"
    assert "python3-pip" in wf.images["base"].apt
    assert (tmp_path / "requirements.txt").read_text() == "numpy>=1.24\n"  # untouched


def test_environment_yml_pip_list_is_adopted_and_the_rest_listed(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(
        "name: x\ndependencies:\n  - python=3.11\n  - numpy=1.26\n  - pip\n"
        "  - pip:\n    - torch==2.5.*\n    - '--extra-index-url http://x'\n    - \"evil\\n  steps: {}\"\n"
    )
    result = api.init(tmp_path)
    assert result.adopted == "environment.yml"
    assert result.not_adopted == ("numpy=1.26", "--extra-index-url http://x", "evil\n  steps: {}")
    wf = api.load(tmp_path / "workflow.yaml")
    assert wf.images["app"].pip == ("torch==2.5.*",)
    assert "#   evil?  steps: {}" in (tmp_path / "workflow.yaml").read_text()


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "work.py").write_text("mine\n")
    with pytest.raises(InitError, match="never overwrites"):
        api.init(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["src", "work.py"]
    assert (tmp_path / "src" / "work.py").read_text() == "mine\n"


def test_unknown_template_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="available: cpu-sweep, gpu-train"):
        api.init(tmp_path, "tpu")


@pytest.mark.parametrize(("directory", "name"), [("My Project!", "my-project"), ("___", "my-workflow"), ("x" * 80, "x" * 63)])
def test_workflow_name_from_the_directory(directory: str, name: str) -> None:
    assert starter.workflow_name(directory) == name


def test_cli_lists_templates_and_refuses_a_second_init(tmp_path: Path) -> None:
    listed = subprocess.run([*HPCML, "init", "--list"], capture_output=True, text=True, check=True)
    assert listed.stdout.split()[0] == "cpu-sweep" and "gpu-train" in listed.stdout
    bare = subprocess.run([*HPCML, "init", "--template"], capture_output=True, text=True, check=True)
    assert bare.stdout == listed.stdout
    first = subprocess.run([*HPCML, "init", str(tmp_path / "p")], capture_output=True, text=True, check=False)
    assert first.returncode == 0 and f"hpcml validate {tmp_path}/p/workflow.yaml" in first.stdout
    again = subprocess.run([*HPCML, "init", str(tmp_path / "p")], capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "never overwrites" in again.stderr


def test_an_environment_file_with_aliases_is_not_expanded(tmp_path: Path) -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    (tmp_path / "environment.yml").write_text(laughs + "dependencies: [*i]\n")
    result = api.init(tmp_path)
    assert result.not_adopted == ("(the file is not plain YAML: invalid, or it uses aliases)",)
    api.validate(tmp_path / "workflow.yaml")
