"""`hpcml build` and `hpcml catalog …` end to end, on real apptainer builds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcml.cli.app import main
from test_images import TESTBED, _testbed_apptainer, pytestmark, write_workflow  # noqa: F401


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HPCML_CATALOGS": str(tmp_path / "cat"), "HPCML_CACHE_DIR": str(tmp_path / "cache"),
            "HPCML_BUILD_FLAGS": " ".join(TESTBED["build_flags"]), "HPCML_APPTAINER": str(TESTBED["binary"]),
            "HPCML_SITE_CONFIG": str(tmp_path / "none.toml"), "HPCML_CONFIG": str(tmp_path / "none.toml")}


def hpcml(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_build_list_tag_show_path_verify_gc(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write_workflow(tmp_path / "wf")
    code, out, err = hpcml(env, "build", str(wf), "--jobs", "2")
    assert code == 0, err
    # plain progress lines (not a terminal), the same as `hpcml run` prints
    assert "hpcml: image base: built in " in err and "hpcml: image child: built in " in err
    code, out, _ = hpcml(env, "build", str(wf))
    assert code == 0 and out.count("\tcached\t") == 2
    code, out, _ = hpcml(env, "catalog", "list", "--json")
    rows = json.loads(out)
    assert sorted(r["name"] for r in rows) == ["base", "child"]
    base = next(r for r in rows if r["name"] == "base")
    assert hpcml(env, "catalog", "tag", base["key"][:10], "base:v1")[0] == 0
    code, out, _ = hpcml(env, "catalog", "show", "base:v1", "--json")
    assert json.loads(out)["tags"] == ["base:v1"]
    assert hpcml(env, "catalog", "path", "base:v1")[1].strip() == base["sif"]
    code, out, _ = hpcml(env, "catalog", "gc", "--days", "0", "--dry-run", "--json")
    assert {Path(i["path"]).name for i in json.loads(out)} >= {Path(r["sif"]).name for r in rows if r["name"] == "child"}
    assert base["sif"] not in out  # tagged: kept
    assert hpcml(env, "catalog", "verify")[0] == 0
    os.chmod(base["sif"], 0o644)
    with open(base["sif"], "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")
    code, out, _ = hpcml(env, "catalog", "verify", "--json")
    assert code == 1 and [r["ok"] for r in json.loads(out) if r["name"] == "base"] == [False]
    code, _, err = hpcml(env, "catalog", "path", "base:v1")
    assert code == 1 and "corrupt" in err


def test_build_failure_exit_code_and_unknown_image(tmp_path: Path, env: dict[str, str]) -> None:
    wf = write_workflow(tmp_path / "wf", child_post="exit 7")
    code, out, err = hpcml(env, "build", str(wf))
    assert code == 1 and "image child: build failed" in err and "log: " in err
    code, _, err = hpcml(env, "build", str(wf), "nosuch")
    assert code == 1 and "no image 'nosuch'" in err
