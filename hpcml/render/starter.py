"""The files of a starter project (`hpcml init`), rendered from the templates beside this
module (`starters/<template>/`: workflow.yaml and src/).

Pure: the caller reads the directory (hpcml/init.py) and passes what it found; `render`
returns relative path → text and writes nothing. A template's workflow.yaml holds a few
markers: `@@NAME@@` (the workflow name), `@@APT@@` (the base image's packages) and
`@@APP_LINES@@` (the lines that install an adopted requirements file or pip list).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

import yaml

from hpcml.spec.outline import load_plain
from hpcml.spec.rules import MAX_NAME, NAME_RE, PIP_RE

#: Template name → one line describing it (`hpcml init --list`).
TEMPLATES = {
    "cpu-sweep": "CPU parameter sweep: prepare → a 3-point sweep → summarize (Debian + Python, no GPU)",
    "gpu-train": "GPU training sweep with checkpoint/requeue: prepare → 4 PyTorch runs → evaluate",
}
DEFAULT_TEMPLATE = "cpu-sweep"

#: Files `init` adopts when DIR holds one, in order of preference.
REQUIREMENTS_FILES = ("requirements.txt",)
ENVIRONMENT_FILES = ("environment.yml", "environment.yaml")
#: Conda packages that need no pip counterpart in an image.
_CONDA_IMPLIED = frozenset({"python", "pip"})


@dataclass(frozen=True)
class Adopted:
    """What init takes over from files already in the directory.

    `requirements`: a requirements file's name, installed with `pip install -r`.
    `pip`: packages from an environment file's `pip:` list. `source`: the environment file
    they came from. `skipped`: its entries hpcml cannot install (conda packages, pip
    options), listed in a comment of workflow.yaml so the user can add them by hand.
    """

    requirements: str | None = None
    pip: tuple[str, ...] = ()
    source: str | None = None
    skipped: tuple[str, ...] = ()

    @property
    def uses_pip(self) -> bool:
        return bool(self.requirements or self.pip)


def adopt(existing: dict[str, str]) -> Adopted:
    """What to adopt from `existing` (file name → text of the candidate files found in DIR).

    A requirements file wins over an environment file; an environment file contributes
    the entries of its `pip:` list. Example: ``adopt({"requirements.txt": "numpy\\n"})``
    → ``Adopted(requirements="requirements.txt")``.
    """
    for name in REQUIREMENTS_FILES:
        if name in existing:
            return Adopted(requirements=name)
    for name in ENVIRONMENT_FILES:
        if name in existing:
            pip, skipped = environment_packages(existing[name])
            return Adopted(pip=pip, source=name, skipped=skipped)
    return Adopted()


def environment_packages(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pip packages, entries not adopted) of a conda environment file's `dependencies`.

    Only the `pip:` sub-list becomes pip packages: conda package names often differ from
    pip's (pytorch/torch), so conda entries are reported, not guessed at.
    """
    try:
        doc = load_plain(text)
    except (yaml.YAMLError, ValueError):
        return (), ("(the file is not plain YAML: invalid, or it uses aliases)",)
    deps = doc.get("dependencies") if isinstance(doc, dict) else None
    pip: list[str] = []
    skipped: list[str] = []
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            for req in map(str, dep["pip"]):
                (pip if PIP_RE.fullmatch(req) and not req.startswith("-") else skipped).append(req)
        elif isinstance(dep, str) and re.split(r"[=<>!~ ]", dep.split("::")[-1], maxsplit=1)[0] not in _CONDA_IMPLIED:
            skipped.append(dep)
    return tuple(pip), tuple(skipped)


def workflow_name(directory_name: str) -> str:
    """A valid workflow name from a directory's name: `My Project` → `my-project`."""
    name = re.sub(r"[^a-z0-9_-]+", "-", directory_name.lower()).strip("-_")[:MAX_NAME].rstrip("-_")
    return name if NAME_RE.fullmatch(name) else "my-workflow"


def render(template: str, name: str, adopted: Adopted) -> dict[str, str]:
    """The starter project's files, relative path → text. KeyError for an unknown template."""
    if template not in TEMPLATES:
        raise KeyError(template)
    root = resources.files("hpcml.render").joinpath("starters", template)
    files = {"workflow.yaml": _workflow(root.joinpath("workflow.yaml").read_text(encoding="utf-8"), name, adopted)}
    for entry in sorted(root.joinpath("src").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            files[f"src/{entry.name}"] = entry.read_text(encoding="utf-8")
    return files


def _workflow(text: str, name: str, adopted: Adopted) -> str:
    apt = ["python3", "python3-pip"] if adopted.uses_pip else ["python3"]
    lines: list[str] = []
    if adopted.requirements:
        lines.append(f"    requirements: {adopted.requirements}   # adopted by hpcml init; its bytes are part of the image key")
    if adopted.pip:
        lines.append(f"    # adopted by hpcml init from the pip list of {adopted.source}")
        lines.append(f"    pip: {json.dumps(list(adopted.pip))}")
    if adopted.skipped:
        lines.append(f"    # not adopted from {adopted.source} (conda packages or pip options; add their pip")
        lines.append("    # names to `pip:` or Debian packages to the base image's `apt:`):")
        # Printable characters only: an entry must not end the comment and start YAML.
        lines.extend(f"    #   {''.join(c if c.isprintable() else '?' for c in entry)}" for entry in adopted.skipped)
    return (
        text.replace("@@NAME@@", name)
        .replace("@@APT@@", ", ".join(apt))
        .replace("@@APP_LINES@@", "".join(line + "\n" for line in lines))
    )
