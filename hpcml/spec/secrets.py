"""The checker's secret scan: literal secrets in what an image keeps (env, labels, scripts,
pip entries, its requirements file, build arguments, a hand-written definition, the files
it copies in) and in a step's env, each refused at its file:line:col with a pointer to
`secrets:`. The detector is secrets_scan.py; this part knows where things are written.

A finding on a line marked `hpcml: not-a-secret` is waived, and the image or step keeps a
line saying so (`not_secret`), which `hpcml plan` shows.
"""

from __future__ import annotations

import os
from typing import Iterator

from hpcml import hashing
from hpcml.errors import Diagnostic
from hpcml.spec import secrets_scan as scan
from hpcml.spec.shapes import Shapes
from hpcml.spec.yamlpos import YNode

#: How many files, and how many bytes in all, of one `files:` entry are read for secrets
#: (their names are all checked): `validate` of a workflow copying a dataset stays quick.
MAX_SCANNED_FILES = 10_000
MAX_SCANNED_BYTES = 64 << 20

HINT = ("secrets never enter an image or a run's files: name the variable under the step's `secrets:` "
        "(read from the submitting environment at run time; docs/security.md#secrets), or mark a false "
        f"positive with `# {scan.NOT_A_SECRET}` on its line")


class SecretChecks(Shapes):
    """Finds literal secrets; `waived` collects the findings a marker declared harmless."""

    def __init__(self, file: str, root: str, text: str) -> None:
        super().__init__(file, root, text)
        self.waived: list[str] = []
        self._lines = text.splitlines()

    # ---- what an image or step writes -------------------------------------------------

    def image_secrets(self, name: str, m: dict[str, YNode]) -> tuple[str, ...]:
        """Scan the keys of image `name` (as written: `m`); returns its waived findings."""
        before = len(self.waived)
        what = f"image {name!r}"
        if isinstance(m.get("env"), YNode):
            self.env_secrets(m["env"], f"env of {what}")
        if "labels" in m and isinstance(m["labels"].value, dict):
            for key, node in m["labels"].value.items():
                self.value_secrets(node, f"label {key} of {what}", name=str(key), name_at=m["labels"].key_pos[key])
        for key in ("post", "test", "runscript", "from", "mirror"):
            if key in m:
                self.value_secrets(m[key], f"{key} of {what}")
        if "pip" in m:
            items = m["pip"].value if isinstance(m["pip"].value, list) else [m["pip"]]
            for item in items:
                self.value_secrets(item, f"pip of {what}")
        if "build_args" in m and isinstance(m["build_args"].value, dict):
            for key, node in m["build_args"].value.items():
                self.value_secrets(node, f"build argument {key} of {what}", name=str(key),
                                   name_at=m["build_args"].key_pos[key])
        if "requirements" in m and isinstance(m["requirements"].value, str):
            self.file_secrets(m["requirements"], m["requirements"].value, f"requirements file of {what}")
        if "files" in m and isinstance(m["files"].value, dict):
            for src in m["files"].value:
                at = m["files"].key_pos[src]
                self.file_secrets(YNode(src, at[0], at[1]), src, f"files of {what}")
        return tuple(self.waived[before:])

    def env_secrets(self, node: YNode, what: str) -> tuple[str, ...]:
        """An env mapping: a name that says secret with a literal value, or a value shaped like one."""
        before = len(self.waived)
        if isinstance(node.value, dict):
            for key, value in node.value.items():
                self.value_secrets(value, f"{key} in {what}", name=str(key), name_at=node.key_pos[key])
        return tuple(self.waived[before:])

    def value_secrets(self, node: YNode, what: str, *, name: str | None = None,
                      name_at: tuple[int, int] | None = None) -> None:
        value = node.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return
        if name is not None and scan.secret_name(name) and scan.literal_value(value):
            self.finding(name_at or (node.line, node.col), f"{what} has a literal value, and its name says secret")
            return  # one finding per value
        for f in scan.scan_text(value.replace(scan.NOT_A_SECRET, "")):
            self.finding(self.scalar_pos(node, f.start), f"{f.what} in {what}")

    # ---- files --------------------------------------------------------------------------

    def file_secrets(self, node: YNode, rel: str, what: str) -> None:
        """A file or directory the image copies in: credential file names, then the text of
        each file (up to scan.MAX_SCAN_BYTES; binaries skipped), reported in that file."""
        entry_line = self._line(node.line)
        budget = MAX_SCANNED_BYTES
        for n, path in enumerate(self._files_under(rel)):
            kind = scan.file_name_finding(path)
            if kind:
                self.finding((node.line, node.col), f"{path} in {what} is {kind}", waived=scan.NOT_A_SECRET in entry_line)
            if n >= MAX_SCANNED_FILES or budget <= 0:
                continue
            text = self._read(path)
            if text is None:
                continue
            budget -= len(text)
            for f in scan.content_findings(path, text.replace(scan.NOT_A_SECRET, "")):
                line, col = scan.line_col(text, f.start)
                marked = scan.NOT_A_SECRET in text.splitlines()[line - 1] or scan.NOT_A_SECRET in entry_line
                shown = os.path.join(os.path.dirname(self.file), path)
                self.finding((line, col), f"{f.what} in {path}, copied into the image by {what}",
                             waived=marked, file=shown)

    def _files_under(self, rel: str) -> Iterator[str]:
        full = os.path.join(self.root, rel)
        if os.path.isfile(full) and not os.path.islink(full):
            yield os.path.normpath(rel)
            return
        if not os.path.isdir(full) or os.path.islink(full):
            return  # missing or a link: the path checks report it
        for top, dirs, names in os.walk(full):  # links are not followed (and are refused elsewhere)
            dirs.sort()
            for fname in sorted(names):
                path = os.path.join(top, fname)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield os.path.relpath(path, self.root)

    def _read(self, rel: str) -> str | None:
        try:
            full = os.path.join(self.root, rel)
            if os.path.getsize(full) > scan.MAX_SCAN_BYTES:
                return None
            with open(full, "rb") as fh:
                data = fh.read(scan.MAX_SCAN_BYTES + 1)
        except OSError:
            return None
        return scan.readable_text(data)

    def source_secrets(self, shown: str, rel: str) -> tuple[str, ...]:
        """A hand-written `deffile:`/`dockerfile:` (the image's text itself), reported in it."""
        before = len(self.waived)
        try:
            text = hashing.read_text(self.root, rel)
        except hashing.InputError:
            return ()  # reported by the reading that renders it
        for f in scan.scan_text(text.replace(scan.NOT_A_SECRET, "")):
            line, col = scan.line_col(text, f.start)
            self.finding((line, col), f"{f.what} in {rel}", waived=scan.NOT_A_SECRET in text.splitlines()[line - 1],
                         file=shown)
        return tuple(self.waived[before:])

    # ---- reporting -----------------------------------------------------------------------

    def finding(self, at: tuple[int, int], message: str, *, waived: bool | None = None,
                file: str | None = None) -> None:
        if waived is None:
            waived = file is None and scan.NOT_A_SECRET in self._line(at[0])
        where = f"{file or self.file}:{at[0]}:{at[1]}"
        if waived:
            self.waived.append(f"{where}: {message}")
            return
        if file is None:
            self.err(at, f"literal secret: {message}; {HINT}")
        else:  # the finding is in another file than the workflow
            self.diags.append(Diagnostic(file, at[0], at[1], f"literal secret: {message}; {HINT}"))

    def _line(self, line: int) -> str:
        return self._lines[line - 1] if 0 < line <= len(self._lines) else ""
