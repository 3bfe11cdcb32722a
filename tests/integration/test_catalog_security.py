"""Issue 12 (safe to share a lab catalog), findings 1, 2, 4 and the builder's environment,
on the real Apptainer; the catalog races with two real Unix users sharing a group.
Finding 3 (signatures checked in the job) is in test_signature_in_job.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_images import TESTBED, run_in, settings, write_workflow

from hpcml import plan
from hpcml.errors import BuildError
from hpcml.images import ensure as images
from hpcml.images.catalog import Catalog
from hpcml.spec import checker as spec

pytestmark = [pytest.mark.testbed]


@pytest.fixture(autouse=True)
def _testbed_apptainer(apptainer: Any) -> None:
    TESTBED.update(binary=apptainer.binary, build_flags=apptainer.build_flags, exec_flags=apptainer.exec_flags)


def wait_for(predicate: Any, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- finding 1: %files sources are copies under generated names ----------------------


def test_build_reads_the_hashed_copy_not_the_original(tmp_path: Path) -> None:
    """The original changes while the build runs: the image holds the bytes the key hashed,
    and the definition Apptainer got names only generated copies."""
    wf = write_workflow(tmp_path / "wf", base_post="sleep 3")
    s = settings(tmp_path)
    p = plan.build(spec.load(wf))
    logs: list[str] = []
    result: dict[str, Any] = {}

    def build() -> None:
        try:
            result["sifs"] = images.ensure(p, s, names=["base"],
                                           progress=lambda e: logs.append(e.log) if e.log else None)
        except BuildError as err:  # pragma: no cover - reported by the assertion below
            result["error"] = err

    worker = threading.Thread(target=build)
    worker.start()
    wait_for(lambda: bool(logs) and Path(logs[0]).is_file()
             and "# ---- apptainer build" in Path(logs[0]).read_text(), what="the build to start")
    definition = Path(logs[0]).read_text().split("# ---- definition\n")[1].split("# ---- apptainer build")[0]
    (tmp_path / "wf" / "hello.txt").write_text("changed after hashing\n")
    worker.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert run_in(s, result["sifs"]["base"], "cat /hello.txt") == "hello v1\n"
    files = definition.split("%files\n")[1].split("\n%")[0].strip().split("\n")
    assert files == ["in/0001/busybox /bin/sh", "in/0002/hello.txt /hello.txt"], definition


def test_input_changed_between_plan_and_build_is_refused(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf")
    s = settings(tmp_path)
    p = plan.build(spec.load(wf))
    (tmp_path / "wf" / "hello.txt").write_text("swapped after the plan\n")
    with pytest.raises(BuildError, match="input hello.txt changed after the plan was made"):
        images.ensure(p, s, names=["base"])
    assert Catalog(tmp_path / "cat").keys() == []


def test_hostile_files_names_never_reach_apptainer(tmp_path: Path) -> None:
    """The issue's reproduction: refused at validate with positions, nothing run on the host."""
    wf = tmp_path / "wf"
    wf.mkdir()
    marker = tmp_path / "pwned"
    (wf / ".p").write_text(f"touch {marker}\n")
    (wf / "x$(sh<.p)").write_text("dummy\n")
    (wf / "~root").mkdir()
    (wf / "~root" / ".profile").write_text("dummy\n")
    (wf / "workflow.yaml").write_text(
        'hpcml: 1\nname: t\nimages:\n  b:\n    from: scratch\n    files:\n'
        '      "x$(sh<.p)": /a\n      "~root/.profile": /stolen\nsteps:\n  a: {image: b, run: x}\n')
    with pytest.raises(Exception) as info:
        spec.load(wf / "workflow.yaml")
    text = str(info.value)
    assert "workflow.yaml:7:7: files source 'x$(sh<.p)'" in text and "workflow.yaml:8:7:" in text
    assert not marker.exists()


# ---- the builder's environment ----------------------------------------------------------


def test_builder_environment_stays_out_of_log_manifest_and_image(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hpcml-sentinel-5f0c9e"
    monkeypatch.setenv("HPCML_TEST_SECRET", secret)
    wf = write_workflow(tmp_path / "wf", base_post="env; env > /build-env")
    (tmp_path / "wf" / "host.def").write_text(
        "Bootstrap: scratch\n%setup\n  env\n  env > \"$APPTAINER_ROOTFS/setup-env\"\n"
        "%files\n  busybox /bin/sh\n%post\n  env\n")
    text = (tmp_path / "wf" / "workflow.yaml").read_text().replace(
        "steps:\n", "  host: {deffile: host.def}\nsteps:\n")
    (tmp_path / "wf" / "workflow.yaml").write_text(text)
    s = settings(tmp_path, allow_setup=["host"])
    p = plan.build(spec.load(wf, allow_setup=s.allow_setup))
    sifs = images.ensure(p, s, names=["base", "host"])
    cat = Catalog(tmp_path / "cat")
    for name in ("base", "host"):
        key = p.images[name].key
        log = cat.log_path(key).read_text()
        assert "PATH=" in log  # the build did print its environment
        assert secret not in log, name
        assert secret not in cat.meta_path(key).read_text()
    assert secret not in run_in(s, sifs["base"], "cat /build-env")
    assert secret not in run_in(s, sifs["host"], "cat /setup-env")
    assert json.loads(cat.meta_path(p.images["base"].key).read_text())["key"] == p.images["base"].key
    assert os.environ["HPCML_TEST_SECRET"] == secret


def test_child_builds_from_its_parent_held_open_and_checked(tmp_path: Path) -> None:
    """The parent SIF is opened once, checked (hash and signature) on that descriptor, and
    the child is built from it (`From: /proc/self/fd/N`), not from its catalog path."""
    from test_images import keypair

    priv, pub = keypair(tmp_path)
    wf = write_workflow(tmp_path / "wf")
    s = settings(tmp_path, signing_key=str(priv), verify_key=str(pub), require_signatures=True)
    p = plan.build(spec.load(wf))
    sifs = images.ensure(p, s)
    log = Catalog(tmp_path / "cat").log_path(p.images["child"].key).read_text()
    assert "\nFrom: /proc/self/fd/" in log and str(sifs["base"]) not in log.split("# ---- apptainer build")[0]
    assert run_in(s, sifs["child"], "cat /post-marker; cat /hello.txt").split() == ["post-ran", "hello", "v1"]
