"""DurableBatch: atomic writes made durable together (syncfs, or fsyncs where there is none)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hpcml.run import durable
from hpcml.run.durable import DurableBatch


@pytest.mark.parametrize("have_syncfs", [True, False])
def test_batch_writes_files_whole_and_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, have_syncfs: bool) -> None:
    if not have_syncfs:
        monkeypatch.setattr(durable, "_SYNCFS", False)  # the fsync-per-file path of non-Linux systems
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cmd.sh").write_text("old\n")
    batch = DurableBatch()
    batch.write(tmp_path / "a" / "cmd.sh", "new\n", mode=0o755)
    batch.write(tmp_path / "a" / "attempt", b"0\n")
    batch.flush()
    batch.flush()  # nothing left: a no-op
    assert (tmp_path / "a" / "cmd.sh").read_text() == "new\n"
    assert stat.S_IMODE((tmp_path / "a" / "cmd.sh").stat().st_mode) == 0o755
    assert (tmp_path / "a" / "attempt").read_bytes() == b"0\n"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["attempt", "cmd.sh"]  # no temporaries


def test_batch_write_into_a_missing_directory_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DurableBatch().write(tmp_path / "missing" / "cmd.sh", "x")
    assert list(tmp_path.iterdir()) == []
