"""workflow.yaml → a validated, frozen `Workflow`.

Strict by design: unknown keys are errors that list the allowed ones, every problem is
collected with its file:line:col, and nothing is returned unless the whole file is valid.
The reference for users is docs/spec.md; the JSON Schema in schema.py mirrors the key lists
defined here.

Example::

    wf = load("workflows/quickstart.yaml")
    wf.steps["train"].resources.time_s
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from hpcml.spec import placeholders
from hpcml.spec import units
from hpcml.spec import yamlpos
from hpcml.errors import Diagnostic, SpecError
from hpcml.model import Checkpoint, FileCopy, Image, Matrix, Pos, Resources, Scalar, Step, Workflow
from hpcml.spec.yamlpos import YNode

SUPPORTED_VERSIONS = (1,)

TOP_KEYS = ("hpcml", "name", "defaults", "images", "steps")
DEFAULTS_KEYS = ("image", "resources", "env", "shell", "retries")
BUILD_KEYS = ("apt", "pip", "requirements", "files", "env", "post", "test", "runscript", "labels", "mirror")
IMAGE_KEYS = ("from", *BUILD_KEYS, "shell", "deffile", "dockerfile")
STEP_KEYS = (
    "image", "run", "needs", "matrix", "max_parallel", "resources", "retries", "checkpoint", "secrets", "env", "shell",
)
RESOURCE_KEYS = (
    "partition", "account", "qos", "time", "nodes", "cpus", "mem", "gpus", "gpu_type", "gpu_vendor", "cpus_per_gpu",
    "constraint",
)
CHECKPOINT_KEYS = ("signal", "grace")
MATRIX_LIST_KEYS = ("include", "exclude")

SHELLS = ("bash", "sh")
GPU_VENDORS = ("nvidia", "amd")
SIGNALS = ("USR1", "USR2", "TERM", "INT", "HUP", "QUIT", "ALRM")
FROM_FORMS = (
    "scratch, debootstrap:SUITE, docker://REF, oras://REF, localimage:PATH.sif, catalog:NAME[:TAG], "
    "or the name of another image in this file"
)
#: Placeholder names every step has besides its matrix keys and in.STEP.
BUILTIN_PLACEHOLDERS = ("out", "step", "task")
#: Matrix keys that would shadow a built-in placeholder.
RESERVED_AXES = ("out", "step", "task", "in")
RESERVED_IMAGE_NAMES = ("scratch",)

MAX_NAME = 63
MAX_RETRIES = 100
MAX_GPUS = 64
MAX_MATRIX_POINTS = 100_000
MAX_GRACE_S = 65535  # sbatch --signal accepts at most 65535 seconds

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
AXIS_RE = ENV_RE
SLURM_NAME_RE = re.compile(r"[A-Za-z0-9_.,:+-]+")  # partition, account, qos
CONSTRAINT_RE = re.compile(r"[A-Za-z0-9_.,:+&|\[\]*-]+")
GPU_TYPE_RE = re.compile(r"[A-Za-z0-9_.-]+")  # it lands inside --gres=gpu:TYPE:N, so no colon
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9._-]+")
APT_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?")
# PEP 508-ish requirement without markers: no quotes, $, `, \, ;, |, &, parentheses or newlines.
PIP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-\[\], <>=!~*@:/+]*")
SUITE_RE = re.compile(r"[a-z][a-z0-9-]*")
REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
REF_EXPECTED = "a reference such as nvcr.io/nvidia/pytorch:24.01-py3 (letters, digits and . _ / : @ + -)"
CATALOG_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*(?::[A-Za-z0-9_.-]+)?")
URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]+")
NO_SPACE_PATH_RE = re.compile(r"[^\s\x00]+")

_At = YNode | tuple[int, int]


def load(path: str | os.PathLike[str]) -> Workflow:
    """Read and validate a workflow file; raise SpecError carrying every problem found.

    File references in the spec are relative to the file's directory.
    """
    p = Path(path)
    shown = os.fspath(path)
    try:
        size = p.stat().st_size
        if size > yamlpos.MAX_BYTES:
            raise SpecError(Diagnostic(shown, 1, 1, f"file is larger than {yamlpos.MAX_BYTES // 1024} KiB"))
        data = p.read_bytes()
    except OSError as err:
        raise SpecError(Diagnostic(shown, 1, 1, f"cannot read the workflow file: {err.strerror or err}")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecError(Diagnostic(shown, line, col, "the file is not valid UTF-8")) from None
    return loads(text, shown, root=str(p.resolve().parent))


def loads(text: str, path: str = "workflow.yaml", root: str | None = None) -> Workflow:
    """Validate workflow text; `path` is used in messages, `root` resolves file references
    (default: the directory of `path`)."""
    root = os.path.abspath(root if root is not None else os.path.dirname(os.path.abspath(path)))
    tree, diagnostics = yamlpos.parse(text, path)
    checker = _Checker(path, root, text)
    checker.diags.extend(diagnostics)
    workflow = checker.workflow(tree) if tree is not None else None
    if checker.diags or workflow is None:
        raise SpecError(checker.diags)
    return workflow


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


class _Checker:
    """Walks the positioned tree, collecting diagnostics and building model objects."""

    def __init__(self, file: str, root: str, text: str) -> None:
        self.file = file
        self.root = root
        self.real_root = os.path.realpath(root)
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
                self.err(node.key_pos[key], f"invalid environment variable name {key!r} in {what}: use [A-Za-z_][A-Za-z0-9_]*")
                continue
            text = self.text_value(value, f"value of {key} in {what}")
            if text is not None:
                out[key] = text
        return out

    # ---- files --------------------------------------------------------------------

    def relative_file(self, node: YNode, what: str, *, suffix: str | None = None) -> str | None:
        """A path relative to the workflow directory that exists and stays inside it."""
        rel = self.string(node, what)
        if rel is None:
            return None
        if not NO_SPACE_PATH_RE.fullmatch(rel):
            self.err(node, f"{what} {rel!r} must not contain whitespace")
            return None
        if os.path.isabs(rel):
            self.err(node, f"{what} {rel!r} must be relative to the workflow directory")
            return None
        if ".." in PurePosixPath(rel).parts:
            self.err(node, f"{what} {rel!r} must not contain '..': files must stay inside the workflow directory")
            return None
        if suffix and not rel.endswith(suffix):
            self.err(node, f"{what} {rel!r} must end with {suffix}")
            return None
        full = os.path.join(self.root, rel)
        if not os.path.lexists(full):
            self.err(node, f"{what} {rel!r} does not exist (looked in {self.root})")
            return None
        escaped = self._escape(full)
        if escaped:
            self.err(node, f"{what} {rel!r} leaves the workflow directory through the symlink {escaped!r}")
            return None
        link = self._symlink(full)
        if link:
            # Image keys hash file bytes, and a link's target can change without the key noticing.
            self.err(node, f"{what} {rel!r}: {link}: is a symbolic link, which hpcml does not follow; "
                           "copy the file or name its target instead")
            return None
        return rel

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.real_root or real.startswith(self.real_root.rstrip(os.sep) + os.sep)

    def _escape(self, full: str) -> str | None:
        """The first symlink under `full` (itself included) that points outside the root."""
        if not self._inside(full):
            return os.path.relpath(full, self.root)
        if os.path.isdir(full):
            for dirpath, dirnames, filenames in os.walk(full):
                for name in dirnames + filenames:
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p) and not self._inside(p):
                        return os.path.relpath(p, self.root)
        return None

    def _symlink(self, full: str) -> str | None:
        """The first symbolic link at or under `full`, relative to the root (sorted walk)."""
        if os.path.islink(full):
            return os.path.relpath(full, self.root)
        if os.path.isdir(full):
            for dirpath, dirnames, filenames in os.walk(full):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p):
                        return os.path.relpath(p, self.root)
        return None

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

    # ---- the document ---------------------------------------------------------------

    def workflow(self, tree: YNode) -> Workflow | None:
        top = self.mapping(tree, "the workflow", TOP_KEYS, required=("hpcml", "name", "steps"))
        if top is None:
            return None
        version = self.version(top.get("hpcml"))
        name = None
        if "name" in top:
            name = self.string(top["name"], "name")
            if name is not None and not self.name(top["name"], name, "workflow"):
                name = None
        image_names = self.image_names(tree, top.get("images"))
        step_names = self.step_names(top.get("steps"))
        defaults = self.defaults(top.get("defaults"), image_names)
        images = self.images(top.get("images"), image_names)
        steps = self.steps(top.get("steps"), step_names, image_names, defaults)
        if self.diags or version is None or name is None:
            return None
        return Workflow(
            path=self.file, root=self.root, name=name, images=images, steps=steps, version=version
        )

    def version(self, node: YNode | None) -> int | None:
        if node is None:
            return None
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        if isinstance(node.value, bool) or node.value not in SUPPORTED_VERSIONS:
            self.err(node, f"unsupported spec version hpcml: {node.value!r}; supported: {supported}")
            return None
        return int(node.value)

    def names_of(self, node: YNode | None, what: str) -> dict[str, YNode]:
        """Keys of the images/steps mapping that are valid names (values not yet checked)."""
        if node is None or not isinstance(node.value, dict):
            if node is not None:
                self.err(node, f"{what} must be a mapping of name → definition, found {describe(node.value)}")
            return {}
        return {k: v for k, v in node.value.items() if self.name(node.key_pos[k], k, what[:-1])}

    def image_names(self, tree: YNode, node: YNode | None) -> dict[str, YNode]:
        names = self.names_of(node, "images")
        for reserved in RESERVED_IMAGE_NAMES:
            if reserved in names and node is not None:
                self.err(node.key_pos[reserved], f"{reserved!r} is a reserved image name (it means an empty base)")
                del names[reserved]
        return names

    def step_names(self, node: YNode | None) -> dict[str, YNode]:
        names = self.names_of(node, "steps")
        if node is not None and isinstance(node.value, dict) and not node.value:
            self.err(node, "steps must define at least one step")
        return names

    # ---- defaults -------------------------------------------------------------------

    def defaults(self, node: YNode | None, image_names: dict[str, YNode]) -> dict[str, Any]:
        m = self.mapping(node, "defaults", DEFAULTS_KEYS)
        if not m:
            return {}
        out: dict[str, Any] = {}
        if "image" in m:
            image = self.image_ref(m["image"], "defaults.image", image_names)
            out["image"] = image
        if "resources" in m:
            out["resources"] = self.resources(m["resources"], "defaults.resources")
            self.exclusive_cpus(out["resources"])
        if "env" in m:
            out["env"] = self.env(m["env"], "defaults.env")
        if "shell" in m:
            out["shell"] = self.choice(m["shell"], "shell", SHELLS)
        if "retries" in m:
            out["retries"] = self.integer(m["retries"], "retries", 0, MAX_RETRIES)
        return out

    def image_ref(self, node: YNode, what: str, image_names: dict[str, YNode]) -> str | None:
        value = self.string(node, what)
        if value is None:
            return None
        if value not in image_names:
            known = ", ".join(image_names) or "none are defined under 'images'"
            self.err(node, f"unknown image {value!r} in {what}{suggest(value, image_names)}; images: {known}")
            return None
        return value

    # ---- images ---------------------------------------------------------------------

    def images(self, node: YNode | None, names: dict[str, YNode]) -> dict[str, Image]:
        out: dict[str, Image] = {}
        for name, body in names.items():
            assert node is not None
            image = self.image(name, body, names, node.key_pos[name])
            if image is not None:
                out[name] = image
        self.image_cycles(out, names)
        if not self.diags:
            out = _inherit_shells(out, {n for n, body in names.items() if isinstance(body.value, dict) and "shell" in body.value})
        return out

    def image(self, name: str, node: YNode, names: dict[str, YNode], at: tuple[int, int]) -> Image | None:
        what = f"image {name!r}"
        m = self.mapping(node, what, IMAGE_KEYS)
        if m is None:
            return None
        n_before = len(self.diags)
        fields: dict[str, Any] = {}
        kind, ref = self.image_base(name, node, m, names)
        if "apt" in m:
            fields["apt"] = self.string_list(m["apt"], f"apt of {what}", self.apt_package)
        if "pip" in m:
            fields["pip"] = self.string_list(m["pip"], f"pip of {what}", self.pip_requirement)
        if "requirements" in m:
            fields["requirements"] = self.relative_file(m["requirements"], "requirements file")
        if "files" in m:
            fields["files"] = self.files(m["files"], what)
        if "env" in m:
            fields["env"] = tuple(self.env(m["env"], f"env of {what}").items())
        for key in ("post", "test", "runscript"):
            if key in m:
                fields[key] = self.string(m[key], f"{key} of {what}")
        if "labels" in m:
            fields["labels"] = self.labels(m["labels"], what)
        if "shell" in m:
            fields["shell"] = self.choice(m["shell"], "shell", SHELLS)
        if "mirror" in m:
            fields["mirror"] = self.mirror(m["mirror"], kind)
        if len(self.diags) > n_before or kind is None or ref is None:
            return None
        image = Image(name=name, base_kind=kind, base_ref=ref, pos=self.pos(at), **fields)
        self.renderable(image, m.get(kind) if kind in ("deffile", "dockerfile") else None)
        return image if len(self.diags) == n_before else None

    def renderable(self, image: Image, source_node: YNode | None) -> None:
        """Render the image now, so `validate` reports what planning would: text that cannot
        be written into a definition, and for a `deffile:`/`dockerfile:` its parse errors
        and the `%files` sources it names."""
        from hpcml import plan  # plan.py imports the renderer; spec.py stays light without it
        from hpcml.render import deffile

        source = None
        shown = image.base_ref
        if source_node is not None:
            full = os.path.join(self.root, image.base_ref)
            # Messages inside the file name it as the workflow's path is named (relative to the cwd).
            shown = os.path.join(os.path.dirname(self.file), image.base_ref)
            try:
                with open(full, encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError) as err:
                self.err(source_node, f"cannot read {image.base_ref}: {err}")
                return
        try:
            definition = deffile.render(image, source=source, source_path=shown)
            if source_node is None:
                return
            for rel in plan.input_paths(image, definition):
                proxy = YNode(rel, source_node.line, source_node.col, None)
                self.relative_file(proxy, f"{image.base_ref}: input file")
        except SpecError as err:
            self.diags.extend(err.diagnostics)

    def image_base(
        self, name: str, node: YNode, m: dict[str, YNode], names: dict[str, YNode]
    ) -> tuple[Any, str | None]:
        """The (base_kind, base_ref) of an image: its `from:`, or a deffile:/dockerfile:."""
        given = [k for k in ("from", "deffile", "dockerfile") if k in m]
        if not given:
            self.err(node, f"image {name!r} needs one of 'from', 'deffile' or 'dockerfile'")
            return None, None
        if len(given) > 1:
            self.err(node.key_pos[given[1]], f"image {name!r}: {given[0]!r} and {given[1]!r} cannot be combined")
            return None, None
        if given[0] in ("deffile", "dockerfile"):
            for key in m:
                if key in BUILD_KEYS:
                    self.err(
                        node.key_pos[key],
                        f"{key!r} cannot be combined with {given[0]}: in image {name!r}; "
                        f"a hand-written file carries its own build steps",
                    )
            return given[0], self.relative_file(m[given[0]], given[0])
        return self.from_form(m["from"], name, names)

    def from_form(self, node: YNode, name: str, names: dict[str, YNode]) -> tuple[Any, str | None]:
        value = self.string(node, "from")
        if value is None:
            return None, None
        if value == "scratch":
            return "scratch", ""
        for prefix, kind, pattern, expected in (
            ("docker://", "docker", REF_RE, REF_EXPECTED),
            ("oras://", "oras", REF_RE, REF_EXPECTED),
            ("debootstrap:", "debootstrap", SUITE_RE, "a Debian suite such as bookworm (lowercase letters, digits, '-')"),
            ("catalog:", "catalog", CATALOG_RE,
             "NAME or NAME:TAG, NAME of lowercase letters, digits, '_', '.', '-' (e.g. catalog:torch:2.3)"),
        ):
            if value.startswith(prefix):
                ref = value[len(prefix):]
                if not pattern.fullmatch(ref):
                    self.err(node, f"invalid {kind} reference {ref!r} in from: {value!r}; expected {expected}")
                    return None, None
                return kind, ref
        if value.startswith("localimage:"):
            return "localimage", self.localimage(node, value[len("localimage:"):])
        if ":" in value or "/" in value:
            self.err(node, f"unknown from: form {value!r}; allowed: {FROM_FORMS}")
            return None, None
        if value == name:
            self.err(node, f"image {name!r} cannot be built from itself")
            return None, None
        if value not in names:
            hint = suggest(value, [*names, "scratch"])
            self.err(node, f"unknown image {value!r} in from:{hint}; allowed: {FROM_FORMS}")
            return None, None
        return "image", value

    def localimage(self, node: YNode, path: str) -> str | None:
        if os.path.isabs(path):
            # Site images (e.g. /shared/images/base.sif) live outside the workflow and may exist
            # only on the cluster, so they are checked when the image is built, not here.
            if not NO_SPACE_PATH_RE.fullmatch(path) or not path.endswith(".sif"):
                self.err(node, f"localimage path {path!r} must end with .sif and contain no whitespace")
                return None
            return path
        proxy = YNode(path, node.line, node.col, None)
        return self.relative_file(proxy, "localimage path", suffix=".sif")

    def apt_package(self, node: YNode) -> str | None:
        return self.matching(
            node, "Debian package name", APT_RE,
            "use NAME, NAME:ARCH or NAME=VERSION with lowercase letters, digits, '+', '-' and '.'",
        )

    def pip_requirement(self, node: YNode) -> str | None:
        return self.matching(
            node, "pip requirement", PIP_RE,
            "use a plain requirement such as 'numpy>=1.26' or 'torch[cuda]==2.3.*' (no quotes, ';', '$', '|', "
            "'&', backslashes or newlines; put environment markers in a requirements file)",
        )

    def files(self, node: YNode, what: str) -> tuple[FileCopy, ...]:
        if not isinstance(node.value, dict):
            self.err(node, f"files of {what} must be a mapping of source → destination, found {describe(node.value)}")
            return ()
        out: list[FileCopy] = []
        for src, dst_node in node.value.items():
            line, col = node.key_pos[src]
            ok_src = self.relative_file(YNode(src, line, col), "files source")
            dst = self.string(dst_node, "files destination")
            if dst is not None and (not dst.startswith("/") or not NO_SPACE_PATH_RE.fullmatch(dst)):
                self.err(dst_node, f"files destination {dst!r} must be an absolute path without whitespace")
                dst = None
            if ok_src is not None and dst is not None:
                out.append(FileCopy(ok_src, dst))
        return tuple(out)

    def labels(self, node: YNode, what: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(node.value, dict):
            self.err(node, f"labels of {what} must be a mapping, found {describe(node.value)}")
            return ()
        out: list[tuple[str, str]] = []
        for key, value_node in node.value.items():
            if not LABEL_KEY_RE.fullmatch(key):
                self.err(node.key_pos[key], f"invalid label name {key!r}: use letters, digits, '.', '_' and '-'")
                continue
            value = self.text_value(value_node, f"label {key}")
            if value is not None and ("\n" in value or "\r" in value):
                self.err(value_node, f"label {key} must be a single line")
                continue
            if value is not None:
                out.append((key, value))
        return tuple(out)

    def mirror(self, node: YNode, kind: str | None) -> str | None:
        url = self.matching(node, "mirror URL", URL_RE, "use an http:// or https:// URL")
        if url is not None and kind not in (None, "debootstrap"):
            self.err(node, f"mirror applies only to from: debootstrap:SUITE, not to a {kind} base")
            return None
        return url

    def image_cycles(self, images: dict[str, Image], names: dict[str, YNode]) -> None:
        reported: set[str] = set()
        for start in images:
            chain = [start]
            while (parent := images[chain[-1]].parent) is not None and parent in images:
                if parent in chain:
                    cycle = chain[chain.index(parent):]
                    if not reported.intersection(cycle):
                        reported.update(cycle)
                        first = images[cycle[0]]
                        assert first.pos is not None
                        self.err((first.pos.line, first.pos.col), "image cycle: " + " -> ".join([*cycle, cycle[0]]))
                    break
                chain.append(parent)

    # ---- steps ----------------------------------------------------------------------

    def steps(
        self, node: YNode | None, names: dict[str, YNode], image_names: dict[str, YNode], defaults: dict[str, Any]
    ) -> dict[str, Step]:
        out: dict[str, Step] = {}
        for name, body in names.items():
            assert node is not None
            step = self.step(name, body, node.key_pos[name], names, image_names, defaults)
            if step is not None:
                out[name] = step
        self.step_cycles(out)
        return out

    def step(
        self,
        name: str,
        node: YNode,
        at: tuple[int, int],
        names: dict[str, YNode],
        image_names: dict[str, YNode],
        defaults: dict[str, Any],
    ) -> Step | None:
        what = f"step {name!r}"
        m = self.mapping(node, what, STEP_KEYS, required=("run",))
        if m is None:
            return None
        n_before = len(self.diags)
        image = self.step_image(name, node, m, image_names, defaults)
        needs = self.needs(m["needs"], name, names) if "needs" in m else ()
        matrix = self.matrix(m["matrix"], what) if "matrix" in m else None
        run = self.string(m["run"], f"run of {what}") if "run" in m else None
        if run is not None:
            self.check_placeholders(m["run"], run, what, matrix, needs)
        max_parallel = self.integer(m["max_parallel"], "max_parallel", 1) if "max_parallel" in m else None
        if max_parallel is not None and matrix is None:
            self.err(m["max_parallel"], f"max_parallel needs a matrix in {what}")
        resources = self.step_resources(m.get("resources"), what, defaults)
        retries = self.integer(m["retries"], "retries", 0, MAX_RETRIES) if "retries" in m else defaults.get("retries")
        checkpoint = self.checkpoint(m["checkpoint"], resources) if "checkpoint" in m else None
        env = dict(defaults.get("env") or {})
        env.update(self.env(m["env"], f"env of {what}") if "env" in m else {})
        secrets = self.string_list(m["secrets"], f"secrets of {what}", self.secret) if "secrets" in m else ()
        for secret in secrets:
            if secret in env:
                self.err(m["secrets"], f"{secret} is both a secret and an env value in {what}; keep one")
        shell = self.choice(m["shell"], "shell", SHELLS) if "shell" in m else defaults.get("shell")
        if len(self.diags) > n_before or image is None or run is None or resources is None:
            return None
        return Step(
            name=name, image=image, run=run, needs=needs, matrix=matrix, max_parallel=max_parallel,
            resources=resources, retries=retries or 0, checkpoint=checkpoint, secrets=secrets,
            env=tuple(env.items()), shell=shell, pos=self.pos(at),
        )

    def step_image(
        self, name: str, node: YNode, m: dict[str, YNode], image_names: dict[str, YNode], defaults: dict[str, Any]
    ) -> str | None:
        if "image" in m:
            return self.image_ref(m["image"], f"image of step {name!r}", image_names)
        if "image" not in defaults:
            self.err(node, f"step {name!r} has no image: set 'image' in the step or in defaults")
        return defaults.get("image")  # a bad default was reported once, at defaults.image

    def needs(self, node: YNode, name: str, names: dict[str, YNode]) -> tuple[str, ...]:
        def check(item: YNode) -> str | None:
            value = self.string(item, "needs")
            if value is None:
                return None
            if value == name:
                self.err(item, f"step {name!r} cannot need itself")
                return None
            if value not in names:
                self.err(item, f"step {name!r} needs unknown step {value!r}{suggest(value, names)}; steps: {', '.join(names)}")
                return None
            return value

        return self.string_list(node, f"needs of step {name!r}", check)

    def secret(self, node: YNode) -> str | None:
        return self.matching(node, "secret name", ENV_RE, "use an environment variable name [A-Za-z_][A-Za-z0-9_]*")

    def step_cycles(self, steps: dict[str, Step]) -> None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        reported: set[str] = set()

        def visit(name: str, path: list[str]) -> None:
            state[name] = 1
            path.append(name)
            for dep in steps[name].needs:
                if dep not in steps:
                    continue
                if state.get(dep) == 1:
                    cycle = path[path.index(dep):]
                    if not reported.intersection(cycle):
                        reported.update(cycle)
                        first = steps[cycle[0]].pos
                        assert first is not None
                        self.err((first.line, first.col), "step cycle: " + " -> ".join([*cycle, cycle[0]]))
                elif state.get(dep) is None:
                    visit(dep, path)
            path.pop()
            state[name] = 2

        for name in steps:
            if name not in state:
                visit(name, [])

    # ---- matrix and placeholders ------------------------------------------------------

    def matrix(self, node: YNode, what: str) -> Matrix | None:
        if not isinstance(node.value, dict):
            self.err(node, f"matrix of {what} must be a mapping of axis → list of values, found {describe(node.value)}")
            return None
        axes: list[tuple[str, tuple[Scalar, ...]]] = []
        for key, values in node.value.items():
            if key in MATRIX_LIST_KEYS:
                continue
            if self.axis_name(node.key_pos[key], key, what) and (vals := self.axis_values(values, key)):
                axes.append((key, vals))
        axis_names = [a for a, _ in axes]
        include = self.matrix_entries(node.value.get("include"), "include", axis_names, what)
        exclude = self.matrix_entries(node.value.get("exclude"), "exclude", axis_names, what)
        if not axes and not include:
            self.err(node, f"matrix of {what} has no axes and no include entries")
            return None
        points = 1
        for _, vals in axes:
            points *= len(vals)
        if points > MAX_MATRIX_POINTS:
            self.err(node, f"matrix of {what} expands to {points} points; at most {MAX_MATRIX_POINTS} are allowed")
            return None
        matrix = Matrix(axes=tuple(axes), include=include, exclude=exclude)
        # Expand now so `validate` reports what the planner would: exclude removing every
        # point, or include entries repeating a point.
        problem = _expansion_problem(matrix)
        if problem:
            self.err(node, f"matrix of {what} {problem}")
        return matrix

    def axis_name(self, at: tuple[int, int], key: str, what: str) -> bool:
        if not AXIS_RE.fullmatch(key):
            self.err(at, f"invalid matrix key {key!r} in {what}: use an identifier [A-Za-z_][A-Za-z0-9_]*")
            return False
        if key in RESERVED_AXES:
            self.err(at, f"matrix key {key!r} in {what} is reserved for a built-in placeholder")
            return False
        return True

    def axis_values(self, node: YNode, key: str) -> tuple[Scalar, ...]:
        if not isinstance(node.value, list) or not node.value:
            self.err(node, f"matrix axis {key!r} must be a non-empty list of values, found {describe(node.value)}")
            return ()
        out: list[Scalar] = []
        seen: set[tuple[type, Scalar]] = set()
        for item in node.value:
            value = self.matrix_value(item, key)
            if value is None:
                continue
            # Type-aware: 1, 1.0 and true are different values, but [1.0, 1, 1] repeats 1.
            if (type(value), value) in seen:
                self.err(item, f"value {value!r} appears twice in matrix axis {key!r}")
                continue
            seen.add((type(value), value))
            out.append(value)
        return tuple(out) if len(out) == len(node.value) else ()

    def matrix_value(self, node: YNode, key: str) -> Scalar | None:
        value = node.value
        if value is None or isinstance(value, (list, dict)) or not isinstance(value, (str, int, float, bool)):
            self.err(node, f"matrix values for {key!r} must be strings, numbers or booleans, found {describe(value)}")
            return None
        if isinstance(value, str) and any(c < " " or c == "\x7f" for c in value):
            # Control characters have no place in a sweep value, and task keys join the
            # point's values with one (\x1f): refusing them keeps every point's key distinct.
            self.err(node, f"matrix value for {key!r} must not contain control characters (newline, tab, NUL, …)")
            return None
        return value

    def matrix_entries(
        self, node: YNode | None, kind: str, axis_names: list[str], what: str
    ) -> tuple[tuple[tuple[str, Scalar], ...], ...]:
        if node is None:
            return ()
        if not isinstance(node.value, list):
            self.err(node, f"matrix {kind} of {what} must be a list of mappings, found {describe(node.value)}")
            return ()
        out = []
        for entry in node.value:
            if not isinstance(entry.value, dict) or not entry.value:
                self.err(entry, f"each matrix {kind} entry must be a non-empty mapping, found {describe(entry.value)}")
                continue
            items: list[tuple[str, Scalar]] = []
            for key, value_node in entry.value.items():
                at = entry.key_pos[key]
                if kind == "exclude" and key not in axis_names:
                    self.err(at, f"matrix exclude key {key!r} is not an axis{suggest(key, axis_names)}; axes: {', '.join(axis_names)}")
                    continue
                if not self.axis_name(at, key, what):
                    continue
                value = self.matrix_value(value_node, key)
                if value is not None:
                    items.append((key, value))
            out.append(tuple(items))
        return tuple(out)

    def check_placeholders(
        self, node: YNode, run: str, what: str, matrix: Matrix | None, needs: tuple[str, ...]
    ) -> None:
        known = list(BUILTIN_PLACEHOLDERS)
        if matrix is not None:
            known += [a for a, _ in matrix.axes]
            known += [k for entry in matrix.include for k, _ in entry if k not in known]
        known += [f"in.{n}" for n in needs]
        for ph in placeholders.find_placeholders(run):
            if ph.name in known:
                continue
            at = self.scalar_pos(node, ph.start)
            if ph.name.startswith("in."):
                upstream = ph.name[3:]
                msg = f"placeholder {{{ph.name}}} in run of {what} refers to {upstream!r}, which is not in needs"
                msg += suggest(ph.name, known) if needs else "; add it to needs"
            else:
                close = difflib.get_close_matches(ph.name, known, n=1, cutoff=0.6)
                hint = f" (did you mean {{{close[0]}}}?)" if close else ""
                msg = f"unknown placeholder {{{ph.name}}} in run of {what}{hint}"
            self.err(at, f"{msg}; known: {', '.join('{' + k + '}' for k in known)} (write {{{{ and }}}} for literal braces)")

    # ---- resources and checkpoints --------------------------------------------------

    def resources(self, node: YNode, what: str) -> dict[str, tuple[Any, YNode]]:
        """The resource keys written in one place, parsed: field name → (value, node)."""
        m = self.mapping(node, what, RESOURCE_KEYS)
        out: dict[str, tuple[Any, YNode]] = {}
        for key, value_node in (m or {}).items():
            value = self.resource(key, value_node)
            if value is not None:
                out[key] = (value, value_node)
        return out

    def resource(self, key: str, node: YNode) -> Any:
        if key in ("partition", "account", "qos"):
            return self.matching(node, key, SLURM_NAME_RE, "use letters, digits and _ . , : + -")
        if key == "constraint":
            return self.matching(node, key, CONSTRAINT_RE, "use feature names joined with & | , and [ ] * ")
        if key == "gpu_type":
            return self.matching(node, key, GPU_TYPE_RE, "use letters, digits, '_', '.' and '-' (e.g. a100)")
        if key == "gpu_vendor":
            return self.choice(node, key, GPU_VENDORS)
        if key == "nodes":
            return self.integer(node, key, 1)
        if key in ("cpus", "cpus_per_gpu"):
            return self.integer(node, key, 1)
        if key == "gpus":
            return self.integer(node, key, 0, MAX_GPUS)
        if key == "time":
            return self.parsed(node, units.parse_duration, "time", positive=True)
        assert key == "mem"
        return self.parsed(node, units.parse_size, "mem", positive=True)

    def parsed(self, node: YNode, parse: Callable[[Any], int], what: str, *, positive: bool) -> int | None:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.err(node, f"{what} must be a string or an integer, found {describe(value)}")
            return None
        try:
            result = parse(value)
        except ValueError as err:
            self.err(node, f"{what}: {err}")
            return None
        if positive and result <= 0:
            self.err(node, f"{what} must be greater than zero, found {value!r}")
            return None
        return result

    def step_resources(self, node: YNode | None, what: str, defaults: dict[str, Any]) -> Resources | None:
        inherited: dict[str, tuple[Any, YNode]] = dict(defaults.get("resources") or {})
        own = self.resources(node, f"resources of {what}") if node is not None else {}
        # cpus and cpus_per_gpu are exclusive in sbatch: the one a step writes replaces the inherited other.
        if "cpus_per_gpu" in own:
            inherited.pop("cpus", None)
        if "cpus" in own:
            inherited.pop("cpus_per_gpu", None)
        n_before = len(self.diags)
        self.exclusive_cpus(own)
        merged = {**inherited, **own}
        gpus = merged.get("gpus", (0, None))[0]
        for key in ("gpu_type", "cpus_per_gpu"):
            if key in merged and not gpus:
                if key in own:
                    self.err(own[key][1], f"{key} needs gpus of at least 1 in {what}")
                del merged[key]  # an inherited GPU setting does not apply to a CPU-only step
        if len(self.diags) > n_before:
            return None
        fields = {{"time": "time_s", "mem": "mem_mb"}.get(k, k): v for k, (v, _) in merged.items()}
        return Resources(**fields)

    def exclusive_cpus(self, level: dict[str, tuple[Any, YNode]]) -> None:
        if "cpus" in level and "cpus_per_gpu" in level:
            self.err(level["cpus_per_gpu"][1], "cpus and cpus_per_gpu cannot both be set (sbatch refuses the pair)")

    def checkpoint(self, node: YNode, resources: Resources | None) -> Checkpoint | None:
        if node.value is True:
            return Checkpoint()
        if node.value is False:
            return None
        m = self.mapping(node, "checkpoint", CHECKPOINT_KEYS)
        if m is None:
            return None
        signal, grace = Checkpoint.signal, Checkpoint.grace_s
        if "signal" in m:
            raw = m["signal"].value
            name = raw.upper().removeprefix("SIG") if isinstance(raw, str) else raw
            checked = self.choice(YNode(name, m["signal"].line, m["signal"].col), "checkpoint signal", SIGNALS)
            if checked is None:
                return None
            signal = checked
        if "grace" in m:
            g = m["grace"]
            # A bare number is seconds here (it is a lead time, as in sbatch --signal), unlike `time`.
            if isinstance(g.value, int) and not isinstance(g.value, bool):
                value = self.integer(g, "checkpoint grace", 1, MAX_GRACE_S)
            else:
                value = self.parsed(g, units.parse_duration, "checkpoint grace", positive=True)
                if value is not None and value > MAX_GRACE_S:
                    self.err(g, f"checkpoint grace must be at most {MAX_GRACE_S} seconds")
                    value = None
            if value is None:
                return None
            grace = value
            if resources is not None and resources.time_s is not None and grace >= resources.time_s:
                self.err(g, f"checkpoint grace ({grace} s) must be shorter than the time limit ({resources.time_s} s)")
                return None
        return Checkpoint(signal=signal, grace_s=grace)


def _expansion_problem(matrix: Matrix) -> str | None:
    """Why the planner could not expand `matrix`, or None (imported late: plan.py is the heavier module)."""
    from hpcml import plan

    try:
        plan.expand_matrix(matrix)
    except SpecError as err:
        # The planner says "matrix is empty …"; the caller names the step: "matrix of step 's' is empty …".
        return "; ".join(d.message.removeprefix("matrix ") for d in err.diagnostics)
    return None


def _inherit_shells(images: dict[str, Image], explicit: set[str]) -> dict[str, Image]:
    """An image built `from:` another image of the file takes its parent's shell unless it
    writes its own: a child of a busybox (`shell: sh`) image has no bash for its `%post`."""
    resolved: dict[str, Image] = {}

    def resolve(name: str) -> Image:
        if name not in resolved:
            image = images[name]
            if image.parent is not None and name not in explicit and image.parent in images:
                image = dataclasses.replace(image, shell=resolve(image.parent).shell)
            resolved[name] = image
        return resolved[name]

    return {name: resolve(name) for name in images}
