"""`hpcml compile`: write a plan's definition files and keys.json to a directory.

Everything is rendered in memory first, so an invalid workflow or an unwritable value
leaves the directory untouched; each file is then written atomically (tmp + replace).
"""

from __future__ import annotations

import json
import os

from hpcml import __version__
from hpcml.errors import HpcmlError
from hpcml.fsutil import atomic_write
from hpcml.model import ImagePlan, Plan
from hpcml.render import deffile
from hpcml.results import CompileResult

KEYS_FILE = "keys.json"
#: Version of keys.json's shape (docs/plan.md); readers refuse a newer one.
KEYS_FORMAT = 1


def parent_sif_name(ip: ImagePlan) -> str | None:
    """File name of the SIF an image is built on, next to the definitions: `<parent>.sif`
    for an image of the workflow, `catalog-<name>-<tag>.sif` for a catalog base."""
    if ip.parent is not None:
        return f"{ip.parent}.sif"
    if ip.image.base_kind == "catalog":
        name, _, tag = ip.image.base_ref.partition(":")
        return f"catalog-{name}-{tag or 'latest'}.sif"
    return None


def render_files(p: Plan, out_dir: str) -> dict[str, str]:
    """File name → text of every file `compile` writes (pure apart from `out_dir`'s spelling)."""
    files: dict[str, str] = {}
    for name in p.image_order:
        ip = p.images[name]
        parent = parent_sif_name(ip)
        try:
            files[f"{name}.def"] = deffile.bind(
                ip.definition,
                parent_sif=os.path.join(out_dir, parent) if parent else None,
                name=name,
                key=ip.key,
                version=__version__,
            )
        except ValueError as err:
            raise HpcmlError(f"cannot write {name}.def into {out_dir}: {err}") from None
    keys = {
        "format": KEYS_FORMAT,
        "hpcml": __version__,
        "workflow": p.workflow.name,
        "order": list(p.image_order),
        "images": {
            name: {
                "key": p.images[name].key,
                "definition": f"{name}.def",
                "parent": p.images[name].parent,
                "parent_key": p.images[name].parent_key,
                "parent_sif": parent_sif_name(p.images[name]),
                "inputs": dict(p.images[name].inputs),
                # A deffile's build arguments: pass them as `apptainer build --build-arg`.
                **({"build_args": dict(p.images[name].image.build_args)} if p.images[name].image.build_args else {}),
            }
            for name in p.image_order
        },
    }
    files[KEYS_FILE] = json.dumps(keys, indent=2, sort_keys=True) + "\n"
    return files


def compile_plan(p: Plan, out_dir: str) -> CompileResult:
    """Write the files of `render_files` into `out_dir` (created if missing)."""
    out_dir = os.path.abspath(out_dir)
    files = render_files(p, out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        for fname, text in files.items():
            atomic_write(os.path.join(out_dir, fname), text)
    except OSError as err:
        raise HpcmlError(f"cannot write into {out_dir}: {err.strerror}") from None
    defs = tuple(os.path.join(out_dir, f"{n}.def") for n in p.image_order)
    return CompileResult(out_dir, defs, os.path.join(out_dir, KEYS_FILE))
