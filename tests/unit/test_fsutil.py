"""fsutil.atomic_write: whole content or none, mode from creation, no temporary left."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hpcml.fsutil import atomic_write, temp_name


def test_replaces_whole_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("old")
    atomic_write(path, b"x" * (4 << 20), 0o640)  # larger than one write(2) may take
    assert path.read_bytes() == b"x" * (4 << 20)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_parents_and_unique_temporary_names(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a" / "b" / "c.txt", "x", parents=True)
    assert (tmp_path / "a/b/c.txt").read_text() == "x"
    dest = tmp_path / "f"
    assert temp_name(dest) != temp_name(dest) and temp_name(dest).parent == tmp_path
