"""Benchmark: small hostile workflow files against `validate` and `plan` (docs/security.md).

Each case is a short file that used to cost a login node minutes or gigabytes:

- ten steps of 100,000 points each (1,000,000 tasks from ~1 KB): refused by the
  max_tasks check before any matrix is expanded;
- one step of 100,000 points, the default max_tasks: what a file at the limit costs;
- one step whose 2,000 include entries each match one point of a 2,000-point sweep;
- one step whose 2,000 include entries each add a new point;
- one step of 20,000 points with 2,000 exclude entries.

Each case runs `hpcml validate` and then `hpcml plan` as whole processes (the venv's console
script) and prints wall time, peak memory (max RSS, from wait4), the file's size and how it
ended (ok, or the first line of the refusal). Figures only: nothing is asserted.

    .venv/bin/python bench/hostile.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

HEAD = """\
hpcml: 1
name: hostile
images:
  bb: {from: scratch, shell: sh}
defaults: {image: bb}
steps:
"""


def ten_big_steps() -> str:
    body = "".join(f"  s{i}:\n    matrix: {{a: {{range: [0, 1000]}}, b: {{range: [0, 100]}}}}\n"
                   f"    run: echo {{a}} {{b}}\n" for i in range(10))
    return HEAD + body


def includes(n: int, matching: bool) -> str:
    # Flow style, one entry per line: 2,000 entries in a few dozen KB.
    entries = "\n".join(f"        - {{a: {i if matching else i + 10_000}, extra: e{i}}}" for i in range(n))
    return HEAD + ("  s:\n    matrix:\n      a: {range: [0, %d]}\n      include:\n%s\n    run: echo {a} {extra}\n"
                   % (n, entries))


def excludes(n: int) -> str:
    entries = "\n".join(f"        - {{a: {i}}}" for i in range(n))
    return HEAD + ("  s:\n    matrix:\n      a: {range: [0, 10000]}\n      b: [0, 1]\n      exclude:\n%s\n"
                   "    run: echo {a} {b}\n" % entries)


def measure(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one process, its output discarded."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execv(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    cases = {
        "10 steps x 100k points": ten_big_steps(),
        "1 step x 100k points (the cap)": HEAD + "  s:\n    matrix: {a: {range: [0, 1000]}, b: {range: [0, 100]}}\n"
                                                 "    run: echo {a} {b}\n",
        "2,000 include entries (match)": includes(2000, matching=True),
        "2,000 include entries (new)": includes(2000, matching=False),
        "20k points, 2,000 excludes": excludes(2000),
    }
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':32} {'size':>7} {'command':9} {'wall s':>8} {'max RSS MiB':>12}  result")
        for name, text in cases.items():
            wf = Path(tmp) / "workflow.yaml"
            wf.write_text(text)
            for command in ("validate", "plan"):
                argv = [str(BIN / "hpcml"), command, str(wf)]
                wall, rss, code = measure(argv)
                result = "ok"
                if code != 0:
                    err = subprocess.run(argv, capture_output=True, text=True).stderr.strip().splitlines()
                    result = f"exit {code}: {(err or [''])[0][:90]}"
                print(f"{name:32} {len(text):7,} {command:9} {wall:8.2f} {rss:12.0f}  {result}")


if __name__ == "__main__":
    main()
