"""Frozen dataclasses passed between the stages: spec → plan → deffile/jobs → executor.

This module holds data only. Loading and validation live in spec.py,
planning and content keys in plan.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

Scalar = str | int | float | bool

#: An environment variable name (env keys, secrets, matrix axes). Defined once: the spec
#: checker, the definition-file renderer and the job-script renderer all use this one.
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_NAME_RULE = "[A-Za-z_][A-Za-z0-9_]*"

#: One word of a line that a program reads as a comment from `#` on and splits on blanks: a
#: definition file's header (`From:`, `MirrorURL:`), its `%files` lines and an `#SBATCH` value.
#: sbatch and Apptainer both drop everything after a `#` (`From: /x/a#b.sif` builds from
#: `/x/a`), so a path or value is refused when it has one, a blank, a quote, a backslash,
#: `%` or a control character. Defined once: the spec checker and every renderer use it.
WORD_RE = re.compile(r"[^\s'\"\\%#\x00-\x1f\x7f]+")
WORD_RULE = "no blanks, '#', '%', quotes, backslashes or control characters"

#: The kinds of `from:` an image may have. `image` means another image of the same file;
#: `deffile` and `dockerfile` are images given by a hand-written file instead of `from:`.
BaseKind = Literal[
    "scratch", "debootstrap", "docker", "oras", "localimage", "catalog", "image", "deffile", "dockerfile"
]


@dataclass(frozen=True)
class Pos:
    """Where something was written: file, 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class FileCopy:
    """One `%files` entry: `src` relative to the workflow directory (as written), `dst` in the image."""

    src: str
    dst: str


@dataclass(frozen=True)
class Image:
    """One environment. `base_kind`/`base_ref` are the parsed `from:` (e.g. debootstrap, bookworm)."""

    name: str
    base_kind: BaseKind
    base_ref: str
    apt: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    requirements: str | None = None  # path relative to the workflow directory
    files: tuple[FileCopy, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    post: str | None = None
    test: str | None = None
    runscript: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    shell: str = "bash"  # shell that runs step commands in this image: bash or sh
    mirror: str | None = None  # debootstrap mirror URL
    build_args: tuple[tuple[str, str], ...] = ()  # deffile: `{{ NAME }}` values, sorted by name
    host_setup: bool = False  # deffile: its %setup/%pre run on the build host (the lab allowed it)
    #: Findings of the secret scan waived by a `hpcml: not-a-secret` marker ("file:line:col: what").
    not_secret: tuple[str, ...] = field(default=(), compare=False)
    pos: Pos | None = field(default=None, compare=False)

    @property
    def parent(self) -> str | None:
        """Name of the image of this workflow this one is built on, if any."""
        return self.base_ref if self.base_kind == "image" else None


@dataclass(frozen=True)
class Resources:
    """What a step asks SLURM (or the local executor) for. Units are parsed once, here."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_s: int | None = None  # wall-time limit in seconds
    nodes: int = 1
    cpus: int | None = None  # CPUs per task
    mem_mb: int | None = None  # memory per node, MiB
    gpus: int = 0  # GPUs per node
    gpu_type: str | None = None
    gpu_vendor: Literal["nvidia", "amd"] = "nvidia"
    cpus_per_gpu: int | None = None
    constraint: str | None = None
    # Processes the step starts (spec.rules.LAUNCH_MODES): "single" (one, today's default),
    # "per_node" (one per node, e.g. torchrun) or "per_gpu" (nodes × gpus ranks).
    launch: Literal["single", "per_node", "per_gpu"] = "single"

    @property
    def ranks_per_node(self) -> int:
        """Processes started on each node (1 for single and per_node)."""
        return self.gpus if self.launch == "per_gpu" else 1

    @property
    def ranks(self) -> int:
        """Processes the step starts in all: 1, nodes, or nodes × gpus."""
        return 1 if self.launch == "single" else self.nodes * self.ranks_per_node


@dataclass(frozen=True)
class Checkpoint:
    """Requeue on `signal`, sent `grace_s` seconds before the time limit."""

    signal: str = "USR2"
    grace_s: int = 120


@dataclass(frozen=True)
class Matrix:
    """Cartesian `axes`, then `exclude` removes matching points, then `include` adds/extends
    (GitHub Actions semantics)."""

    axes: tuple[tuple[str, tuple[Scalar, ...]], ...]
    include: tuple[tuple[tuple[str, Scalar], ...], ...] = ()
    exclude: tuple[tuple[tuple[str, Scalar], ...], ...] = ()


@dataclass(frozen=True)
class Step:
    name: str
    image: str
    run: str
    needs: tuple[str, ...] = ()
    matrix: Matrix | None = None
    max_parallel: int | None = None
    resources: Resources = Resources()
    retries: int = 0
    checkpoint: Checkpoint | None = None
    secrets: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    shell: str | None = None  # overrides the image's shell
    #: Findings of the secret scan in its env waived by a `hpcml: not-a-secret` marker.
    not_secret: tuple[str, ...] = field(default=(), compare=False)
    pos: Pos | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Notify:
    """Who hears of a run and when (`notify:`): events (`finish`, `failure`), the name of the
    secret holding the webhook URL (read from the environment at submission, never kept in
    the spec or a job script), and an address for SLURM's own mail."""

    on: tuple[str, ...]
    webhook: str | None = None
    mail: str | None = None


@dataclass(frozen=True)
class Workflow:
    """A validated workflow. `root` is the absolute directory of `path`; file references are
    relative to it. Images and steps keep the order they were written in."""

    path: str
    root: str
    name: str
    images: Mapping[str, Image]
    steps: Mapping[str, Step]
    version: int = 1
    notify: Notify | None = None


# ---- plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePlan:
    """An image ready to build: its content key and canonical definition text.

    `definition` references a parent image of this workflow as `From: {PARENT_SIF}`
    (see deffile.PARENT_PLACEHOLDER); the builder substitutes the parent's real SIF path,
    so the key does not depend on where catalogs live. `inputs` are the files the
    definition pulls in, relative to `Workflow.root`, with their sha256.
    """

    name: str
    key: str
    definition: str
    parent: str | None  # image name in this workflow
    parent_key: str | None  # key of the parent (also for catalog: bases)
    inputs: tuple[tuple[str, str], ...]
    image: Image


@dataclass(frozen=True)
class Task:
    """One unit of work: a step at one matrix point (or the single task of a plain step).

    `command` has matrix values, {step} and {task} substituted and shell-quoted; the path
    placeholders {out} and {in.STEP} stay symbolic (they derive from keys) until the
    executor fills them with plan.fill_paths.
    """

    step: str
    index: int
    point: tuple[tuple[str, Scalar], ...]
    command: str
    key: str
    upstream: tuple[str, ...]  # keys of the tasks this one needs

    @property
    def id(self) -> str:
        return f"{self.step}/{self.index}"


@dataclass(frozen=True)
class StepPlan:
    step: Step
    image_key: str
    tasks: tuple[Task, ...]

    @property
    def is_array(self) -> bool:
        return self.step.matrix is not None


@dataclass(frozen=True)
class Plan:
    workflow: Workflow
    step_order: tuple[str, ...]  # topological
    steps: Mapping[str, StepPlan]
    image_order: tuple[str, ...]  # parents before children
    images: Mapping[str, ImagePlan]
