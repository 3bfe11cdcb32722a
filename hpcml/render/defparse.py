"""Hand-written Apptainer definition files (`deffile:` images, and what a Dockerfile
converts to): parsed and validated, never executed. Pure: text in, a Definition or a
SpecError listing every problem as path:line:col.

The reading follows Apptainer 1.4 (the version hpcml supports; see docs/spec.md,
"Bringing existing files"): a file is one or more stages, each starting at a line
`Bootstrap:`; a stage is a header of `Keyword: value` lines, then sections that start at a
line whose first word begins with `%`. Whatever Apptainer 1.4 accepts is accepted here,
except what hpcml refuses on purpose, each with its reason:

- `%setup` and `%pre` run on the build host, as the builder: refused unless the lab allows
  them for the image (setting `allow_setup`, docs/configuration.md);
- a `#` glued to a header value (Apptainer cuts the value there, so `From: a#b` builds
  `a`); a comment after a space (`From: busybox  # why`) is read as Apptainer does;
- a header keyword given twice (Apptainer keeps the last one; hpcml would hash the other).

Build arguments (`{{ NAME }}`) are substituted before parsing: see buildargs.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

from hpcml.errors import Diagnostic, SpecError
from hpcml.render.buildargs import stage_offsets

#: Header keywords Apptainer 1.4 knows (`OtherURL<N>` takes any number).
HEADER_KEYS = frozenset(
    {"bootstrap", "from", "includecmd", "mirrorurl", "updateurl", "osversion", "include", "library",
     "registry", "namespace", "stage", "product", "user", "regcode", "productpgp", "registerurl",
     "modules", "fingerprints", "confurl", "setopt"}
)
_NUMBERED_HEADER_RE = re.compile(r"otherurl[0-9]+")
#: The bootstrap agents of Apptainer 1.4 (`invalid build source` for anything else).
BOOTSTRAP_AGENTS = frozenset(
    {"docker", "docker-daemon", "docker-archive", "oci", "oci-archive", "oras", "library", "shub",
     "localimage", "scratch", "debootstrap", "yum", "dnf", "zypper", "arch", "busybox"}
)
#: Agents some Apptainer knows but 1.4 refuses ("invalid build source"), and what to do instead.
NOT_IN_APPTAINER_14 = {
    "buildkit": "Bootstrap: buildkit arrived in Apptainer 1.5; Apptainer 1.4 refuses it "
                "(\"invalid build source\"). For a Dockerfile, use `dockerfile:` instead of `deffile:`",
    "self": "Bootstrap: self is not a bootstrap agent of Apptainer 1.4 (\"invalid build source\")",
}
_NEEDS_FROM = frozenset({"docker", "docker-daemon", "docker-archive", "oci", "oci-archive", "oras", "library",
                         "shub", "localimage"})
#: Agents whose `From:` is a path on the build host.
LOCAL_AGENTS = frozenset({"localimage", "oci", "oci-archive", "docker-archive"})
#: Sections of Apptainer 1.4. App sections (SCIF) take the app's name: `%apprun NAME`.
APP_SECTIONS = frozenset({"appinstall", "applabels", "appfiles", "appenv", "apptest", "apphelp", "apprun",
                          "appstart"})
#: Sections that run on the build host, outside the container, as the builder.
HOST_SECTIONS = frozenset({"setup", "pre"})
SECTIONS = frozenset(
    {"files", "post", "environment", "labels", "test", "runscript", "startscript", "help", "arguments"}
) | APP_SECTIONS | HOST_SECTIONS
#: Kept for callers that ask which sections are refused by default.
REFUSED_SECTIONS = HOST_SECTIONS
#: The lab setting that allows host sections for named images (config.Settings.allow_setup).
HOST_SETTING = "allow_setup"

SECTION_RE = re.compile(r"^%([A-Za-z]+)\b(.*)$")


@dataclass(frozen=True)
class Stage:
    """One stage: header keywords (lowercased) and sections, with their lines."""

    header: dict[str, tuple[str, int]] = field(default_factory=dict)  # key → (value, line)
    sections: tuple[tuple[str, str, int, tuple[str, ...]], ...] = ()  # (name, args, line, body)

    @property
    def bootstrap(self) -> str:
        return self.header.get("bootstrap", ("", 0))[0].lower()

    @property
    def name(self) -> str:
        return self.header.get("stage", ("", 0))[0]


@dataclass(frozen=True)
class Definition:
    """A parsed definition file: its stages, the last of which is the image."""

    stages: tuple[Stage, ...] = ()

    @property
    def header(self) -> dict[str, tuple[str, int]]:
        return self.stages[-1].header if self.stages else {}

    @property
    def sections(self) -> tuple[tuple[str, str, int, tuple[str, ...]], ...]:
        return self.stages[-1].sections if self.stages else ()

    @property
    def bootstrap(self) -> str:
        return self.stages[-1].bootstrap if self.stages else ""

    def host_sections(self) -> list[tuple[str, int]]:
        """(name, line) of every `%setup`/`%pre`, in any stage."""
        return [(s[0], s[2]) for st in self.stages for s in st.sections if s[0] in HOST_SECTIONS]

    def files(self) -> list[tuple[str, str, int]]:
        """(src, dst, line) of every `%files` and `%appfiles NAME` entry copied from the
        host, in any stage (dst defaults to src, as Apptainer does); `%files from STAGE`
        copies between stages."""
        out = []
        for stage in self.stages:
            for name, args, line, body in stage.sections:
                if not (name == "files" and not args.strip()) and name != "appfiles":
                    continue
                for n, raw in enumerate(body, line + 1):
                    words = raw.split()
                    if words and not words[0].startswith("#"):
                        out.append((words[0], words[1] if len(words) > 1 else words[0], n))
        return out

    def stage_files(self) -> list[tuple[str, int]]:
        """(src, line) of every `%files from STAGE` entry: copies between stages, whose
        sources Apptainer expands like host ones."""
        out = []
        for stage in self.stages:
            for name, args, line, body in stage.sections:
                if name != "files" or not args.strip():
                    continue
                for n, raw in enumerate(body, line + 1):
                    words = raw.split()
                    if words and not words[0].startswith("#"):
                        out.append((words[0], n))
        return out

    def local_sources(self) -> list[tuple[str, int]]:
        """(path, line) of every stage built from a local file or directory (localimage,
        oci, oci-archive, docker-archive): files the build reads. A `:TAG` after an OCI
        path or archive is not part of the path."""
        out = []
        for st in self.stages:
            if st.bootstrap in LOCAL_AGENTS and "from" in st.header:
                ref, line = st.header["from"]
                if st.bootstrap != "localimage":
                    ref = ref.split(":", 1)[0]
                out.append((ref, line))
        return out


def parse_definition(text: str, path: str, *, allow_host: bool = False) -> Definition:
    """Parse and validate a hand-written definition file (build arguments already
    substituted); SpecError lists every problem as path:line:col (missing or unknown
    Bootstrap, unknown header keywords, refused or unknown sections, `From:` missing where
    the agent needs it). `allow_host` lets `%setup`/`%pre` through (the lab allowed them)."""
    diags: list[Diagnostic] = []
    stages: list[Stage] = []
    offsets = stage_offsets(text) + [len(text)]
    for begin, end in pairwise(offsets):
        first_line = text.count("\n", 0, begin) + 1
        chunk = text[begin:end]
        if begin == 0 and len(offsets) > 2 and not chunk.lower().startswith("bootstrap:"):
            if any(ln.strip() and not ln.strip().startswith("#") for ln in chunk.split("\n")):
                diags.append(Diagnostic(path, 1, 1, "text before the first 'Bootstrap:' line: Apptainer "
                                                    "reads it as a stage without a header and refuses it"))
            continue
        stage = _parse_stage(chunk, first_line, path, allow_host, diags)
        stages.append(stage)
        _check_bootstrap(stage, path, first_line, diags)
    _check_stage_names(stages, path, diags)
    if diags:
        raise SpecError(diags)
    return Definition(tuple(stages))


def _parse_stage(chunk: str, first_line: int, path: str, allow_host: bool, diags: list[Diagnostic]) -> Stage:
    header: dict[str, tuple[str, int]] = {}
    sections: list[tuple[str, str, int, tuple[str, ...]]] = []
    body: list[str] = []
    continued: tuple[str, str, int] | None = None  # header key, value so far, line
    for n, raw in enumerate(chunk.split("\n"), first_line):
        line = raw.rstrip("\r")
        stripped = line.strip()
        words = line.split()
        if words and words[0].startswith("%"):
            if not line.startswith("%"):
                # Apptainer takes any line whose first word starts with '%' for a section
                # header, and refuses it indented: `validate` must not say ok to such a file.
                diags.append(Diagnostic(path, n, 1, "an indented line starting with '%' is read as a section "
                                                    "header by Apptainer, which refuses it indented"))
                body.append(line)
                continue
            if sections:
                sections[-1] = (*sections[-1][:3], tuple(body))
            body = []
            name, _, args = line.lstrip("%").partition(" ")
            name = name.lower()
            _check_section(name, args, n, path, allow_host, diags)
            sections.append((name, args.strip(), n, ()))
        elif sections:
            body.append(line)
        elif continued is not None or (stripped and not stripped.startswith("#")):
            continued = _header_line(stripped, n, continued, header, path, diags)
    if continued is not None:
        _set_header(header, continued[0], continued[1], continued[2], path, diags)
    if sections:
        sections[-1] = (*sections[-1][:3], tuple(body))
    return Stage(header, tuple(sections))


def _header_line(stripped: str, n: int, continued: tuple[str, str, int] | None,
                 header: dict[str, tuple[str, int]], path: str,
                 diags: list[Diagnostic]) -> tuple[str, str, int] | None:
    """One header line (Apptainer's doHeader); returns the key still being continued."""
    if continued is not None and (not stripped or stripped.startswith("#")):
        _set_header(header, *continued, path, diags)
        return None
    if "#" in stripped:
        # Apptainer cuts a header line at its first '#'. A comment after a space is read
        # the same by everyone; `From: a#b.sif` builds from `a` while a reader (and the key)
        # sees `a#b.sif`: refused.
        at = stripped.index("#")
        if at > 0 and not stripped[at - 1].isspace():
            diags.append(Diagnostic(path, n, at + 1, "'#' inside a header value: Apptainer cuts the value there "
                                                     "(so 'From: a#b' would build from 'a'); hpcml refuses it"))
        stripped = stripped[:at].rstrip()
    if continued is None:
        key, colon, value = stripped.partition(":")
        if not colon:
            diags.append(Diagnostic(path, n, 1, f"expected 'Keyword: value' in the header, got {stripped!r}"))
            return None
        key, value, line = key.strip().lower(), value.strip(), n
        if key not in HEADER_KEYS and not _NUMBERED_HEADER_RE.fullmatch(key):
            diags.append(Diagnostic(path, n, 1, f"unknown header keyword {stripped.partition(':')[0].strip()!r}"))
            return None
    else:
        key, value, line = continued[0], continued[1] + stripped, continued[2]
    if value.endswith("\\"):
        value = value[:-1]
        return key, value[:-2] + "\n" if value.endswith("\\n") else value, line
    _set_header(header, key, value, line, path, diags)
    return None


def _set_header(header: dict[str, tuple[str, int]], key: str, value: str, line: int, path: str,
                diags: list[Diagnostic]) -> None:
    if key in header:
        diags.append(Diagnostic(path, line, 1, f"header keyword {key!r} is given twice (first on line "
                                               f"{header[key][1]}); Apptainer would use the last one"))
        return
    header[key] = (value, line)


def _check_section(name: str, args: str, n: int, path: str, allow_host: bool, diags: list[Diagnostic]) -> None:
    if name in HOST_SECTIONS and not allow_host:
        diags.append(Diagnostic(path, n, 1, f"section %{name} runs on the build host, as the builder, and is "
                                            f"not allowed by default; a lab may allow it for named images "
                                            f"with the setting {HOST_SETTING} (docs/configuration.md)"))
    elif name not in SECTIONS:
        allowed = ", ".join("%" + s for s in sorted(SECTIONS))
        diags.append(Diagnostic(path, n, 1, f"unknown section %{name} (allowed: {allowed})"))
    elif name in APP_SECTIONS and not args.split():
        diags.append(Diagnostic(path, n, 1, f"section %{name} needs the app's name: %{name} NAME"))


def _check_bootstrap(stage: Stage, path: str, first_line: int, diags: list[Diagnostic]) -> None:
    if "bootstrap" not in stage.header:
        diags.append(Diagnostic(path, first_line, 1, "definition file has no 'Bootstrap:' header"))
        return
    agent, line = stage.header["bootstrap"]
    kind = agent.lower()
    if kind in BOOTSTRAP_AGENTS and agent != kind:
        diags.append(Diagnostic(path, line, 1, f"Bootstrap: {agent}: Apptainer reads agent names as written "
                                               f"(\"invalid build source {agent}\"); write {kind}"))
    elif kind in NOT_IN_APPTAINER_14:
        diags.append(Diagnostic(path, line, 1, NOT_IN_APPTAINER_14[kind]))
    elif kind not in BOOTSTRAP_AGENTS:
        allowed = ", ".join(sorted(BOOTSTRAP_AGENTS))
        diags.append(Diagnostic(path, line, 1, f"unknown Bootstrap {agent!r} (allowed: {allowed})"))
    elif kind in _NEEDS_FROM and not stage.header.get("from", ("", 0))[0]:
        diags.append(Diagnostic(path, line, 1, f"Bootstrap: {agent} needs a 'From:' header"))
    elif kind == "debootstrap" and not stage.header.get("osversion", ("", 0))[0]:
        diags.append(Diagnostic(path, line, 1, "Bootstrap: debootstrap needs an 'OSVersion:' header"))
    elif kind == "busybox" and not stage.header.get("mirrorurl", ("", 0))[0]:
        diags.append(Diagnostic(path, line, 1, "Bootstrap: busybox needs a 'MirrorURL:' header"))


def _check_stage_names(stages: list[Stage], path: str, diags: list[Diagnostic]) -> None:
    """`%files from STAGE` must name an earlier stage (Apptainer: "stage … was not found")."""
    seen: set[str] = set()
    for stage in stages:
        for name, args, line, _body in stage.sections:
            words = args.split()
            if name == "files" and words:
                if words[0].lower() != "from" or len(words) != 2:
                    diags.append(Diagnostic(path, line, 1, f"%files {args}: expected '%files from STAGE'"))
                elif words[1] not in seen:
                    known = ", ".join(sorted(seen)) or "none"
                    diags.append(Diagnostic(path, line, 1, f"%files from {words[1]}: no earlier stage has "
                                                           f"'Stage: {words[1]}' (earlier stages: {known})"))
        if stage.name:
            seen.add(stage.name)
