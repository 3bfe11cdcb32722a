"""Issue 12, finding 1: source names Apptainer's %files shell expansion would interpret are
refused at validate time with their position, and the definition Apptainer gets names only
the staged copies (deffile.localize)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml.errors import SpecError
from hpcml.render import deffile
from hpcml.spec.checker import loads

HOSTILE = ["x$(sh<.p)", "~root/.profile", "a`id`", "$HOME", "'q'", "-rf", "a;b"]


def hostile_root(tmp_path: Path) -> Path:
    """A workflow directory where every hostile name exists as a file (as an attacker would make it)."""
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / ".p").write_text("touch /tmp/pwned\n")
    for name in HOSTILE:
        (wf / name).parent.mkdir(parents=True, exist_ok=True)
        (wf / name).write_text("dummy\n")
    return wf


def messages(text: str, root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        loads(text, "workflow.yaml", root=str(root))
    return [str(d) for d in info.value.diagnostics]


def test_workflow_files_with_shell_names_are_refused_with_position(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    text = ('hpcml: 1\nname: t\nimages:\n  b:\n    from: scratch\n    files:\n'
            '      "x$(sh<.p)": /a\n      "~root/.profile": /stolen\n'
            'steps:\n  a: {image: b, run: x}\n')
    got = messages(text, root)
    assert any(m.startswith("workflow.yaml:7:7: files source 'x$(sh<.p)'") and "with a shell" in m for m in got), got
    assert any(m.startswith("workflow.yaml:8:7: files source '~root/.profile'") for m in got), got


@pytest.mark.parametrize("name", HOSTILE)
def test_requirements_and_localimage_names_are_refused(tmp_path: Path, name: str) -> None:
    root = hostile_root(tmp_path)
    text = (f'hpcml: 1\nname: t\nimages:\n  b: {{from: scratch, requirements: "{name}"}}\n'
            'steps:\n  a: {image: b, run: x}\n')
    assert any(":4:" in m and "with a shell" in m for m in messages(text, root))


def test_handwritten_deffile_sources_are_refused(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    (root / "img.def").write_text("Bootstrap: scratch\n%files\n  ~root/.profile /stolen\n")
    (root / "stage.def").write_text("Bootstrap: scratch\nStage: one\n%files\n  .p /p\n"
                                    "Bootstrap: scratch\n%files from one\n  $(id) /x\n")
    text = ('hpcml: 1\nname: t\nimages:\n  b: {deffile: img.def}\n  c: {deffile: stage.def}\n'
            'steps:\n  a: {image: b, run: x}\n')
    got = messages(text, root)
    assert any(m.startswith("img.def:3:1: %files source '~root/.profile'") for m in got), got
    assert any(m.startswith("stage.def:7:1: %files from: source '$(id)'") for m in got), got


def test_safe_names_still_validate(tmp_path: Path) -> None:
    root = tmp_path / "wf"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a_b-c.1+2,x=y@z").write_text("ok\n")
    text = ('hpcml: 1\nname: t\nimages:\n  b:\n    from: scratch\n    files: {src: /opt/src}\n'
            'steps:\n  a: {image: b, run: x}\n')
    assert loads(text, "workflow.yaml", root=str(root)).images["b"].files[0].src == "src"


def test_localize_names_only_staged_copies() -> None:
    text = ("Bootstrap: localimage\nFrom: ./base.sif\n%arguments\nS=data\n\n%files\n"
            "  {{ S }} /data\n  # a comment stays\n  tool /usr/bin/tool\n%post\n  echo tool\n")
    staged = {"base.sif": "in/0001/base.sif", "data": "in/0002/data", "tool": "in/0003/tool"}
    out = deffile.localize(text, staged, build_args={})
    assert out.split("\n")[1] == "From: in/0001/base.sif"
    assert "in/0002/data /data\n#! was: {{ S }} /data\n" in out  # the argument stays used
    assert "in/0003/tool /usr/bin/tool\n" in out and "  # a comment stays\n" in out
    assert out.endswith("%post\n  echo tool\n")  # scripts untouched


def test_localize_refuses_an_unstaged_source() -> None:
    with pytest.raises(ValueError, match="was not staged"):
        deffile.localize("Bootstrap: scratch\n%files\n  a /a\n", {})


def test_dockerfile_copy_sources_are_refused(tmp_path: Path) -> None:
    root = hostile_root(tmp_path)
    (root / "Dockerfile").write_text("FROM debian:12\nCOPY ~root/.profile /stolen\n")
    text = 'hpcml: 1\nname: t\nimages:\n  b: {dockerfile: Dockerfile}\nsteps:\n  a: {image: b, run: x}\n'
    got = messages(text, root)
    assert any("%files source '~root/.profile'" in m and "with a shell" in m for m in got), got
