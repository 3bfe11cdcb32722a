#!/usr/bin/env python3
"""Build `hpcml.pyz`: hpcml and its pure-Python dependencies in one file, for login nodes
that cannot reach PyPI (`make dist`; see docs/install.md).

    python scripts/make_zipapp.py dist/hpcml-0.1.0-py3-none-any.whl -o dist/hpcml.pyz

What goes in: the wheel, and every runtime dependency it declares except LEFT_OUT,
installed with pip into a staging directory. Compiled modules (`*.so`) cannot be imported
from a zip, so they are removed: PyYAML then uses its pure-Python parser (hpcml's
spec/yamlpos.py reads with either). paramiko is left out because it needs compiled
libraries (cryptography, bcrypt, pynacl) and only `hpcml --remote` imports it: there the
zipapp says so instead of failing with a traceback (cli/app.py, buildinfo.missing_module). The archive
records what it bundles and leaves out in hpcml/_build.json, which `hpcml --version` reads.
It runs with any `python3` >= 3.11 and says so plainly on an older one.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipapp
import zipfile
from pathlib import Path

#: Runtime dependencies not bundled, and why (kept in _build.json for --version).
LEFT_OUT = {"paramiko": "it needs compiled cryptography, bcrypt and pynacl; only --remote uses it"}

#: The archive's entry point. It must parse on old Pythons, so it checks the version
#: before importing hpcml (which uses 3.11 syntax).
MAIN = '''\
import sys
if sys.version_info < (3, 11):
    sys.stderr.write("hpcml.pyz needs Python >= 3.11; this is %s (%s). Run it with a newer "
                     "python3 (e.g. `module load python`, then `python3 hpcml.pyz`).\\n"
                     % (sys.version.split()[0], sys.executable))
    sys.exit(1)
from hpcml.cli.app import main
main(prog_name="hpcml")
'''


def requirements(wheel: Path) -> list[str]:
    """The wheel's unconditional Requires-Dist entries, LEFT_OUT removed."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    keep = [r for r in reqs if ";" not in r]  # extras (test) carry a marker
    return [r for r in keep if re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() not in LEFT_OUT]


def stage(wheel: Path, into: Path, pip_args: list[str]) -> dict[str, str]:
    """Install the wheel and its bundled dependencies into `into`; return name → version."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(into), *pip_args]
    subprocess.run([*pip, *requirements(wheel)], check=True)
    shutil.rmtree(into / "bin", ignore_errors=True)  # console scripts: the archive is the command
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True)
    for compiled in [*into.rglob("*.so"), *into.rglob("*.pyd")]:
        compiled.unlink()
    for junk in (into / "bin", *into.rglob("__pycache__")):
        shutil.rmtree(junk, ignore_errors=True)
    bundled = {}
    for info in sorted(into.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        bundled[name] = version
    return bundled


def build(wheel: Path, out: Path, pip_args: list[str]) -> Path:
    """Write the zipapp for `wheel` to `out`."""
    with tempfile.TemporaryDirectory(prefix="hpcml-zipapp-") as tmp:
        root = Path(tmp)
        bundled = stage(wheel, root, pip_args)
        build_info = {
            "kind": "zipapp",
            "built": time.strftime("%Y-%m-%d", time.gmtime()),
            "bundled": bundled,
            "left_out": sorted(LEFT_OUT),
            "why_left_out": LEFT_OUT,
        }
        (root / "hpcml" / "_build.json").write_text(json.dumps(build_info, indent=2) + "\n")
        (root / "__main__.py").write_text(MAIN)
        out.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(root, out, interpreter="/usr/bin/env python3", compressed=True)
    out.chmod(0o755)  # other users of a shared install run it too
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="the hpcml wheel (python -m build)")
    parser.add_argument("-o", "--output", type=Path, default=Path("dist/hpcml.pyz"))
    parser.add_argument("--pip-arg", action="append", default=[], help="passed to pip install (e.g. --no-index)")
    args = parser.parse_args()
    out = build(args.wheel, args.output, args.pip_arg)
    print(f"{out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
