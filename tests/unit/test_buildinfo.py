"""`hpcml --version` says which build runs; the zipapp's own case is shown by
tests/integration/test_onboarding.py, which builds and runs one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hpcml
from hpcml import buildinfo

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_says_so_with_its_python_and_yaml_parser() -> None:
    kind, where = buildinfo.build_kind()
    if Path(hpcml.__file__).parent.parent == REPO:  # the editable install of `make test`
        assert (kind, where) == ("checkout", str(REPO))
    out = subprocess.run([sys.executable, "-m", "hpcml.cli", "--version"], capture_output=True, text=True, check=True)
    first, python, parser = out.stdout.splitlines()
    assert first == f"hpcml {hpcml.__version__} ({kind}: {where})"
    assert python.startswith("python 3.") and sys.executable in python
    assert parser in ("yaml parser: libyaml (C)", "yaml parser: pure Python (libyaml absent)")


def test_a_missing_module_outside_the_zipapp_is_a_real_error() -> None:
    assert buildinfo.missing_module("paramiko") is None
    assert buildinfo.missing_module(None) is None
