"""The run journal: an append-only JSON-lines file, one fsync'd record per event.

A torn last line (a writer killed mid-write) is skipped when read, and the next record
starts on a fresh line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNAL_VERSION = 1


class Journal:
    """An append-only JSON-lines file; each record is fsync'd before `append` returns."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record `{"v": 1, "t": <unix time>, "event": event, **fields}`."""
        record = {"v": JOURNAL_VERSION, "t": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # A writer killed mid-line leaves a torn record without its newline: start a
            # fresh line so this record is not glued to it.
            size = os.fstat(fd).st_size
            if size and _last_byte(self.path) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every complete record, in order; torn or foreign lines are skipped."""
        return list(read_journal(self.path))


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            yield record


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)

