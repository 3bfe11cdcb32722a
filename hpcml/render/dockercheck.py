"""Which Dockerfile instructions the spython conversion translates faithfully, which it
would get wrong (refused, with the reason and what to write instead), and which have no
Apptainer equivalent but change nothing in the image's files (listed as notes). Pure.

Measured on spython 0.3.14 (see tests/unit/test_dockerfile_corpus.py): USER becomes
`su - NAME` inside `%post`; SHELL, ONBUILD and unknown instructions become shell commands;
HEALTHCHECK becomes a `%test` holding `CMD …`; flags such as `COPY --chown=…` or
`FROM --platform=…` are read as paths or images; a JSON-form RUN or COPY is pasted as its
JSON text; ADD of a URL needs curl in the image and ADD of a local archive writes
`tar -zvf` (which does not extract); a later FROM without AS is merged into the stage
before it; `FROM stage` and `COPY --from=N` name a Docker Hub image and nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from hpcml.errors import Diagnostic, SpecError

_Refuse = Callable[[int, str], None]

#: Instructions that are translated (possibly after a repair in dockerfile.py).
TRANSLATED = frozenset({"FROM", "RUN", "ENV", "ARG", "COPY", "ADD", "WORKDIR", "CMD", "ENTRYPOINT", "LABEL",
                        "MAINTAINER"})
#: No Apptainer equivalent, and the image's files are the same without them.
NOTED = {
    "EXPOSE": "Apptainer containers share the host's network; there is nothing to publish",
    "VOLUME": "Apptainer binds host directories at run time (--bind); nothing is declared in the image",
    "STOPSIGNAL": "Apptainer has no per-image stop signal",
}
#: Refused: what the conversion would do instead, and what to write.
REFUSED = {
    "USER": "is not translated: spython turns it into `su - NAME` inside %post, and an Apptainer container "
            "runs as the user who starts it anyway; remove the line (make files the user needs readable by all)",
    "SHELL": "is not translated (spython pastes it into %post as a command); remove it and write the shell "
             "into the RUN lines (`RUN bash -c '…'`)",
    "ONBUILD": "is not translated (spython pastes it into %post as a command); remove it",
    "HEALTHCHECK": "is not translated (spython turns it into a %test holding `CMD …`); remove it, or write a "
                   "deffile: with a %test section",
}
_ARCHIVE_RE = re.compile(r"\.(tar|tgz|tbz2?|txz|gz|gzip|bz2|xz|zst)$", re.IGNORECASE)
_HEREDOC_RE = re.compile(r"<<-?['\"]?([A-Za-z_][A-Za-z0-9_]*)")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def instructions(text: str, dropped: list[int] | None = None) -> list[tuple[int, str, str]]:
    """(line, KEYWORD, arguments) of every instruction: continuation lines (ending `\\`)
    joined, comment lines skipped (also inside a continuation, as Docker does: their line
    numbers are added to `dropped`), here-document bodies skipped."""
    out: list[tuple[int, str, str]] = []
    parts: list[str] = []
    start = 0
    heredoc: str | None = None  # the terminator of a here-document being skipped
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if heredoc is not None:
            heredoc = None if stripped == heredoc else heredoc
            continue
        if stripped.startswith("#") or (not parts and not stripped):
            if parts and dropped is not None:
                dropped.append(n)
            continue
        if not parts:
            start = n
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, rest = " ".join(p for p in parts if p).partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
        parts = []
        marker = _HEREDOC_RE.search(rest)
        if marker:
            heredoc = marker.group(1)
    if parts:
        keyword, _, rest = " ".join(p for p in parts if p).partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
    return out


def check_instructions(text: str, path: str) -> tuple[str, list[tuple[int, str]], set[str]]:
    """Check every instruction of a Dockerfile before spython converts it.

    Returns the text to convert (later unnamed stages named `stage-N`), the notes for
    `%help` as (line, text), and the `NAME=value` words of ARG (which the conversion
    exports, as it does ENV's). Raises SpecError listing every instruction it would get wrong.
    """
    diags: list[Diagnostic] = []
    notes: list[tuple[int, str]] = []
    assignments: set[str] = set()
    stages: list[str] = []
    renames: dict[int, str] = {}  # line → text appended (` AS stage-N`)
    rewrites: dict[int, str] = {}  # line → the line's new text
    entrypoint_shell: tuple[int, bool] | None = None
    has_cmd = False

    def refuse(line: int, message: str) -> None:
        diags.append(Diagnostic(path, line, 1, message))

    dropped: list[int] = []
    for line, keyword, rest in instructions(text, dropped):
        shown = f"{keyword} {rest}".strip()
        if len(shown) > 60:
            shown = shown[:57] + "..."
        if _HEREDOC_RE.search(rest) and keyword in ("RUN", "COPY", "ADD"):
            refuse(line, f"{keyword} with a here-document is not translated by the conversion; write the "
                         "file in the build context and COPY it, or use a deffile:")
            continue
        if keyword == "FROM":
            name = _check_from(line, rest, stages, refuse)
            if name is None and stages:
                name = f"stage-{len(stages)}"
                renames[line] = name
            stages.append((name or "").lower())
            entrypoint_shell, has_cmd = None, False
        elif keyword in REFUSED:
            refuse(line, f"{keyword} {REFUSED[keyword]}")
        elif keyword in NOTED:
            notes.append((line, f"{shown}: {NOTED[keyword]}"))
        elif keyword not in TRANSLATED:
            refuse(line, f"unknown instruction {keyword!r}")
        elif keyword == "RUN" and rest.startswith(("[", "--")):
            refuse(line, "RUN in JSON (exec) form or with flags (--mount, --network) is not translated; "
                         "write it in shell form: RUN command args")
        elif keyword in ("COPY", "ADD"):
            _check_copy(line, keyword, rest, stages, refuse)
        elif keyword == "ARG":
            _arg(line, rest, assignments, refuse)
        elif keyword == "ENV":
            _env(line, rest, text, rewrites, refuse)
        elif keyword == "ENTRYPOINT":
            entrypoint_shell = (line, not rest.startswith("["))
        elif keyword == "CMD":
            has_cmd = True
    if entrypoint_shell is not None and entrypoint_shell[1] and has_cmd:
        refuse(entrypoint_shell[0], "a shell-form ENTRYPOINT makes Docker ignore CMD, which the conversion "
                                    "would append to it; write ENTRYPOINT in JSON form or drop the CMD")
    if diags:
        raise SpecError(diags)
    lines = text.split("\n")
    for line, new_text in rewrites.items():
        lines[line - 1] = new_text
    for line, name in renames.items():
        lines[line - 1] = lines[line - 1].rstrip() + f" AS {name}"
    # A comment line inside a continuation would end the shell command in %post there.
    lines = [ln for n, ln in enumerate(lines, 1) if n not in set(dropped)]
    return "\n".join(lines), notes, assignments


def _check_from(line: int, rest: str, stages: list[str], refuse: _Refuse) -> str | None:
    """Check a FROM; return its stage name (AS NAME) or None."""
    words = rest.split()
    for flag in (w for w in words if w.startswith("--")):
        refuse(line, f"FROM {flag} is not translated (spython would read the flag as the image); remove it")
    words = [w for w in words if not w.startswith("--")]
    if not words:
        refuse(line, "FROM needs an image")
        return None
    if words[0].lower() in stages and words[0]:
        refuse(line, f"FROM {words[0]} builds on an earlier stage, which the conversion does not translate "
                     "(it would pull an image of that name); copy what you need with COPY --from instead")
    if len(words) == 3 and words[1].lower() == "as":
        return words[2]
    if len(words) != 1:
        refuse(line, f"FROM {rest}: expected 'FROM IMAGE' or 'FROM IMAGE AS NAME'")
    return None


def _check_copy(line: int, keyword: str, rest: str, stages: list[str], refuse: _Refuse) -> None:
    if rest.startswith("["):
        refuse(line, f"{keyword} in JSON form is not translated; write {keyword} SRC… DEST")
        return
    words = rest.split()
    for flag in (w for w in words if w.startswith("--")):
        name, _, value = flag.partition("=")
        if keyword == "COPY" and name == "--from":
            if value.isdigit():
                refuse(line, f"COPY {flag}: name the stage (FROM … AS NAME, then COPY --from=NAME)")
            elif value.lower() not in stages:
                refuse(line, f"COPY {flag}: no earlier stage is named {value!r} (copying from another image "
                             "is not translated)")
        else:
            refuse(line, f"{keyword} {name} is not translated (spython reads it as a file name); remove it "
                         "(Apptainer files belong to the builder, and %post may chmod/chown them)")
    sources = [w for w in words if not w.startswith("--")][:-1]
    if keyword == "ADD":
        for src in sources:
            if re.match(r"[a-z]+://", src):
                refuse(line, f"ADD {src}: downloading is not translated (the conversion would need curl in "
                             "the image); use RUN with curl or wget, or COPY a local file")
            elif _ARCHIVE_RE.search(src):
                refuse(line, f"ADD {src}: Docker unpacks a local archive, the conversion would not "
                             "(it writes `tar -zvf`); COPY it and RUN tar -x")


def _arg(line: int, rest: str, assignments: set[str], refuse: _Refuse) -> None:
    """Record ARG's `NAME=value` words (spython's entries in %post, to be exported); ENV's
    are in the parsed layer's `environ` already."""
    for word in rest.split():
        if "=" not in word:
            refuse(line, f"ARG {word} has no default: the conversion cannot take build arguments for a "
                         f"Dockerfile; give it one (ARG {word}=VALUE)")
        elif not _ENV_NAME_RE.fullmatch(word.split("=", 1)[0]):
            refuse(line, f"ARG {word}: invalid name")
        else:
            assignments.add(word)


def _env(line: int, rest: str, text: str, rewrites: dict[int, str], refuse: _Refuse) -> None:
    """The legacy form `ENV NAME value with spaces` breaks spython (it pairs the words up):
    rewrite it as `ENV NAME="value with spaces"` when it is one line without quotes."""
    words = rest.split()
    if len(words) < 3 or "=" in words[0]:
        return
    physical = text.split("\n")[line - 1]
    value = rest[len(words[0]):].strip()
    if physical.rstrip().endswith("\\") or any(c in value for c in "\"'\\$"):
        refuse(line, f"ENV {words[0]} {value}: write it as ENV {words[0]}=\"…\" (the conversion cannot read "
                     "this form)")
        return
    rewrites[line] = f'ENV {words[0]}="{value}"'
