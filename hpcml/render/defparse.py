"""Hand-written Apptainer definition files (`deffile:` images, and what a Dockerfile
converts to): parsed and validated, never executed. Pure: text in, a Definition or a
SpecError listing every problem as path:line:col."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hpcml.errors import Diagnostic, SpecError

#: Header keywords Apptainer knows, and the bootstrap agents hpcml accepts in a deffile.
HEADER_KEYS = frozenset(
    k.lower()
    for k in (
        "Bootstrap", "From", "OSVersion", "MirrorURL", "Include", "Stage", "Fingerprints",
        "Confurl", "Registry", "Namespace", "Library", "Product", "User", "Regcode",
        "ProductPGP", "RegisterURL", "Updateurl", "UpdateURL", "Setopt",
    )
)
BOOTSTRAP_AGENTS = frozenset(
    {"docker", "docker-daemon", "docker-archive", "oci", "oci-archive", "oras", "library",
     "localimage", "scratch", "debootstrap", "yum", "dnf", "zypper", "arch", "busybox", "shub"}
)
#: Sections accepted in a hand-written def file. `%setup` and `%pre` run on the build host
#: (outside the container), so they are refused: they could read or change anything the
#: builder can, and their effects are not part of the image key.
SECTIONS = frozenset(
    {"files", "post", "environment", "labels", "test", "runscript", "startscript", "help",
     "arguments", "apprun", "appinstall", "appenv", "apphelp", "appfiles", "applabels", "apptest"}
)
REFUSED_SECTIONS = frozenset({"setup", "pre"})

SECTION_RE = re.compile(r"^%([A-Za-z]+)\b(.*)$")
_HEADER_RE = re.compile(r"^([A-Za-z]+)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class Definition:
    """A parsed definition file: header keywords (lowercased) and sections, with lines."""

    header: dict[str, tuple[str, int]] = field(default_factory=dict)  # key → (value, line)
    sections: tuple[tuple[str, str, int, tuple[str, ...]], ...] = ()  # (name, args, line, body)

    @property
    def bootstrap(self) -> str:
        return self.header.get("bootstrap", ("", 0))[0].lower()

    def files(self) -> list[tuple[str, str, int]]:
        """(src, dst, line) of every `%files` entry (dst defaults to src, as Apptainer does)."""
        out = []
        for name, args, line, body in self.sections:
            if name != "files" or args.strip():  # `%files from STAGE` copies between stages
                continue
            for n, raw in enumerate(body, line + 1):
                words = raw.split()
                if words and not words[0].startswith("#"):
                    out.append((words[0], words[1] if len(words) > 1 else words[0], n))
        return out


def parse_definition(text: str, path: str) -> Definition:
    """Parse and validate a hand-written definition file; SpecError lists every problem
    as path:line:col (missing or unknown Bootstrap, unknown header keys, refused or unknown
    sections, `From:` missing where the agent needs it)."""
    diags: list[Diagnostic] = []
    header: dict[str, tuple[str, int]] = {}
    sections: list[tuple[str, str, int, tuple[str, ...]]] = []
    body: list[str] = []
    lines = text.split("\n")
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        m = SECTION_RE.match(stripped) if line.startswith("%") else None
        if m:
            if sections:
                sections[-1] = (*sections[-1][:3], tuple(body))
            body = []
            name = m.group(1).lower()
            if name in REFUSED_SECTIONS:
                diags.append(Diagnostic(path, n, 1, f"section %{name} runs on the build host and is not allowed"))
            elif name not in SECTIONS:
                allowed = ", ".join("%" + s for s in sorted(SECTIONS))
                diags.append(Diagnostic(path, n, 1, f"unknown section %{name} (allowed: {allowed})"))
            sections.append((name, m.group(2).strip(), n, ()))
        elif stripped.startswith("%"):
            # Apptainer takes any line whose first word starts with '%' for a section header,
            # and refuses it when indented: `validate` must not say ok to such a file.
            diags.append(Diagnostic(path, n, 1, "an indented line starting with '%' is read as a section "
                                                "header by Apptainer, which refuses it indented"))
            body.append(line)
        elif sections:
            body.append(line)
        elif stripped and not stripped.startswith("#"):
            hm = _HEADER_RE.match(stripped)
            if not hm:
                diags.append(Diagnostic(path, n, 1, f"expected 'Keyword: value' in the header, got {stripped!r}"))
                continue
            key = hm.group(1).lower()
            if key not in HEADER_KEYS:
                diags.append(Diagnostic(path, n, 1, f"unknown header keyword {hm.group(1)!r}"))
            header.setdefault(key, (hm.group(2), n))
    if sections:
        sections[-1] = (*sections[-1][:3], tuple(body))
    definition = Definition(header, tuple(sections))
    _check_bootstrap(definition, path, diags)
    if diags:
        raise SpecError(diags)
    return definition


def _check_bootstrap(d: Definition, path: str, diags: list[Diagnostic]) -> None:
    if "bootstrap" not in d.header:
        diags.append(Diagnostic(path, 1, 1, "definition file has no 'Bootstrap:' header"))
        return
    agent, line = d.header["bootstrap"]
    if agent.lower() not in BOOTSTRAP_AGENTS:
        allowed = ", ".join(sorted(BOOTSTRAP_AGENTS))
        diags.append(Diagnostic(path, line, 1, f"unknown Bootstrap {agent!r} (allowed: {allowed})"))
    elif agent.lower() not in ("scratch", "debootstrap", "yum", "dnf", "zypper", "arch", "busybox") \
            and not d.header.get("from", ("", 0))[0]:
        diags.append(Diagnostic(path, line, 1, f"Bootstrap: {agent} needs a 'From:' header"))
    elif agent.lower() == "debootstrap" and not d.header.get("osversion", ("", 0))[0]:
        diags.append(Diagnostic(path, line, 1, "Bootstrap: debootstrap needs an 'OSVersion:' header"))
