"""Dockerfile → definition text, with spython (DockerParser → SingularityWriter), and
the repairs its output needs. Pure apart from spython's global logger, which is quieted
for the conversion and restored.

spython translates some instructions wrongly or not at all, and says so only in warnings
(or not at all). So every instruction is first checked here (`check_instructions`): what
the conversion would get wrong is refused with Dockerfile:line:col, the reason and what
to write instead; what has no Apptainer equivalent and changes nothing in the image's
files (EXPOSE, VOLUME, STOPSIGNAL) is listed in the converted file's `%help`, so the
definition says where it differs. The repairs: exec-form CMD/ENTRYPOINT quoting, one
`%labels` line per label, ENV and ARG values exported to `%post` (Docker's RUN sees them
as environment variables; spython set shell variables only), and unnamed later stages
(`FROM x` after `FROM y AS build`) named, which spython otherwise merges into one.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from hpcml.errors import Diagnostic, SpecError
from hpcml.render.defparse import parse_definition
from hpcml.render.dockercheck import check_instructions


def convert_dockerfile(text: str, path: str) -> str:
    """Convert a Dockerfile's text to a definition with spython (DockerParser →
    SingularityWriter). COPY/ADD sources become `%files` relative to the workflow directory.
    """
    if not any(_first_word(line) == "FROM" for line in text.splitlines()):
        raise SpecError(Diagnostic(path, 1, 1, "Dockerfile has no FROM instruction"))
    text, notes, assignments = check_instructions(text, path)
    # spython is imported here, not at the top, for start-up speed: only dockerfile:
    # images need it, and it is the slowest import of the render stage.
    from spython.logger import bot
    from spython.main.parse.parsers import DockerParser
    from spython.main.parse.writers import SingularityWriter

    # spython logs warnings (and checks COPY sources against the cwd) through a global
    # logger; keep it quiet for the conversion and restore it after.
    saved, bot.level = bot.level, -5
    try:
        parser = DockerParser(None, load=False)  # no filename: we hand it the text ourselves
        parser.lines = text.splitlines(keepends=True)
        recipe = parser.parse()
        for layer in recipe.values():
            _repair_layer(layer, assignments)
        last = list(recipe.values())[-1]
        # spython's default runscript prefixes CMD with /bin/bash; Docker runs CMD as is.
        runscript = "" if (last.entrypoint or last.cmd) else "/bin/sh"
        converted = SingularityWriter(recipe).convert(runscript=runscript)
    except (SystemExit, Exception) as err:  # spython calls sys.exit on some bad input
        message = f"cannot convert the Dockerfile: {err or type(err).__name__}"
        raise SpecError(Diagnostic(path, 1, 1, message)) from None
    finally:
        bot.level = saved
    result = "\n".join(_fix_converted(converted.strip("\n").split("\n"))) + "\n"
    if notes:
        result += "%help\nNot translated from the Dockerfile (no Apptainer equivalent; the image's files are the same):\n"
        result += "".join(f"  line {n}: {what}\n" for n, what in notes)
    parse_definition(result, path)
    return result


def _repair_layer(layer: Any, assignments: set[str]) -> None:
    """Fix what spython's writer would get wrong, on its parsed recipe layer:

    - exec-form ENTRYPOINT/CMD (JSON lists) are joined with plain spaces, losing the
      quoting (`["-c", "print(1)"]` → `-c print(1)`, a shell syntax error): shell-quote them;
    - a LABEL line is kept whole (`a=b c="d e"`), where `%labels` wants one `k v` per line;
    - ENV and ARG become `NAME=value` lines in `%post`: shell variables that the commands
      of later RUNs never see. Docker passes them as environment variables: export them.
    """
    layer.install = [f"export {line}" if line in assignments or line in layer.environ else line
                     for line in layer.install]
    for attr in ("entrypoint", "cmd"):
        value = getattr(layer, attr, None)
        if isinstance(value, list):
            setattr(layer, attr, shlex.join(str(v) for v in value))
    labels: list[list[str]] = []
    for entry in getattr(layer, "labels", None) or []:
        text = " ".join(entry)
        try:
            words = shlex.split(text)
        except ValueError as err:
            raise ValueError(f"LABEL {text}: {err}") from None
        if words and all("=" in w for w in words):
            labels += [[f"{k} {v}".strip()] for k, v in (w.split("=", 1) for w in words)]
        elif words:  # legacy form: LABEL key value with spaces
            labels.append([f"{words[0]} {' '.join(words[1:])}".strip()])
    layer.labels = labels


def _fix_converted(lines: list[str]) -> list[str]:
    """Repair spython's `exec  cmd` spacing in the run/start scripts."""
    out, section = [], ""
    for line in lines:
        if line.startswith("%"):
            section = line[1:].split()[0].lower() if line[1:].split() else ""
        elif section in ("runscript", "startscript"):
            line = re.sub(r"^exec\s+", "exec ", line)
        out.append(line)
    return out


def _first_word(line: str) -> str:
    words = line.split()
    return words[0].upper() if words else ""
