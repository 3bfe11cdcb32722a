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
