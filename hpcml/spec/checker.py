"""workflow.yaml → a validated, frozen `Workflow`.

Strict by design: unknown keys are errors that list the allowed ones, every problem is
collected with its file:line:col, and nothing is returned unless the whole file is valid.
The reference for users is docs/spec.md; the JSON Schema in schema.py is generated from
the key lists in rules.py.

This module reads the file (`load`, `loads`) and checks the document's top level; the
parts are checked by mixins: images.py, steps.py, matrix.py, over the shapes of shapes.py.

Example::

    wf = load("workflows/quickstart.yaml")
    wf.steps["train"].resources.time_s
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection

from hpcml.errors import Diagnostic, SpecError
from hpcml.model import Step, Workflow
from hpcml.spec import yamlpos
from hpcml.spec.images import ImageChecks
from hpcml.spec.matrix import task_bound
from hpcml.spec.notify import NotifyChecks
from hpcml.spec.rules import (
    DEFAULTS_KEYS,
    MAX_RETRIES,
    MIN_MAX_TASKS,
    RESERVED_IMAGE_NAMES,
    SHELLS,
    SUPPORTED_VERSIONS,
    TOP_KEYS,
)
from hpcml.spec.shapes import describe
from hpcml.spec.steps import StepChecks
from hpcml.spec.yamlpos import YNode

__all__ = ["load", "loads"]


def load(path: str | os.PathLike[str], *, allow_setup: Collection[str] | None = None,
         max_tasks: int | None = None) -> Workflow:
    """Read and validate a workflow file; raise SpecError carrying every problem found.

    File references in the spec are relative to the file's directory. `allow_setup` names
    the images whose hand-written `%setup`/`%pre` may run (the setting of that name); by
    default it is read from the configuration when a `deffile:` image needs it. `max_tasks`
    caps the tasks of the whole workflow (the setting of that name, read from the
    configuration by default when the workflow has more than MIN_MAX_TASKS).
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
    return loads(text, shown, root=str(p.resolve().parent), allow_setup=allow_setup, max_tasks=max_tasks)


def loads(text: str, path: str = "workflow.yaml", root: str | None = None, *,
          allow_setup: Collection[str] | None = None, max_tasks: int | None = None) -> Workflow:
    """Validate workflow text; `path` is used in messages, `root` resolves file references
    (default: the directory of `path`); `allow_setup` and `max_tasks` as for `load`."""
    root = os.path.abspath(root if root is not None else os.path.dirname(os.path.abspath(path)))
    tree, diagnostics = yamlpos.parse(text, path)
    checker = _Checker(path, root, text)
    if allow_setup is not None:
        checker.allow_setup = frozenset(allow_setup)
    checker.max_tasks = max_tasks
    checker.diags.extend(diagnostics)
    workflow = checker.workflow(tree) if tree is not None else None
    if checker.diags or workflow is None:
        raise SpecError(checker.diags)
    return workflow


class _Checker(ImageChecks, StepChecks, NotifyChecks):
    """Walks the positioned tree, collecting diagnostics and building model objects."""

    #: The setting max_tasks; None: read from the configuration when a workflow is large.
    max_tasks: int | None = None

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
        if self.within_task_limit(steps):
            self.expand_matrices()
        notify = self.notify(top.get("notify"))
        if self.diags or version is None or name is None:
            return None
        return Workflow(
            path=self.file, root=self.root, name=name, images=images, steps=steps, version=version, notify=notify
        )

    def within_task_limit(self, steps: dict[str, Step]) -> bool:
        """Whether the workflow's tasks, counted from the sizes of its matrices' axes
        (never by expanding them), stay within the setting max_tasks; else an error at the
        step where the count passes it, naming each large step and its count."""
        counts = [(step, task_bound(step.matrix)) for step in steps.values()]
        total = sum(n for _, n in counts)
        if total <= MIN_MAX_TASKS:
            return True  # below any limit a lab may set: no need to read the configuration
        limit = self.task_limit()
        if total <= limit:
            return True
        running = 0
        for step, n in counts:
            running += n
            if running > limit:
                break
        largest = sorted(counts, key=lambda c: -c[1])[:5]
        shown = ", ".join(f"{s.name!r}: {n:,}" for s, n in largest)
        assert step.pos is not None
        self.err((step.pos.line, step.pos.col),
                 f"the workflow expands to up to {total:,} tasks ({shown}); at most {limit:,} are allowed, "
                 f"and step {step.name!r} passes that with its {n:,} (the setting max_tasks, "
                 "docs/configuration.md; split the sweep into several workflows or narrow it)")
        return False

    def task_limit(self) -> int:
        """The setting max_tasks, read from the configuration only when the caller did not give it."""
        if self.max_tasks is None:
            # A function-local import for start-up speed: only large workflows need settings.
            from hpcml import config

            self.max_tasks = config.load().max_tasks
        return self.max_tasks

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
            out["not_secret"] = self.env_secrets(m["env"], "defaults.env")
        if "shell" in m:
            out["shell"] = self.choice(m["shell"], "shell", SHELLS)
        if "retries" in m:
            out["retries"] = self.integer(m["retries"], "retries", 0, MAX_RETRIES)
        return out
