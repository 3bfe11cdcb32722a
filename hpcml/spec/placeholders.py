"""Placeholders in `run:` commands: the one definition shared by the checker and plan.py.

Contract (the checker validates with it, plan.py substitutes with it):

- Only ``{identifier}`` and ``{in.identifier}`` are placeholders, where identifier is
  ``[A-Za-z0-9_][A-Za-z0-9_-]*``. Known names are the matrix axes, ``step``, ``task``,
  ``out`` and ``in.STEP`` for a step listed in ``needs``; anything else is a spec error.
- ``${...}`` and ``$VAR`` are shell parameter expansions and are left to the shell.
- ``{{`` and ``}}`` are escaped literal braces: they become ``{`` and ``}`` in the final
  command (``awk '{{print $1}}'``). Any other ``{`` (``{a,b}``, ``{ cmd; }``) is literal.

Substitution happens in two stages (matrix values first, then paths once keys are known),
so intermediate text keeps its escapes: substituted values have their braces doubled,
and only `unescape` (called by plan.fill_paths) turns ``{{`` back into ``{``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterator

#: One token: an escaped brace, or a placeholder not preceded by `$` (which is `${VAR}`).
PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|(?<!\$)\{(?P<name>(?:in\.)?[A-Za-z0-9_][A-Za-z0-9_-]*)\}")


@dataclass(frozen=True)
class Placeholder:
    """A placeholder found in a text: its name (``lr``, ``in.prepare``) and 0-based offsets."""

    name: str
    start: int
    end: int


def find_placeholders(text: str) -> list[Placeholder]:
    """Every placeholder in `text`, in order; escaped braces and `${...}` are skipped.

    >>> [p.name for p in find_placeholders("run --lr {lr} --in {in.prep} ${HOME} {{x}}")]
    ['lr', 'in.prep']
    """
    return list(_iter_placeholders(text))


def _iter_placeholders(text: str) -> Iterator[Placeholder]:
    for m in PLACEHOLDER_RE.finditer(text):
        if m.group("name") is not None:
            yield Placeholder(m.group("name"), m.start(), m.end())


def offset_to_line_col(text: str, offset: int) -> tuple[int, int]:
    """0-based offset in `text` → (0-based line, 0-based column) within it, for error positions."""
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return line, col


def escape(value: str) -> str:
    """Double the braces of a substituted value so a later stage does not see placeholders in it."""
    return value.replace("{", "{{").replace("}", "}}")


def substitute(text: str, lookup: Callable[[str], str | None]) -> str:
    """Replace each placeholder whose `lookup(name)` is not None; keep the others and all
    escapes as they are. Returned values are inserted verbatim, so quote and `escape` them first.
    """

    parts: list[str] = []
    for literal, name, token in _segments(text):
        parts.append(literal)
        value = lookup(name) if name is not None else None
        parts.append(token if value is None else value)
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def _segments(text: str) -> tuple[tuple[str, str | None, str], ...]:
    # (text before, placeholder name or None for an escape, the token as written), scanned
    # once per text: a sweep substitutes one template for each of thousands of points.
    out: list[tuple[str, str | None, str]] = []
    last = 0
    for m in PLACEHOLDER_RE.finditer(text):
        out.append((text[last:m.start()], m.group("name"), m.group(0)))
        last = m.end()
    out.append((text[last:], None, ""))
    return tuple(out)


def unescape(text: str) -> str:
    """Turn ``{{``/``}}`` into ``{``/``}``; the last step, once every placeholder is filled."""
    return PLACEHOLDER_RE.sub(lambda m: m.group(0) if m.group("name") is not None else m.group(0)[0], text)


# ---- quoting around a placeholder --------------------------------------------------------

#: What a substituted value may not stand inside: hpcml shell-quotes it (`'a b'`), and in
#: these places those quotes are text, not quoting, so `"{x}"` with x = `a"; rm -rf ~; "`
#: would run the rm.
QUOTE_CONTEXTS = {"'": "single quotes", '"': "double quotes", "`": "backquotes", "heredoc": "a here-document"}

_HEREDOC_RE = re.compile(r"<<-?[ \t]*(?P<q>['\"]?)(?P<word>[A-Za-z0-9_.-]+)(?P=q)")


def quote_contexts(text: str) -> list[str | None]:
    """For each character of the shell text `text`: the quoting it stands in (a key of
    QUOTE_CONTEXTS), "#" inside a comment, or None outside any quoting.

    A reading of POSIX shell quoting good enough to place placeholders: backslash escapes,
    '…', "…", `…`, $'…', comments and here-documents. `$(…)` inside double quotes counts as
    inside them (erring toward refusing).

    >>> ctx = quote_contexts('echo "{x}" {y}')
    >>> ctx[6], ctx[11]
    ('"', None)
    """
    out: list[str | None] = [None] * len(text)
    i, n = 0, len(text)
    heredocs: list[tuple[str, bool]] = []  # (delimiter, tabs stripped) waiting for the next line
    state: str | None = None
    while i < n:
        c = text[i]
        if state is None:
            if c == "\\":
                i += 2
                continue
            if c == "\n" and heredocs:
                i = _skip_heredocs(text, i + 1, heredocs, out)
                heredocs = []
                continue
            if c == "#" and (i == 0 or text[i - 1] in " \t\n;&|("):
                end = text.find("\n", i)
                end = n if end < 0 else end
                out[i:end] = ["#"] * (end - i)
                i = end
                continue
            if c == "<" and (m := _HEREDOC_RE.match(text, i)):
                heredocs.append((m.group("word"), m.group(0).startswith("<<-")))
                i = m.end()
                continue
            if c == "$" and text.startswith("$'", i):
                state, i = "'", i + 2  # ANSI-C quoting: as single quotes, for placing
                continue
            if c in "'\"`":
                state = c
            i += 1
            continue
        out[i] = state
        if c == "\\" and state != "'":
            if i + 1 < n:
                out[i + 1] = state
            i += 2
            continue
        if c == state:
            state = None
        i += 1
    return out


def _skip_heredocs(text: str, i: int, heredocs: list[tuple[str, bool]], out: list[str | None]) -> int:
    """Mark the bodies of the pending here-documents from offset `i`; return the offset after them."""
    for word, strip_tabs in heredocs:
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line = text[i:end]
            if (line.lstrip("\t") if strip_tabs else line) == word:
                i = end + 1
                break
            out[i:end] = ["heredoc"] * (end - i)
            i = end + 1
    return i
