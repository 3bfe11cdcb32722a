"""Hostile values that validation lets through because hpcml quotes them, run for real
(`hpcml run --executor local`, real Apptainer): they arrive byte for byte and run nothing
on the host; and a workflow directory whose path would break an #SBATCH line is refused
before anything is written (docs/security.md#paths-in-directives-and-headers)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from test_run_local import hpcml, hpcml_env, status, workflow  # noqa: F401  (fixture re-used)

pytestmark = pytest.mark.testbed


def test_hostile_values_arrive_literally_and_run_nothing(tmp_path: Path, busybox_sif: Path,
                                                         hpcml_env: dict[str, str]) -> None:  # noqa: F811
    canary = Path(f"/tmp/hpcml-pwned-{uuid.uuid4().hex}")
    evil = f"$(touch {canary})`touch {canary}`;touch {canary}"
    path = workflow(tmp_path / "wf", busybox_sif, "hostile", f"""\
        s:
          matrix: {{x: ['{evil}']}}
          env: {{GREETING: '{evil}'}}
          secrets: [HOSTILE_SECRET]
          run: printf '%s\\n' {{x}} "$GREETING" "$HOSTILE_SECRET" > {{out}}/seen
        """)
    secret = evil + " the-secret"
    hpcml("run", str(path), "--executor", "local", env={**hpcml_env, "HOSTILE_SECRET": secret})
    assert set(status(path, hpcml_env).values()) == {"completed"}
    (seen,) = (path.parent / ".hpcml" / "tasks" / "s").glob("*/out/seen")
    assert seen.read_text() == f"{evil}\n{evil}\n{secret}\n"
    assert not canary.exists()
    # The secret reached the task through its env file only; no other file of the run holds it.
    holders = [f for f in (path.parent / ".hpcml").rglob("*")
               if f.is_file() and secret.encode() in f.read_bytes() and f != seen]
    assert all(f.stat().st_mode & 0o077 == 0 for f in holders), holders


def test_a_workflow_directory_with_a_hash_is_refused_before_anything_is_written(
        tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:  # noqa: F811
    path = workflow(tmp_path / "lab#1", busybox_sif, "hashdir", "s: {run: 'true'}\n")
    done = hpcml("run", str(path), "--executor", "local", env=hpcml_env, check=False)
    assert done.returncode != 0
    assert f"the workflow directory path {str(path.parent)!r} contains '#'" in done.stderr
    assert not (path.parent / ".hpcml").exists()
    assert not (tmp_path / "catalog").exists() or not any((tmp_path / "catalog").rglob("*.sif"))


def test_a_catalog_path_with_a_hash_is_refused_before_any_build(tmp_path: Path, busybox_sif: Path,
                                                                hpcml_env: dict[str, str]) -> None:  # noqa: F811
    path = workflow(tmp_path / "wf", busybox_sif, "hashcat", "s: {run: 'true'}\n")
    env = {**hpcml_env, "HPCML_CATALOGS": str(tmp_path / "cat#a")}
    done = hpcml("run", str(path), "--executor", "local", env=env, check=False)
    assert done.returncode != 0 and "the catalog path" in done.stderr and "contains '#'" in done.stderr
    assert not (tmp_path / "cat#a").exists() and not (path.parent / ".hpcml").exists()
