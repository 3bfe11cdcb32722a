"""Shared fixtures for the pure unit tests.

`golden` compares generated text with `tests/golden/<name>`; run the tests with
HPCML_UPDATE_GOLDEN=1 to (re)write the files after a deliberate change, then review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Assert `text` equals the golden file `name`, or rewrite it under HPCML_UPDATE_GOLDEN=1."""
    path = GOLDEN_DIR / name
    if os.environ.get("HPCML_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with HPCML_UPDATE_GOLDEN=1 pytest {path.name}")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"output differs from golden file {path}; if the change is intended, "
        "regenerate with HPCML_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """The golden-file check as a fixture: `golden("name.def", text)`."""
    return check_golden


@pytest.fixture
def shellcheck() -> str:
    """The shellcheck program; the test is skipped without it, or fails under
    HPCML_REQUIRE_TESTBED=1 (CI, where slurm/testbed/up installs it)."""
    path = shutil.which("shellcheck")
    if path is None:
        reason = "shellcheck is not installed (apt-get install shellcheck; slurm/testbed/up installs it)"
        if os.environ.get("HPCML_REQUIRE_TESTBED") == "1":
            pytest.fail(f"testbed required (HPCML_REQUIRE_TESTBED=1) but {reason}", pytrace=False)
        pytest.skip(reason)
    return path
