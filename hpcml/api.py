"""The library API: every CLI command, the Snakemake helpers and the tests go through here."""

from __future__ import annotations

# ---- spec: load / validate (owner: spec) ---------------------------------------------

import os as _os
from dataclasses import dataclass as _dataclass

from hpcml import spec as _spec
from hpcml.model import Workflow


@_dataclass(frozen=True)
class ValidationReport:
    """What `hpcml validate` reports for a valid file."""

    path: str
    workflow: Workflow

    @property
    def summary(self) -> str:
        wf = self.workflow
        steps, images = len(wf.steps), len(wf.images)
        return f"{self.path}: ok ({steps} step{'s' * (steps != 1)}, {images} image{'s' * (images != 1)})"


def load(path: str | _os.PathLike[str]) -> Workflow:
    """Load and validate a workflow file; raises SpecError with every problem found."""
    return _spec.load(path)


def validate(path: str | _os.PathLike[str]) -> ValidationReport:
    """Validate a workflow file without planning or building anything.

    Example: ``validate("workflow.yaml").summary`` → ``"workflow.yaml: ok (3 steps, 1 image)"``.
    """
    return ValidationReport(_os.fspath(path), _spec.load(path))


def schema() -> dict[str, object]:
    """The JSON Schema of workflow.yaml (Draft 2020-12), for editors."""
    from hpcml.schema import json_schema

    return json_schema()


# ---- plan / compile (owner: plan) -------------------------------------------------------

from hpcml.model import Plan as _Plan


@_dataclass(frozen=True)
class CompileResult:
    """What `hpcml compile` wrote: one definition file per image (in build order) and keys.json."""

    out_dir: str
    files: tuple[str, ...]
    keys_file: str


def plan(path: str | _os.PathLike[str], resolve_catalog=None) -> _Plan:  # noqa: ANN001
    """Load, validate and plan a workflow: step order, tasks, image graph and keys.

    `resolve_catalog(name, tag) -> key` resolves `catalog:` bases; without it their
    literal reference stands in for the key. Example: ``plan("workflow.yaml").step_order``.
    """
    from hpcml import plan as _plan_mod

    return _plan_mod.build(_spec.load(path), resolve_catalog)


def compile(path: str | _os.PathLike[str], out_dir: str | _os.PathLike[str]) -> CompileResult:  # noqa: A001
    """Write `<image>.def` for every image and `keys.json` into `out_dir`.

    Nothing is written when the workflow is invalid. A parent image is referenced as
    `From: <out_dir>/<parent>.sif` (absolute); build from the workflow directory, since
    `%files` sources are relative to it (see docs/plan.md).
    """
    from hpcml.compiler import compile_plan

    return compile_plan(plan(path), _os.fspath(out_dir))
