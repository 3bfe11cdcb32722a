"""Images built as SLURM jobs: the build job script (golden, `bash -n`, shellcheck, refusal
of unsafe values), the catalog's build marker, and the build rows `hpcml status` derives
from the journal and SLURM's answers. On the testbed: tests/integration/test_build_slurm.py."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcml.errors import SubmitError
from hpcml.images.catalog import Catalog
from hpcml.render.buildjob import STARTED, BuildJobSpec, render_build_script
from hpcml.results import ImageJobState, RunStatus
from hpcml.run.status import image_states
from hpcml.run.tasks import JobRecord

KEY = "3f" * 32
SPEC = BuildJobSpec("cifar", "torch", KEY, "/home/ana/cifar/workflow.yaml", "/home/ana/cifar", "/usr/bin/python3",
                    "/home/ana/.venv/lib/python3.11/site-packages", "/srv/hpcml/logs/jobs/torch-3f3f3f3f3f3f.%j.out",
                    '{"catalogs": ["/srv/hpcml"], "build_flags": ["--fakeroot"]}', partition="cpu", extra=("--account=lab",))


def test_build_script_golden_bash_n_and_shellcheck(golden: Callable[[str, str], None], tmp_path: Path, shellcheck: str) -> None:
    text = render_build_script(SPEC)
    golden("build-job.sbatch", text)
    script = tmp_path / "build.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    done = subprocess.run([shellcheck, str(script)], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("change", [
    {"time": "2 hours"}, {"mem": "16 G"}, {"partition": "cpu\n#SBATCH --uid=0"}, {"extra": ("-A lab",)},
    {"workflow_path": "/home/ana/my flow.yaml"}, {"python": "python3"},
])
def test_build_script_refuses_unsafe_values(change: dict[str, object]) -> None:
    with pytest.raises(SubmitError):
        render_build_script(dataclasses.replace(SPEC, **change))  # type: ignore[arg-type]


def test_build_settings_round_trip() -> None:
    from hpcml.config import Settings
    from hpcml.run.buildjobs import settings_from_json, settings_json

    s = Settings(catalogs=("/a", "/b"), build_flags=("--fakeroot",), ca_bundle=None, signing_key="/k.pem",
                 build_on="slurm", executor="slurm")
    back = settings_from_json(settings_json(s))
    assert back.catalogs == ("/a", "/b") and back.build_flags == ("--fakeroot",) and back.signing_key == "/k.pem"
    assert back.ca_bundle is None and back.build_on == "login"  # the job builds where it runs
    with pytest.raises(Exception, match="unexpected build settings"):
        settings_from_json('{"exec_flags": ["--x"]}')


def test_build_marker_round_trip(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "cat")
    assert cat.read_build_marker(KEY) is None
    cat.write_build_marker(KEY, "812", "torch")
    marker = cat.read_build_marker(KEY)
    assert marker is not None and marker["job_id"] == "812" and marker["image"] == "torch"
    cat.build_marker_path(KEY).write_text("{broken")
    assert cat.read_build_marker(KEY) is None  # unreadable: as if none (a new job is submitted)
    assert cat.build_output_pattern("torch", KEY).endswith("/logs/jobs/torch-3f3f3f3f3f3f.%j.out")
    assert (tmp_path / "cat" / "logs" / "jobs").is_dir()
    out = tmp_path / "cat" / "logs" / "jobs" / "torch-3f3f3f3f3f3f.812.out"
    out.write_text("log")
    later = time.time() + 8 * 86400
    assert {g.reason for g in cat.gc(3, dry_run=True, now=later)} >= {"old build job output",
                                                                      "marker of a build job long ended"}
    assert cat.gc(3, dry_run=True) == []  # fresh: kept


def _build(tmp_path: Path, image: str, job: str, parent: str | None = None) -> dict[str, object]:
    return {"event": "build", "image": image, "key": KEY, "job_id": job, "sif": str(tmp_path / f"{image}.sif"),
            "output": str(tmp_path / f"{image}.{job}.out"), "adopted": False, "parent": parent}


def test_image_states_from_slurm_and_the_catalog(tmp_path: Path) -> None:
    builds = [_build(tmp_path, "base", "10"), _build(tmp_path, "torch", "11", parent="base"),
              _build(tmp_path, "other", "12")]
    (tmp_path / "base.10.out").write_text(f"{STARTED}1000\nhpcml: image base: building\n")
    records = {"10": JobRecord("RUNNING"), "11": JobRecord("PENDING", "Dependency"), "12": JobRecord("PENDING", "Priority")}
    states = {s.image: s for s in image_states(builds, records, now=1065)}
    assert states["base"].state == "building" and states["base"].elapsed_s == 65
    assert states["torch"].state == "pending" and states["other"].detail == "Priority"

    (tmp_path / "base.sif").write_text("sif")
    (tmp_path / "other.12.out").write_text("hpcml: image other: failed\nimage other: build failed\n    exit 1\n")
    records = {"10": JobRecord("COMPLETED"), "11": JobRecord("RUNNING"), "12": JobRecord("FAILED")}
    states = {s.image: s for s in image_states(builds, records, now=2000)}
    assert states["base"].state == "done" and states["torch"].state == "building"
    assert states["other"].state == "failed" and states["other"].detail.startswith("job state FAILED\n")
    assert "exit 1" in states["other"].detail

    (tmp_path / "base.sif").unlink()
    records = {"10": JobRecord("FAILED"), "11": JobRecord("CANCELLED", "DependencyNeverSatisfied")}
    states = {s.image: s for s in image_states(builds[:2], records)}
    assert states["torch"].state == "failed" and states["torch"].detail == "its parent image base failed to build"
    assert image_states(builds[:1], {"10": JobRecord("CANCELLED")}, cancelled=True)[0].state == "cancelled"
    gone = image_states([_build(tmp_path, "late", "13")], {})  # not in squeue nor sacct, not published
    assert gone[0].state == "failed" and "ended without publishing" in gone[0].detail


def test_status_table_and_json_carry_the_build_rows() -> None:
    from hpcml.cli import tables

    st = RunStatus("r1", "wf", "slurm", (), images=(ImageJobState("torch", KEY, "11", "building", "/l", 125.0),
                                                   ImageJobState("base", KEY, "10", "failed", "/l", None, "boom\nlast")))
    assert tables.image_label(st.images[0]) == "building 2m 5s (job 11)"
    assert tables.image_lines(st) == ["image base: build job 10 failed · hpcml logs image:base", "    boom", "    last"]
    assert st.as_dict()["images"][1]["state"] == "failed"
