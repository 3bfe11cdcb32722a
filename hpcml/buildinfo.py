"""Which build of hpcml is running, for `hpcml --version`: a zipapp, a checkout or an
installed wheel, on which Python, with which YAML parser.

`make dist` writes `hpcml/_build.json` into the zipapp only (scripts/make_zipapp.py), so its
presence is what marks a zipapp; a checkout is a package directory beside a pyproject.toml.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import resources
from pathlib import Path

import hpcml

#: The file scripts/make_zipapp.py adds to the zipapp: {"kind": "zipapp", "built": ISO date,
#: "bundled": {distribution: version}, "left_out": [distribution, …]}.
BUILD_FILE = "_build.json"


def build_kind() -> tuple[str, str]:
    """(kind, where): ("zipapp", archive path), ("checkout", repository) or ("installed", directory)."""
    package = Path(hpcml.__file__).parent
    if resources.files("hpcml").joinpath(BUILD_FILE).is_file():
        archive = next((p for p in package.parents if p.suffix == ".pyz"), package.parent)
        return "zipapp", str(archive)
    if (package.parent / "pyproject.toml").is_file():
        return "checkout", str(package.parent)
    return "installed", str(package.parent)


def _zipapp_info() -> dict[str, object]:
    """The zipapp's _build.json ({} in any other build)."""
    marker = resources.files("hpcml").joinpath(BUILD_FILE)
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}


def missing_module(name: str | None) -> str | None:
    """Why module `name` cannot be imported, when this is a zipapp that leaves it out on
    purpose (paramiko: remote commands); None otherwise (a real error to show as is)."""
    top = (name or "").partition(".")[0]
    info = _zipapp_info()
    why = info.get("why_left_out")
    if not top or not isinstance(why, dict) or top not in why:
        return None
    return (
        f"this command needs {top}, which hpcml.pyz does not carry ({why[top]}); "
        "use an installed hpcml for it (`python3 -m pip install --user hpcml-….whl` or pipx; "
        "see docs/install.md)"
    )


def yaml_parser() -> str:
    """"libyaml (C)" or "pure Python" (PyYAML without libyaml, e.g. in the zipapp)."""
    from hpcml.spec import yamlpos  # start-up speed: only `--version` asks

    return "libyaml (C)" if yamlpos.CParser is not None else "pure Python (libyaml absent)"


def describe() -> str:
    """The lines `hpcml --version` prints."""
    kind, where = build_kind()
    first = f"hpcml {hpcml.__version__} ({kind}: {where}"
    if kind == "zipapp":
        info = _zipapp_info()
        first += f", built {info.get('built', '?')}"
        left_out = info.get("left_out")
        if isinstance(left_out, list) and left_out:
            first += f"; without {', '.join(map(str, left_out))}"
    return "\n".join(
        [
            first + ")",
            f"python {platform.python_version()} ({sys.executable})",
            f"yaml parser: {yaml_parser()}",
        ]
    )
