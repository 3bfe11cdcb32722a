"""Files a workflow names: the path rules, and the one reading of a hand-written image.

Validation (the checker) and planning (plan.py) both come here: `path_problem` is the rule
for every path a workflow writes (requirements, files, localimage, deffile, dockerfile),
and `image_source` reads a `deffile:`/`dockerfile:` once, under the symlink rules of
hashing.py, renders the canonical definition and lists the files its build reads. So the
checker reports exactly what planning would meet, and neither reads a file another way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from hpcml import hashing
from hpcml.errors import Diagnostic, SpecError
from hpcml.model import Image, Pos
from hpcml.render import deffile
from hpcml.spec.rules import NO_SPACE_PATH_RE


def path_problem(root: str, rel: str, what: str, *, suffix: str | None = None, source: bool = False) -> str | None:
    """Why `rel` cannot be an input of the workflow in `root` (a message naming it as
    `what`), or None: it must be relative, free of whitespace and '..', exist, and neither
    be nor hold a symbolic link (image keys hash bytes, and a link's target can change
    without the key noticing). A `source` (a path a definition file names: `files:`,
    `requirements:`, a relative `localimage`) must also be in SAFE_SOURCE_RE."""
    if not NO_SPACE_PATH_RE.fullmatch(rel):
        return f"{what} {rel!r} must not contain whitespace"
    if source and (not SAFE_SOURCE_RE.fullmatch(rel) or rel.startswith("-")):
        return f"{what} {rel!r}: {SAFE_SOURCE_RULE}"
    if os.path.isabs(rel):
        return f"{what} {rel!r} must be relative to the workflow directory"
    if ".." in PurePosixPath(rel).parts:
        return f"{what} {rel!r} must not contain '..': files must stay inside the workflow directory"
    if suffix and not rel.endswith(suffix):
        return f"{what} {rel!r} must end with {suffix}"
    if not os.path.lexists(os.path.join(root, rel)):
        return f"{what} {rel!r} does not exist (looked in {root})"
    escaped = hashing.escaping_link(root, rel)
    if escaped:
        return f"{what} {rel!r} leaves the workflow directory through the symlink {escaped!r}"
    link = hashing.first_link(root, rel)
    if link:
        return (f"{what} {rel!r}: {link}: is a symbolic link, which hpcml does not follow; "
                "copy the file or name its target instead")
    return None


#: What a `%files` source or a localimage `From:` of a hand-written file may hold. Apptainer
#: 1.4 expands `%files` sources with a shell (issue 12): `$`, backquotes, `~`, quotes and
#: globs would run or read things the image key never saw.
SAFE_SOURCE_RE = re.compile(r"[A-Za-z0-9._/+,=@-]+")
SAFE_SOURCE_RULE = ("Apptainer expands %files sources with a shell, so hpcml accepts only letters, digits "
                    "and . _ / + , = @ - (not starting with -)")
#: What a `%files from STAGE` source may hold: the safe set and glob characters (those
#: copies are between stages, not from the host, so a pattern is harmless).
STAGE_SOURCE_RE = re.compile(r"[A-Za-z0-9._/+,=@*?\[\]-]+")


@dataclass(frozen=True)
class ImageSource:
    """An image's canonical definition text and the files its build reads (relative to
    the workflow directory, normalised, in the order the definition names them). For a
    `deffile:`, `consumed` are the build arguments it references and `host_sections` the
    `%setup`/`%pre` it has."""

    definition: str
    inputs: tuple[str, ...]
    consumed: frozenset[str] = frozenset()
    host_sections: tuple[tuple[str, int], ...] = ()


def image_source(image: Image, root: str, workflow_file: str, at: Pos | None) -> ImageSource:
    """Render `image`, reading its `deffile:`/`dockerfile:` under `root` if it has one.

    Messages about lines inside that file name it as the workflow file is named
    (`workflow_file` is the path as given, relative to the cwd or absolute); a file that
    cannot be read is reported at `at`. Raises SpecError.
    """
    source = None
    shown = image.base_ref
    if image.base_kind in ("deffile", "dockerfile"):
        shown = os.path.join(os.path.dirname(workflow_file), image.base_ref)
        try:
            source = hashing.read_text(root, image.base_ref)
        except hashing.InputError as err:
            raise SpecError(_diag(at, f"{err}")) from None
    definition = deffile.render(image, source=source, source_path=shown)
    if image.base_kind == "deffile":
        assert source is not None
        parsed, resolved = deffile.parse_source(image, source, shown)
        return ImageSource(definition, tuple(_definition_inputs(parsed, shown)), resolved.consumed,
                           tuple(parsed.host_sections()))
    return ImageSource(definition, tuple(input_paths(image, definition)))




def input_paths(image: Image, definition: str) -> list[str]:
    """Files the build reads from the workflow directory (builds run with cwd = its root)."""
    if image.base_kind in ("deffile", "dockerfile"):
        return _definition_inputs(deffile.parse_definition(definition, image.base_ref), image.base_ref)
    paths = [os.path.normpath(f.src) for f in image.files]
    if image.requirements:
        paths.append(os.path.normpath(image.requirements))
    if image.base_kind == "localimage":
        paths.append(os.path.normpath(image.base_ref))
    return paths


def _definition_inputs(parsed: deffile.Definition, shown: str) -> list[str]:
    """The host files a parsed hand-written definition copies or builds from, checked."""
    paths = []
    for src, _dst, line in parsed.files():
        if os.path.isabs(src) or ".." in src.split("/"):
            raise SpecError(Diagnostic(shown, line, 1, f"%files source {src!r} must be inside the workflow directory"))
        if deffile.has_glob(src):
            # The key hashes named files; a pattern's matches are not known until the build.
            raise SpecError(Diagnostic(shown, line, 1, f"%files source {src!r} is a pattern "
                                       "(* ? [); name each file or directory"))
        if not SAFE_SOURCE_RE.fullmatch(src) or src.startswith("-"):
            raise SpecError(Diagnostic(shown, line, 1, f"%files source {src!r}: {SAFE_SOURCE_RULE}"))
        paths.append(os.path.normpath(src))
    for src, line in parsed.stage_files():
        if not STAGE_SOURCE_RE.fullmatch(src) or src.startswith("-"):
            raise SpecError(Diagnostic(shown, line, 1, f"%files from: source {src!r}: Apptainer expands %files "
                                       "sources with a shell, so hpcml accepts only letters, digits, "
                                       ". _ / + , = @ - and the patterns * ? [ ]"))
    for ref, line in parsed.local_sources():
        if os.path.isabs(ref):
            continue  # a site image outside the workflow, checked when it is built
        if not SAFE_SOURCE_RE.fullmatch(ref) or ".." in ref.split("/") or ref.startswith("-"):
            raise SpecError(Diagnostic(shown, line, 1, f"From: {ref!r} must name a file inside the workflow "
                                       "directory with letters, digits and . _ / + , = @ -"))
        paths.append(os.path.normpath(ref))
    return paths
def _diag(pos: Pos | None, message: str) -> Diagnostic:
    if pos is None:
        return Diagnostic("<workflow>", 1, 1, message)
    return Diagnostic(pos.file, pos.line, pos.col, message)
