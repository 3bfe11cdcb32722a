"""Workflow → Plan: step DAG in topological order, matrix expansion, image graph, content keys.

Keys are sha256 hex digests over length-prefixed fields behind a versioned tag
(`hpcml-image-v1`, `hpcml-task-v1`): changing what goes into a key means bumping the tag,
deliberately, never by accident.

- image key = H(tag, canonical definition, sorted (relpath, sha256) of every input file,
  parent key[, "build-args", NAME=value…][, "build-options", flag…]). The definition text holds the parent as a
  placeholder, so the key does not depend on where catalogs or run directories are. A
  `deffile:` image's build arguments (sorted by name) are appended only when it has some,
  so the keys of every other image are what they were before build arguments existed.
  Likewise the build settings that change an image's content (`build_flags` other than
  fakeroot/userns and the like, `build_binds`: key_build_options) are appended only when set.
- task key = H(tag, step name, command template (matrix values substituted, {out} and
  {in.STEP} symbolic), matrix point, image key, effective shell, sorted step env, sorted
  upstream task keys). Resources are left out on purpose: a new partition or time limit
  must not rerun finished work.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Callable, Iterable, Mapping, Sequence

from hpcml.errors import Diagnostic, SpecError
from hpcml.hashing import InputError, hash_input
from hpcml.model import Image, ImagePlan, Plan, Pos, Scalar, Step, StepPlan, Task, Workflow
from hpcml.spec import inputs, placeholders
from hpcml.spec.expand import expand_matrix, format_value  # shared with the checker, which expands too

IMAGE_KEY_TAG = "hpcml-image-v1"
TASK_KEY_TAG = "hpcml-task-v1"

#: Given a catalog image's name and tag (None when not written), returns its key.
CatalogResolver = Callable[[str, "str | None"], str]


#: `apptainer build` flags that change how a build runs but not what it builds, so they are
#: left out of image keys: fakeroot and user namespaces (the testbed's and many clusters'
#: defaults), skipping %test, the cache and the temporary directory, overwriting the output.
NEUTRAL_BUILD_FLAGS = frozenset({
    "--fakeroot", "-f", "--userns", "-u", "--ignore-fakeroot-command", "--ignore-subuid", "--ignore-userns",
    "--force", "-F", "--disable-cache", "--notest", "-T", "--warn-unused-build-args",
})
#: Neutral flags that take a value (`--tmpdir DIR` or `--tmpdir=DIR`).
NEUTRAL_BUILD_OPTIONS = frozenset({"--tmpdir"})


def key_build_options(build_flags: Sequence[str] = (), build_binds: Sequence[str] = ()) -> tuple[str, ...]:
    """The build settings that change what an image contains, as they enter its key: every
    `build_flags` entry except NEUTRAL_BUILD_FLAGS (a `--bind`, `--build-arg`, `--fix-perms`
    or `--arch` changes the image), then each `build_binds` entry as `--bind SPEC`.

    >>> key_build_options(["--fakeroot", "--fix-perms"], ["/etc/pki:/etc/pki"])
    ('--fix-perms', '--bind', '/etc/pki:/etc/pki')
    """
    out: list[str] = []
    skip = False
    for flag in build_flags:
        if skip:
            skip = False
            continue
        name = flag.split("=", 1)[0]
        if name in NEUTRAL_BUILD_FLAGS:
            continue
        if name in NEUTRAL_BUILD_OPTIONS:
            skip = "=" not in flag
            continue
        out.append(flag)
    for bind in build_binds:
        out += ["--bind", bind]
    return tuple(out)


def build(workflow: Workflow, resolve_catalog: CatalogResolver | None = None, *,
          build_options: Sequence[str] = ()) -> Plan:
    """Plan `workflow`: order steps and images, expand matrices, compute every key.

    Reads the files images pull in (to hash them) and hand-written def/Dockerfiles.
    Without `resolve_catalog`, a `catalog:NAME[:TAG]` base contributes the literal
    reference to its child's key (a plan without a catalog cannot know the real key).
    `build_options` (key_build_options of the settings) enter every image key when there
    are any: the same definition built with other content-changing flags is another image.
    Raises SpecError for anything that makes the workflow unplannable.
    """
    image_order = _image_order(workflow)
    images: dict[str, ImagePlan] = {}
    cache: dict[str, str] = {}
    errors: list[Diagnostic] = []
    for name in image_order:
        try:
            images[name] = plan_image(workflow, workflow.images[name], images, resolve_catalog, cache,
                                      build_options)
        except SpecError as err:
            errors += err.diagnostics
    if errors:
        raise SpecError(errors)
    step_order = _step_order(workflow)
    steps: dict[str, StepPlan] = {}
    for name in step_order:
        step = workflow.steps[name]
        steps[name] = plan_step(step, images[step.image], [steps[n] for n in step.needs], workflow)
    return Plan(workflow, tuple(step_order), steps, tuple(image_order), images)


# ---- images ---------------------------------------------------------------------------


def plan_image(
    workflow: Workflow,
    image: Image,
    planned: Mapping[str, ImagePlan],
    resolve_catalog: CatalogResolver | None,
    cache: dict[str, str],
    build_options: Sequence[str] = (),
) -> ImagePlan:
    """Render `image`, hash its inputs and compute its key (its parent must be in `planned`)."""
    # The same reading of a deffile:/dockerfile: that validation did (spec/inputs.py).
    source = inputs.image_source(image, workflow.root, workflow.path, image.pos)
    definition = source.definition
    hashed = []
    for rel in sorted(set(source.inputs)):
        if rel not in cache:
            try:
                cache[rel] = hash_input(workflow.root, rel)
            except InputError as err:
                raise SpecError(_diag(image.pos, f"image {image.name!r}: {err}")) from None
        hashed.append((rel, cache[rel]))
    parent_key = None
    if image.parent is not None:
        parent_key = planned[image.parent].key
    elif image.base_kind == "catalog":
        name, _, tag = image.base_ref.partition(":")
        if resolve_catalog is None:
            parent_key = f"catalog:{name}:{tag or 'latest'}"
        else:
            parent_key = resolve_catalog(name, tag or None)
    key = image_key(definition, hashed, parent_key, image.build_args, build_options)
    return ImagePlan(image.name, key, definition, image.parent, parent_key, tuple(hashed), image)


def image_key(definition: str, inputs: Iterable[tuple[str, str]], parent_key: str | None,
              build_args: Iterable[tuple[str, str]] = (), build_options: Sequence[str] = ()) -> str:
    """The content key of an image (see the module docstring)."""
    fields = [IMAGE_KEY_TAG, definition]
    for rel, digest in sorted(inputs):
        fields += [rel, digest]
    fields.append(parent_key or "")
    args = sorted(build_args)
    if args:
        fields += ["build-args", *(f"{name}={value}" for name, value in args)]
    if build_options:
        # Appended only when there are any, so that every key built without them stays as it was.
        fields += ["build-options", *build_options]
    return _digest(fields)


def _image_order(workflow: Workflow) -> list[str]:
    deps = {n: [i.parent] if i.parent else [] for n, i in workflow.images.items()}
    return _toposort(list(workflow.images), deps, "image", {n: i.pos for n, i in workflow.images.items()})


# ---- steps ----------------------------------------------------------------------------


def plan_step(step: Step, image: ImagePlan, upstream: list[StepPlan], workflow: Workflow) -> StepPlan:
    """Expand `step` into its tasks with their commands and keys."""
    upstream_keys = tuple(sorted(t.key for sp in upstream for t in sp.tasks))
    # Every task of a step shares its upstream, so hash that part once, not per task.
    upstream_digest = _digest(upstream_keys)
    shell = step.shell or image.image.shell
    env_fields = [f"{k}={v}" for k, v in sorted(step.env)]
    points = expand_matrix(step.matrix, step.pos) if step.matrix else [()]
    template = step.run
    # An include-only key is absent from the points its entry did not extend; as in
    # GitHub Actions it then reads as empty (the checker already rejected unknown names).
    optional = frozenset(k for entry in step.matrix.include for k, _ in entry) if step.matrix else frozenset()
    # The task key is _digest([TAG, name, command, point, image key, shell, *env, upstream]);
    # only command and point vary between tasks, so the rest is encoded once.
    head = _fields([TASK_KEY_TAG, step.name])
    tail = _fields([image.key, shell, *env_fields, upstream_digest])
    tasks = []
    for index, point in enumerate(points):
        command = substitute(template, point, step.name, index, step.pos, optional, _launch_values(step))
        key = hashlib.sha256(head + _fields([command, _point_text(point)]) + tail).hexdigest()
        tasks.append(Task(step.name, index, point, command, key, upstream_keys))
    return StepPlan(step, image.key, tuple(tasks))


def _launch_values(step: Step) -> dict[str, str]:
    """{nodes} and {gpus_per_node}: numbers for a launcher's arguments (torchrun --nnodes …)."""
    return {"nodes": str(step.resources.nodes), "gpus_per_node": str(step.resources.gpus)}


def substitute(template: str, point: tuple[tuple[str, Scalar], ...], step: str, index: int,
               pos: Pos | None = None, optional: frozenset[str] = frozenset(),
               builtins: Mapping[str, str] | None = None) -> str:
    """Fill matrix values, {step}, {task} and `builtins` ({nodes}, {gpus_per_node}: plain
    numbers) shell-quoted; keep {out} and {in.X} symbolic.

    A name in `optional` (an `include`-only matrix key) that this point lacks becomes an
    empty shell word `''`; any other missing name is a SpecError.
    """
    values = dict(point)
    missing: list[str] = []

    def lookup(name: str) -> str | None:
        if builtins is not None and name in builtins:
            return placeholders.escape(shlex.quote(builtins[name]))
        if name == "step":
            return placeholders.escape(shlex.quote(step))
        if name == "task":
            return str(index)
        if name == "out" or name.startswith("in."):
            return None
        if name not in values:
            if name in optional:
                return "''"
            missing.append(name)
            return None
        return placeholders.escape(shlex.quote(format_value(values[name])))

    command = placeholders.substitute(template, lookup)
    if missing:
        raise SpecError(_diag(pos, f"step {step!r}: matrix point {index} has no value for "
                                   + ", ".join("{" + m + "}" for m in missing)))
    return command


def fill_paths(command: str, out: str, inputs: Mapping[str, str]) -> str:
    """The final shell command: {out} and {in.STEP} replaced by shell-quoted paths and
    escaped braces `{{`/`}}` turned back into `{`/`}`. `inputs` maps step names to paths.

    >>> fill_paths("cat {in.prep}/x > {out}/y; awk '{{print}}'", "/r/o", {"prep": "/r/p q"})
    "cat '/r/p q'/x > /r/o/y; awk '{print}'"
    """
    # Paths are escaped like matrix values: the final `unescape` would otherwise turn a
    # `{{` in a directory name (`/home/u/a{{b}}`) into `{` and name another directory.
    def lookup(name: str) -> str | None:
        if name == "out":
            return placeholders.escape(_quote_path(out))
        if name.startswith("in."):
            step = name[3:]
            if step not in inputs:
                raise ValueError(f"fill_paths: no path given for {{in.{step}}}")
            return placeholders.escape(_quote_path(inputs[step]))
        raise ValueError(f"fill_paths: placeholder {{{name}}} was not substituted by the plan")

    return placeholders.unescape(placeholders.substitute(command, lookup))


def _quote_path(path: str) -> str:
    """`path` as one shell word: as it is when it has only letters (any script), digits and
    `@%+=:,./-_` — the run directory is refused otherwise (jobs.check_run_path) — so it is
    right also inside the user's quotes; else shell-quoted."""
    if all(c.isalnum() or c in "@%+=:,./-_" for c in path):
        return path
    return shlex.quote(path)


def _point_text(point: tuple[tuple[str, Scalar], ...]) -> str:
    # The type is part of the point: `1` and `"1"` are different matrix values.
    return "\x1f".join(f"{k}={type(v).__name__}:{format_value(v)}" for k, v in point)


def _step_order(workflow: Workflow) -> list[str]:
    deps = {n: list(s.needs) for n, s in workflow.steps.items()}
    return _toposort(list(workflow.steps), deps, "step", {n: s.pos for n, s in workflow.steps.items()})


# ---- helpers --------------------------------------------------------------------------


def _toposort(names: list[str], deps: Mapping[str, list[str]], what: str,
              positions: Mapping[str, Pos | None]) -> list[str]:
    """Depth-first topological order that keeps the written order where it is free."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise SpecError(_diag(positions.get(name), f"{what} cycle: " + " -> ".join(cycle)))
        if name not in deps:
            raise SpecError(_diag(positions.get(path[-1]) if path else None, f"unknown {what} {name!r}"))
        state[name] = 1
        for dep in deps[name]:
            visit(dep, path + [name])
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name, [])
    return order


def _digest(fields: Iterable[str]) -> str:
    return hashlib.sha256(_fields(fields)).hexdigest()


def _fields(fields: Iterable[str]) -> bytes:
    parts = []
    for f in fields:
        data = f.encode()
        # Length-prefixed, so no two different field lists hash the same bytes.
        parts.append(len(data).to_bytes(8, "big"))
        parts.append(data)
    return b"".join(parts)


def _diag(pos: Pos | None, message: str) -> Diagnostic:
    if pos is None:
        return Diagnostic("<workflow>", 1, 1, message)
    return Diagnostic(pos.file, pos.line, pos.col, message)


# ---- the plan as a document -----------------------------------------------------------

#: Format of the `hpcml plan --json` document's shape (docs/plan.md), in its `format` field.
DOCUMENT_FORMAT = 1


def describe_base(image: Image) -> str:
    """The image's base as written in the spec: `debootstrap:bookworm`, `torch`, `deffile:x.def`."""
    kind, ref = image.base_kind, image.base_ref
    if kind == "scratch":
        return "scratch"
    if kind == "image":
        return ref
    if kind in ("docker", "oras"):
        return f"{kind}://{ref}"
    return f"{kind}:{ref}"


def describe_extras(image: Image) -> str:
    """What `hpcml plan` adds after a `deffile:` image's base: its build arguments, and a
    warning when its %setup/%pre will run on the build host. "" for other images."""
    parts = []
    if image.build_args:
        parts.append("build args " + " ".join(f"{k}={v}" for k, v in image.build_args))
    if image.host_setup:
        parts.append("%setup/%pre RUN ON THE BUILD HOST (allow_setup)")
    if image.not_secret:
        parts.append(f"{len(image.not_secret)} secret-scan finding(s) marked not-a-secret")
    return f" ({'; '.join(parts)})" if parts else ""


def waived_secrets(p: Plan) -> list[str]:
    """Every secret-scan finding a `hpcml: not-a-secret` marker waived, for `hpcml plan`."""
    out = [f"image {n}: {w}" for n in p.image_order for w in p.images[n].image.not_secret]
    return out + [f"step {n}: {w}" for n in p.step_order for w in p.steps[n].step.not_secret]


def _hand_written(image: Image) -> dict[str, object]:
    """What the plan shows of a `deffile:` image's build arguments and host-side setup, and
    of any image's waived secret-scan findings; nothing otherwise, so entries keep the
    shape they always had."""
    out: dict[str, object] = {}
    if image.build_args:
        out["build_args"] = dict(image.build_args)
    if image.host_setup:
        out["host_setup"] = True  # its %setup/%pre run on the build host (allow_setup)
    if image.not_secret:
        out["not_secret"] = list(image.not_secret)  # secret-scan findings waived by a marker
    return out


def to_document(p: Plan) -> dict[str, object]:
    """The plan as plain JSON-able data, in a stable shape (see docs/plan.md)."""
    return {
        "format": DOCUMENT_FORMAT,
        "workflow": {"name": p.workflow.name, "path": p.workflow.path},
        "images": [
            {
                "name": ip.name,
                "key": ip.key,
                "base": describe_base(ip.image),
                "parent": ip.parent,
                "parent_key": ip.parent_key,
                "inputs": [{"path": rel, "sha256": digest} for rel, digest in ip.inputs],
                **_hand_written(ip.image),
            }
            for ip in (p.images[n] for n in p.image_order)
        ],
        "steps": [
            {
                "name": sp.step.name,
                "image": sp.step.image,
                "image_key": sp.image_key,
                "needs": list(sp.step.needs),
                "array": sp.is_array,
                "max_parallel": sp.step.max_parallel,
                "tasks": [
                    {"index": t.index, "point": dict(t.point), "command": t.command, "key": t.key}
                    for t in sp.tasks
                ],
                **({"not_secret": list(sp.step.not_secret)} if sp.step.not_secret else {}),
            }
            for sp in (p.steps[n] for n in p.step_order)
        ],
    }
