"""Checks of the `images:` section: bases (`from:`, `deffile:`, `dockerfile:`), build
keys, input files, and rendering each image the way planning will."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from hpcml.errors import SpecError
from hpcml.model import WORD_RE, WORD_RULE, FileCopy, Image
from hpcml.render import buildargs
from hpcml.spec import inputs
from hpcml.spec.rules import (
    APT_RE,
    BUILD_KEYS,
    CATALOG_RE,
    FROM_FORMS,
    IMAGE_KEYS,
    LABEL_KEY_RE,
    PIP_RE,
    REF_EXPECTED,
    REF_RE,
    SHELLS,
    SUITE_RE,
    URL_RE,
)
from hpcml.spec.secrets import SecretChecks
from hpcml.spec.shapes import describe, suggest
from hpcml.spec.yamlpos import YNode


class ImageChecks(SecretChecks):
    """The `images:` part of the checker."""

    #: Image names allowed host sections (settings.allow_setup); None: read when needed.
    allow_setup: frozenset[str] | None = None

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
            fields["requirements"] = self.word(m["requirements"], self.relative_file(m["requirements"], "requirements file", source=True),
                                               "requirements file")
        if "files" in m:
            fields["files"] = self.files(m["files"], what)
        if "env" in m:
            fields["env"] = tuple(self.env(m["env"], f"env of {what}").items())
            for key, value_node in (m["env"].value.items() if isinstance(m["env"].value, dict) else ()):
                value = value_node.value
                if isinstance(value, str) and any(ln.lstrip().startswith("%") for ln in value.split("\n")[1:]):
                    # Quoting does not help: Apptainer splits the file into sections before a shell reads it.
                    self.err(value_node, f"env {key} of {what}: a line of the value starts with '%', which a "
                                         "definition file reads as a section")
        for key in ("post", "test", "runscript"):
            if key in m:
                fields[key] = self.script(m[key], f"{key} of {what}")
        if "labels" in m:
            fields["labels"] = self.labels(m["labels"], what)
        if "shell" in m:
            fields["shell"] = self.choice(m["shell"], "shell", SHELLS)
        if "mirror" in m:
            fields["mirror"] = self.mirror(m["mirror"], kind)
        if "build_args" in m:
            fields["build_args"] = self.build_args(m["build_args"], what, kind)
        not_secret = self.image_secrets(name, m)
        if len(self.diags) > n_before or kind is None or ref is None:
            return None
        image = Image(name=name, base_kind=kind, base_ref=ref, pos=self.pos(at), not_secret=not_secret, **fields)
        image = self.renderable(image, m.get(kind) if kind in ("deffile", "dockerfile") else None, m.get("build_args"))
        return image if len(self.diags) == n_before else None

    def renderable(self, image: Image, source_node: YNode | None, args_node: YNode | None = None) -> Image:
        """Render the image now, through the same reading planning does (inputs.image_source),
        so `validate` reports what planning would: text that cannot be written into a
        definition, and for a `deffile:`/`dockerfile:` its parse errors, its build
        arguments and the `%files` sources it names. Returns the image, marked
        `host_setup` when it has `%setup`/`%pre` and the lab allows them for its name."""
        at = self.pos(source_node) if source_node is not None else image.pos
        if image.base_kind == "deffile" and image.name in self.allowed_setup():
            image = dataclasses.replace(image, host_setup=True)
        try:
            source = inputs.image_source(image, self.root, self.file, at)
        except SpecError as err:
            self.diags.extend(err.diagnostics)
            return image
        if image.host_setup and not source.host_sections:
            image = dataclasses.replace(image, host_setup=False)
        if args_node is not None and isinstance(args_node.value, dict):
            for name in args_node.value:
                if name not in source.consumed:
                    used = ", ".join(sorted(source.consumed)) or "none"
                    self.err(args_node.key_pos[name], f"build argument {name!r} is not used by {image.base_ref} "
                                                      f"(Apptainer refuses unused build arguments; it uses: {used})")
        if source_node is None:
            return image
        shown = os.path.join(os.path.dirname(self.file), image.base_ref)
        before = len(self.waived)
        self.source_secrets(shown, image.base_ref)
        for rel in source.inputs:
            proxy = YNode(rel, source_node.line, source_node.col, None)
            if self.relative_file(proxy, f"{image.base_ref}: input file") is not None:
                self.file_secrets(proxy, rel, f"{image.base_ref}")
        if len(self.waived) > before:
            image = dataclasses.replace(image, not_secret=image.not_secret + tuple(self.waived[before:]))
        return image

    def script(self, node: YNode, what: str) -> str | None:
        """A `post`/`test`/`runscript` text: no line may start with '%' (Apptainer would read
        it as a new section, e.g. a %setup that runs on the build host), nor hold a CR or NUL.
        The renderer refuses the same (deffile._user_text); here it is found at its line."""
        text = self.string(node, what)
        if text is None:
            return None
        offset, ok = 0, True
        for n, line in enumerate(text.split("\n"), 1):
            bad = ("starts with '%', which a definition file reads as a section" if line.lstrip().startswith("%")
                   else "contains a carriage return" if "\r" in line else None)
            if bad:
                self.err(self.scalar_pos(node, offset + len(line) - len(line.lstrip())), f"{what}: line {n} {bad}")
                ok = False
            offset += len(line) + 1
        return text if ok else None

    def allowed_setup(self) -> frozenset[str]:
        """Image names whose `%setup`/`%pre` the lab allows (setting allow_setup). Read from
        the configuration only when a hand-written file asks, unless the caller gave them."""
        if self.allow_setup is None:
            # A function-local import for start-up speed: only deffile: images need settings.
            from hpcml import config

            self.allow_setup = frozenset(config.load().allow_setup)
        return self.allow_setup

    def build_args(self, node: YNode, what: str, kind: str | None) -> tuple[tuple[str, str], ...]:
        """`build_args: {NAME: value}` of a `deffile:` image, sorted by name."""
        if kind != "deffile":
            self.err(node, f"build_args of {what} apply only to a deffile: image (they fill its {{{{ NAME }}}})")
            return ()
        if not isinstance(node.value, dict):
            self.err(node, f"build_args of {what} must be a mapping of NAME → value, found {describe(node.value)}")
            return ()
        out: dict[str, str] = {}
        for name, value_node in node.value.items():
            value = self.text_value(value_node, f"build argument {name}")
            if value is None:
                continue
            problem = buildargs.value_problem(str(name), value)
            if problem:
                self.err(node.key_pos[name] if not buildargs.NAME_RE.fullmatch(str(name)) else value_node, problem)
                continue
            out[str(name)] = value
        return tuple(sorted(out.items()))

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
            if not WORD_RE.fullmatch(path) or not path.endswith(".sif"):
                self.err(node, f"localimage path {path!r} must end with .sif and have {WORD_RULE} "
                               "(it is written into the definition's From: line)")
                return None
            return path
        proxy = YNode(path, node.line, node.col, None)
        return self.word(proxy, self.relative_file(proxy, "localimage path", suffix=".sif", source=True), "localimage path")

    def word(self, node: YNode, value: str | None, what: str) -> str | None:
        """`value` (checked already, None if it was refused) if it can be one word of a
        definition-file line: Apptainer cuts a line at '#' and splits it on blanks."""
        if value is not None and not WORD_RE.fullmatch(value):
            self.err(node, f"{what} {value!r} cannot be written in a definition file: use {WORD_RULE}")
            return None
        return value

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
            src_node = YNode(src, line, col)
            ok_src = self.word(src_node, self.relative_file(src_node, "files source", source=True), "files source")
            dst = self.string(dst_node, "files destination")
            if dst is not None and (not dst.startswith("/") or not WORD_RE.fullmatch(dst)):
                self.err(dst_node, f"files destination {dst!r} must be an absolute path with {WORD_RULE}")
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
