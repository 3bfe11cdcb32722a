"""The real Apptainer accepts what `hpcml compile` writes: scratch/busybox, image-parent
and localimage definitions are built with `apptainer build --fakeroot` and run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hpcml import api
from hpcml.clients.runner import LocalRunner

pytestmark = pytest.mark.testbed

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def _need_apptainer() -> None:
    if shutil.which("apptainer") and os.path.exists(BUSYBOX):
        return
    reason = "apptainer or busybox missing (run slurm/testbed/up --only apptainer)"
    if os.environ.get("HPCML_REQUIRE_TESTBED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


TINY = """\
hpcml: 1
name: tiny
images:
  tiny:
    from: scratch
    shell: sh
    files: {bin: /bin}
  app:
    from: tiny
    shell: sh
    env: {GREETING: "it's built"}
    post: |
      echo built > /built
    test: test -f /built
    labels: {org.example.team: vision}
steps:
  hello:
    image: app
    run: cat /built > {out}/hello
"""

LOCAL = """\
hpcml: 1
name: local
images:
  onlocal:
    from: localimage:tiny.sif
    shell: sh
    post: echo local > /local
steps:
  hello:
    image: onlocal
    run: cat /local
"""


def _build_all(root: Path, out: Path) -> dict[str, object]:
    runner = LocalRunner()
    keys = json.loads((out / "keys.json").read_text())
    for name in keys["order"]:
        done = runner.run(
            ["apptainer", "build", "--fakeroot", "--force", str(out / f"{name}.sif"), str(out / f"{name}.def")],
            cwd=str(root),  # %files sources are relative to the workflow directory
            timeout=300,
        )
        assert done.ok, f"building {name}:\n{done.tail(40)}"
    return keys


def _exec(sif: Path, *argv: str) -> str:
    done = LocalRunner().run(["apptainer", "exec", "--userns", str(sif), *argv], timeout=120)
    assert done.ok, done.tail()
    return done.stdout


def test_scratch_and_child_images_build_and_run(tmp_path: Path) -> None:
    _need_apptainer()
    root = tmp_path / "wf"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    shutil.copy(BUSYBOX, root / "bin" / "sh")  # %post needs /bin/sh
    (root / "workflow.yaml").write_text(TINY)
    out = tmp_path / "defs"
    api.compile(root / "workflow.yaml", out)
    keys = _build_all(root, out)

    assert _exec(out / "app.sif", "/bin/sh", "-c", "cat /built; echo \"$GREETING\"") == "built\nit's built\n"
    done = LocalRunner().run(["apptainer", "inspect", "--json", "--labels", str(out / "app.sif")], timeout=60)
    assert done.ok, done.tail()
    labels = json.loads(done.stdout)["data"]["attributes"]["labels"]
    assert labels["org.hpcml.key"] == keys["images"]["app"]["key"]
    assert labels["org.example.team"] == "vision"

    # localimage: a SIF inside the workflow directory, referenced relative to it.
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(out / "tiny.sif", local / "tiny.sif")
    (local / "workflow.yaml").write_text(LOCAL)
    out2 = tmp_path / "defs2"
    api.compile(local / "workflow.yaml", out2)
    _build_all(local, out2)
    assert _exec(out2 / "onlocal.sif", "/bin/sh", "-c", "cat /local") == "local\n"
