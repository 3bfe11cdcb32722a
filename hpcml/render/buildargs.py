"""Build arguments of hand-written definition files: `{{ NAME }}` substituted the way
Apptainer 1.4 does it, so that hpcml validates and hashes the very text `apptainer build
--build-arg NAME=VALUE` will parse. Pure: text in, text out.

Apptainer's rules (measured on 1.4.5 and read from its `internal/pkg/build/args`):

- a file is split into stages at every line starting `Bootstrap:` (any case); each stage
  has its own `%arguments` defaults (`NAME=value` lines, `#` comments, spaces trimmed);
- `{{ NAME }}` (NAME of letters, digits and `_`) takes the value given with --build-arg,
  else the stage's default, else the build fails ("build var NAME is not defined");
- a value that itself holds `{{ OTHER }}` gets OTHER substituted once, where known;
- a reference is left as written when the text before it on its line (since the previous
  reference) contains `#` followed by anything but `!`: Apptainer takes it for a comment,
  even inside a quoted string (`echo "a#b {{ X }}"` keeps `{{ X }}`);
- a --build-arg that no stage references is fatal ("unused build args").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from hpcml.errors import Diagnostic, SpecError

#: Go's RE2 `{{\s*(\w+)\s*}}`; \s and \w spelt out, as RE2 reads them (ASCII only).
REF_RE = re.compile(r"\{\{[\t\n\f\r ]*([0-9A-Za-z_]+)[\t\n\f\r ]*\}\}")
#: Go's `\s*[#][^!]\s*.*`, matched anywhere (regexp.Match searches): a `#` then any
#: character but `!`.
_COMMENT_RE = re.compile(r"#[^!]", re.DOTALL)
STAGE_RE = re.compile(r"^bootstrap:", re.IGNORECASE | re.MULTILINE)

#: What a value given in `build_args:` may hold. It lands in the definition unquoted (in
#: shell scripts, `%files` lines and header values), so it must read as one shell word that
#: no shell or `%files` expansion interprets: no spaces (word splitting would add
#: arguments), `$`, quotes, backslashes, `~`, `#`, `%`, globs, redirections or newlines.
VALUE_RE = re.compile(r"[A-Za-z0-9._/:@+=,-]*")
VALUE_RULE = "letters, digits and . _ / : @ + = , - (one word: no spaces)"
NAME_RE = re.compile(r"[0-9A-Za-z_]+")
MAX_VALUE = 1024


@dataclass(frozen=True)
class Resolved:
    """A definition with its build arguments substituted, and what was substituted."""

    text: str
    consumed: frozenset[str]  # names referenced (and substituted) somewhere
    defaults: tuple[tuple[str, str], ...]  # every stage's %arguments defaults, in order


def stage_offsets(text: str) -> list[int]:
    """Where each stage starts: 0, then every line that starts with `Bootstrap:`."""
    starts = [m.start() for m in STAGE_RE.finditer(text)]
    return [0] + [s for s in starts if s != 0]


def defaults(stage: str) -> dict[str, str]:
    """The `%arguments` defaults of one stage's text (Apptainer's ReadDefaults)."""
    out: dict[str, str] = {}
    in_args = False
    for raw in stage.split("\n"):
        words = raw.split()
        if words and words[0].startswith("%"):
            in_args = raw.startswith("%") and raw.lstrip("%").split(" ", 1)[0].lower() == "arguments"
            continue
        line = raw.strip()
        if in_args and line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            if key.strip():
                out[key.strip()] = value.strip()
    return out


def substitute(text: str, path: str, given: Mapping[str, str]) -> Resolved:
    """`text` with every `{{ NAME }}` replaced as Apptainer would (see the module doc).

    Raises SpecError listing every reference that has no value, each as path:line:col.
    """
    out: list[str] = []
    consumed: set[str] = set()
    missing: list[Diagnostic] = []
    found: list[tuple[str, str]] = []
    offsets = stage_offsets(text) + [len(text)]
    for begin, end in pairwise(offsets):
        stage = text[begin:end]
        stage_defaults = defaults(stage)
        found += stage_defaults.items()
        out.append(_substitute_stage(stage, text, begin, path, given, stage_defaults, consumed, missing))
    if missing:
        raise SpecError(missing)
    return Resolved("".join(out), frozenset(consumed), tuple(found))


def _substitute_stage(stage: str, whole: str, base: int, path: str, given: Mapping[str, str],
                      stage_defaults: Mapping[str, str], consumed: set[str], missing: list[Diagnostic]) -> str:
    buf: list[str] = []
    i = 0
    for m in REF_RE.finditer(stage):
        line_start = max(stage.rfind("\n", i, m.start() + 1), i)
        if _COMMENT_RE.search(stage, line_start, m.start()):
            continue  # Apptainer leaves it as written (and `i` stays: the text is copied later)
        name = m.group(1)
        value = given.get(name, stage_defaults.get(name))
        if value is None:
            line = whole.count("\n", 0, base + m.start()) + 1
            col = base + m.start() - (whole.rfind("\n", 0, base + m.start()) + 1) + 1
            missing.append(Diagnostic(path, line, col, f"build argument {name} has no value: give it in the "
                                                       f"image's build_args or as a default in %arguments"))
            continue
        buf.append(stage[i:m.start()])
        buf.append(_nested(value, given, stage_defaults))
        consumed.add(name)
        i = m.end()
    buf.append(stage[i:])
    return "".join(buf)


def _nested(value: str, given: Mapping[str, str], stage_defaults: Mapping[str, str]) -> str:
    """One level of `{{ K }}` inside a value, from the given values, then the defaults."""
    out = value
    for m in REF_RE.finditer(value):
        key = m.group(1)
        if key in given:
            out = out.replace(m.group(0), given[key])
        elif key in stage_defaults:
            out = out.replace(m.group(0), stage_defaults[key])
    return out


def value_problem(name: str, value: str) -> str | None:
    """Why `value` cannot be given for build argument `name`, or None."""
    if not NAME_RE.fullmatch(name):
        return f"build argument name {name!r} is invalid (letters, digits and '_', as in {{{{ NAME }}}})"
    if len(value) > MAX_VALUE:
        return f"build argument {name}: the value is longer than {MAX_VALUE} characters"
    if not VALUE_RE.fullmatch(value) or value.startswith("-"):
        return (f"build argument {name}: value {value!r} would reach the definition file unquoted; "
                f"it may hold only {VALUE_RULE}, and not start with '-'")
    return None
