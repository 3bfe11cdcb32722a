"""The names a workflow file declares (steps, images), read loosely for shell completion.

Unlike the checker this never raises and validates nothing: a file being edited, or one
with errors, still completes the names it has. Only a plain `yaml.safe_load` (no aliases),
on at most MAX_BYTES, so a <TAB> stays instant.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024


def load_plain(text: str | bytes) -> Any:
    """yaml.safe_load without aliases: ValueError for a document that uses one (a "billion
    laughs" must not expand while loosely reading a file nobody validated yet)."""
    if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
        raise ValueError("YAML aliases are not read here")
    return yaml.safe_load(text)


def names(path: str | os.PathLike[str], section: str) -> list[str]:
    """The keys of the top-level mapping `section` ("steps" or "images") of `path`, in file
    order; [] when the file is missing, unreadable or not a mapping."""
    try:
        with open(path, "rb") as fh:
            doc = load_plain(fh.read(MAX_BYTES))
    except (OSError, yaml.YAMLError, ValueError):
        return []
    part = doc.get(section) if isinstance(doc, dict) else None
    return [k for k in part if isinstance(k, str)] if isinstance(part, dict) else []
