"""The checker's base: reporting with positions and the shape checks every part uses
(mappings with allowed keys, strings, integers, choices, lists, env maps, input paths).

The parts of the document are checked by mixins over this base (images.py, steps.py,
matrix.py); checker.py puts them together.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Iterable

from hpcml.errors import Diagnostic
from hpcml.model import Pos
from hpcml.spec import inputs, placeholders
from hpcml.spec.rules import ENV_RE, ENV_RULE, MAX_NAME, NAME_RE
from hpcml.spec.yamlpos import YNode

_At = YNode | tuple[int, int]


def suggest(word: str, options: Iterable[str]) -> str:
    """A did-you-mean suffix for a misspelt `word`, or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(value: Any) -> str:
    """How a YAML value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


class Shapes:
    """Walks the positioned tree, collecting diagnostics; the shape checks shared by all parts."""

    def __init__(self, file: str, root: str, text: str) -> None:
        self.file = file
        self.root = root
        self.text = text
        self.diags: list[Diagnostic] = []

    # ---- reporting ----------------------------------------------------------------

    def err(self, at: _At, message: str) -> None:
        line, col = (at.line, at.col) if isinstance(at, YNode) else at
        self.diags.append(Diagnostic(self.file, line, col, message))

    def pos(self, at: _At) -> Pos:
        line, col = (at.line, at.col) if isinstance(at, YNode) else at
        return Pos(self.file, line, col)

    # ---- shapes -------------------------------------------------------------------

    def mapping(
        self, node: YNode | None, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, YNode] | None:
        """Check `node` is a mapping with only `allowed` keys and all `required` ones."""
        if node is None:
            return None
        if not isinstance(node.value, dict):
            self.err(node, f"{what} must be a mapping, found {describe(node.value)}")
            return None
        for key in node.value:
            if key not in allowed:
                self.err(
                    node.key_pos[key],
                    f"unknown key {key!r} in {what}{suggest(key, allowed)}; allowed: {', '.join(allowed)}",
                )
        for key in required:
            if key not in node.value:
                self.err(node, f"{what} is missing the required key {key!r}")
        return {k: v for k, v in node.value.items() if k in allowed}

    def string(self, node: YNode, what: str, *, allow_empty: bool = False) -> str | None:
        if not isinstance(node.value, str):
            self.err(node, f"{what} must be a string, found {describe(node.value)}")
            return None
        if "\x00" in node.value:
            self.err(node, f"{what} must not contain a NUL character")
            return None
        if not allow_empty and not node.value.strip():
            self.err(node, f"{what} must not be empty")
            return None
        return node.value

    def text_value(self, node: YNode, what: str) -> str | None:
        """A string value, or a number written unquoted, kept exactly as written (`1.10`)."""
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool) and node.node is not None:
            return str(node.node.value)
        if isinstance(node.value, bool) or node.value is None:
            self.err(node, f"{what} must be a string, found {describe(node.value)}; quote it")
            return None
        return self.string(node, what, allow_empty=True)

    def matching(self, node: YNode, what: str, pattern: re.Pattern[str], allowed: str) -> str | None:
        value = self.string(node, what)
        if value is not None and not pattern.fullmatch(value):
            self.err(node, f"invalid {what} {value!r}: {allowed}")
            return None
        return value

    def name(self, at: _At, value: str, what: str) -> bool:
        if not NAME_RE.fullmatch(value) or len(value) > MAX_NAME:
            self.err(
                at,
                f"invalid {what} name {value!r}: use lowercase letters, digits, '_' and '-', "
                f"starting with a letter or digit, at most {MAX_NAME} characters",
            )
            return False
        return True

    def integer(self, node: YNode, what: str, lo: int, hi: int | None = None) -> int | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(node, f"{what} must be an integer, found {describe(value)}")
            return None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.err(node, f"{what} must be {bound}, found {value}")
            return None
        return value

    def choice(self, node: YNode, what: str, options: tuple[str, ...]) -> str | None:
        value = node.value
        if not isinstance(value, str) or value not in options:
            shown = value if isinstance(value, str) else describe(value)
            self.err(node, f"invalid {what} {shown!r}{suggest(str(value), options)}; allowed: {', '.join(options)}")
            return None
        return value

    def string_list(self, node: YNode, what: str, check: Callable[[YNode], str | None]) -> tuple[str, ...]:
        """A list of strings (a single string is accepted as a one-item list)."""
        items = node.value if isinstance(node.value, list) else [node] if isinstance(node.value, str) else None
        if items is None:
            self.err(node, f"{what} must be a list of strings, found {describe(node.value)}")
            return ()
        out: list[str] = []
        for item in items:
            value = check(item)
            if value is not None:
                if value in out:
                    self.err(item, f"{value!r} is listed twice in {what}")
                else:
                    out.append(value)
        return tuple(out)

    def env(self, node: YNode, what: str) -> dict[str, str]:
        m = self.mapping(node, what, tuple(node.value) if isinstance(node.value, dict) else ())
        out: dict[str, str] = {}
        for key, value in (m or {}).items():
            if not ENV_RE.fullmatch(key):
                self.err(node.key_pos[key], f"invalid environment variable name {key!r} in {what}: use {ENV_RULE}")
                continue
            text = self.text_value(value, f"value of {key} in {what}")
            if text is not None:
                out[key] = text
        return out

    # ---- files --------------------------------------------------------------------

    def relative_file(self, node: YNode, what: str, *, suffix: str | None = None,
                      source: bool = False) -> str | None:
        """A path relative to the workflow directory that exists and stays inside it (and,
        for a `source` a definition file names, is in inputs.SAFE_SOURCE_RE)."""
        rel = self.string(node, what)
        if rel is None:
            return None
        problem = inputs.path_problem(self.root, rel, what, suffix=suffix, source=source)
        if problem:
            self.err(node, problem)
            return None
        return rel

    # ---- positions inside a scalar --------------------------------------------------

    def scalar_pos(self, node: YNode, offset: int) -> tuple[int, int]:
        """Line and column of character `offset` of a string scalar, where it can be known
        exactly (plain, quoted without escapes, literal block); else the scalar's start."""
        raw_node = node.node
        text = node.value
        if raw_node is None or not isinstance(text, str):
            return node.line, node.col
        raw = self.text[raw_node.start_mark.index : raw_node.end_mark.index]
        style = raw_node.style
        if style is None and raw == text:
            return node.line, node.col + offset
        if style in ("'", '"') and raw[1:-1] == text:
            return node.line, node.col + 1 + offset
        if style == "|":
            dl, dc = placeholders.offset_to_line_col(text, offset)
            lines = self.text.splitlines()
            first = raw_node.start_mark.line + 1
            content = [ln for ln in lines[first:] if ln.strip()]
            indent = len(content[0]) - len(content[0].lstrip(" ")) if content else 0
            return first + 1 + dl, indent + 1 + dc
        # Folded, multi-line plain or escaped quoted text: the placeholder token itself has no
        # spaces or escapes, so its k-th occurrence in the value is its k-th in the source.
        end = text.find("}", offset)
        if end > offset:
            token = text[offset : end + 1]
            nth = text.count(token, 0, offset)
            at = -1
            for _ in range(nth + 1):
                at = raw.find(token, at + 1)
                if at < 0:
                    return node.line, node.col
            index = raw_node.start_mark.index + at
            return self.text.count("\n", 0, index) + 1, index - (self.text.rfind("\n", 0, index) + 1) + 1
        return node.line, node.col
