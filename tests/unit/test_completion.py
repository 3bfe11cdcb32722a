"""Shell completion through click's entry point (`_HPCML_COMPLETE=… hpcml`), as bash, zsh
and fish call it: step names, image names and run ids of the workflow at hand."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The installed console script: click names the completion variable after the program.
HPCML = [str(Path(sys.executable).with_name("hpcml"))]


def complete(cwd: Path, line: str, shell: str = "bash") -> list[str]:
    """What the shell would offer for `line` (a trailing space: complete a new word)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    # fish passes the word being completed itself, bash and zsh its index
    incomplete = ("" if line.endswith(" ") else words[-1]) if shell == "fish" else str(cword)
    env = {**os.environ, "_HPCML_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": incomplete}
    out = subprocess.run(HPCML, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line]
    if shell == "zsh":  # type, value, help: three lines per item
        return lines[1::3]
    return [item.split(",", 1)[1] for item in lines]  # bash and fish: type,value


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "workflows", tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".hpcml"))
    (tmp_path / "workflow.yaml").write_bytes((tmp_path / "quickstart.yaml").read_bytes())
    return tmp_path


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_logs_completes_the_step_names_of_workflow_yaml(project: Path, shell: str) -> None:
    assert complete(project, "hpcml logs ", shell) == ["prepare", "train", "evaluate"]
    assert complete(project, "hpcml logs t", shell) == ["train"]


def test_step_names_come_from_workflow_given_on_the_command_line(project: Path) -> None:
    (project / "workflow.yaml").unlink()
    assert complete(project, "hpcml logs --workflow sweep.yaml ") == ["prepare", "train", "evaluate"]
    # no workflow.yaml and no run: nothing to offer, and no error
    assert complete(project, "hpcml logs ") == []


def test_build_completes_image_names_of_file(project: Path) -> None:
    assert complete(project, "hpcml build quickstart.yaml ") == ["numpy"]


def test_run_ids_newest_first_and_steps_from_the_latest_run(project: Path) -> None:
    runs = project / ".hpcml" / "runs"
    for run_id in ("20261201-100000-aaaa", "20261202-100000-bbbb"):
        (runs / run_id).mkdir(parents=True)
    (runs / "20261202-100000-bbbb" / "workflow.yaml").write_text("steps: {only: {run: x}}\n")
    assert complete(project, "hpcml status ") == ["20261202-100000-bbbb", "20261201-100000-aaaa"]
    assert complete(project, "hpcml cancel 20261201") == ["20261201-100000-aaaa"]
    assert complete(project, "hpcml logs prepare --run ") == ["20261202-100000-bbbb", "20261201-100000-aaaa"]
    (project / "workflow.yaml").unlink()  # then the latest run's copy names the steps
    assert complete(project, "hpcml logs ") == ["only"]
    assert complete(project.parent, f"hpcml status -C {project} ")[0] == "20261202-100000-bbbb"


def test_a_broken_workflow_completes_nothing_and_does_not_fail(project: Path) -> None:
    (project / "workflow.yaml").write_text("steps: [unclosed\n")
    assert complete(project, "hpcml logs ") == []


def test_the_shell_scripts_are_generated(project: Path) -> None:
    for shell in ("bash", "zsh", "fish"):
        env = {**os.environ, "_HPCML_COMPLETE": f"{shell}_source"}
        script = subprocess.run(HPCML, env=env, capture_output=True, text=True, check=True).stdout
        assert "_HPCML_COMPLETE" in script, shell


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_real_bash_with_the_documented_setup_completes_step_names(project: Path) -> None:
    """docs/completion.md's bash line, then what bash does on <TAB>: call the function with
    the command, the word and the previous word, and read COMPREPLY."""
    script = (
        'eval "$(_HPCML_COMPLETE=bash_source hpcml)"\n'
        'COMP_WORDS=(hpcml logs t); COMP_CWORD=2; _hpcml_completion hpcml t logs\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(HPCML[0]).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["train"]


def test_run_selection_options_complete_step_lists(project: Path) -> None:
    assert complete(project, "hpcml run quickstart.yaml --only ") == ["prepare", "train", "evaluate"]
    assert complete(project, "hpcml run quickstart.yaml --from prepare,t") == ["prepare,train"]
    assert complete(project, "hpcml run quickstart.yaml --force prepare,") == ["prepare,train", "prepare,evaluate"]
