"""Headless Chromium (Debian's `chromium`, installed by slurm/testbed/up) for the report
tests: the DOM after the page's script ran, and a screenshot.

Run as root in a container, Chromium needs --no-sandbox; every network and background
feature is off and each call gets a new empty profile, so nothing is fetched or kept.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium() -> str:
    """The chromium binary; the test is skipped without it (failed under HPCML_REQUIRE_TESTBED=1)."""
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (slurm/testbed/up installs it)"
        if os.environ.get("HPCML_REQUIRE_TESTBED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="hpcml-chromium-") as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 0, f"chromium {args} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


def dump_dom(html: Path) -> str:
    """The page's DOM once loaded (its inline script has run)."""
    return _run(["--dump-dom", html.resolve().as_uri()]).stdout


def screenshot(html: Path, png: Path, size: str = "1280,1500") -> Path:
    """A PNG of the page's top `size` (width,height) pixels."""
    _run([f"--window-size={size}", f"--screenshot={png}", html.resolve().as_uri()])
    assert png.stat().st_size > 0
    return png


@dataclass(frozen=True)
class ReportDom:
    """What the rendered report shows: table rows (task, state) in order, the timeline's
    drawn bars (task, kind), failures listed above the table, the missing-columns note."""

    rows: list[tuple[str, str]]
    bars: list[tuple[str, str]]
    failures: list[str]
    missing_note: str
    render_ms: int


def read_report(dom: str) -> ReportDom:
    """Pick the report's parts out of a DOM dump."""
    rows = re.findall(r'<tr data-task="([^"]+)" data-state="([^"]+)"', dom)
    index = re.search(r'<pre id="timeline-index"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    bars = [tuple(line.split()[:2]) for line in unescape(index.group(1)).splitlines()] if index else []
    failures = re.findall(r'<li class="failure" data-task="([^"]+)"', dom)
    note = re.search(r'<p class="note" id="missing">(.*?)</p>', dom, re.DOTALL)
    ms = re.search(r'<body[^>]*data-render-ms="(\d+)"', dom)
    return ReportDom(
        [(unescape(a), b) for a, b in rows], [(unescape(a), b) for a, b in bars],  # type: ignore[misc]
        [unescape(f) for f in failures], note.group(1) if note else "", int(ms.group(1)) if ms else -1,
    )
