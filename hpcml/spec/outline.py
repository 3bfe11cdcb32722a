"""The names a workflow file declares (steps, images), read loosely for shell completion.

Unlike the checker this never raises and validates nothing: a file being edited, or one
with errors, still completes the names it has. Only a plain `yaml.safe_load`, on at most
MAX_BYTES, so a <TAB> stays instant.
"""

from __future__ import annotations

import os

import yaml

MAX_BYTES = 1024 * 1024


def names(path: str | os.PathLike[str], section: str) -> list[str]:
    """The keys of the top-level mapping `section` ("steps" or "images") of `path`, in file
    order; [] when the file is missing, unreadable or not a mapping."""
    try:
        with open(path, "rb") as fh:
            doc = yaml.safe_load(fh.read(MAX_BYTES))
    except (OSError, yaml.YAMLError, ValueError):
        return []
    part = doc.get(section) if isinstance(doc, dict) else None
    return [k for k in part if isinstance(k, str)] if isinstance(part, dict) else []
