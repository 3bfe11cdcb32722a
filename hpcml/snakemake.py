"""hpcml images and step resources inside a Snakefile (see docs/snakemake.md).

    from hpcml.snakemake import image, resources, container_shell

    WF = "workflow.yaml"

    rule prepare:                      # CPU: Snakemake's own container support
        output: directory("data")
        container: image("base", workflow=WF)
        resources: **resources("prepare", workflow=WF)
        shell: "python3 prepare.py --out {output:q}"

    rule train:                        # GPU: hpcml's binding (--nv, the job's devices)
        input: "data"
        output: directory("model")
        resources: **resources("train", workflow=WF)
        shell: container_shell("trainer", "python3 train.py --data {input:q} --out {output:q}",
                               workflow=WF, gpus=1)

Each helper goes through `hpcml.api`. An error (unknown image or step, a workflow with
errors, an image missing while building is off) is raised as Snakemake's WorkflowError
with hpcml's message, so Snakemake shows it at load time without a deep traceback.
Building is off under `snakemake -n` and with HPCML_NO_BUILD=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from hpcml import api
from hpcml.errors import HpcmlError

if TYPE_CHECKING:
    from hpcml.config import Settings

__all__ = ["container_shell", "image", "resources"]

T = TypeVar("T")

#: The configuration, loaded once per process (per Snakefile load).
_settings: Settings | None = None
#: SIF paths already resolved and checked in this process: (ref, workflow path) → path.
_resolved: dict[tuple[str, str | None], str] = {}

# Short options of snakemake 9 that take no value: in `-pn` the `n` is the dry-run flag, in
# `-j2` or `-Cn=1` everything after the option letter is its value.
_FLAG_LETTERS = set("ntkfFlSDpa")


def image(ref: str, *, workflow: str | os.PathLike[str] | None = None) -> str:
    """The absolute SIF path of an hpcml image, for `container:`.

    With `workflow`, `ref` is an image name of that workflow file, built (with `hpcml
    build`'s progress lines on stderr) when no catalog has it, unless building is off
    (`snakemake -n`, HPCML_NO_BUILD=1). Without, `ref` is a catalog reference (a key, a
    key prefix, NAME[:TAG]). The image's integrity (and signature) is checked once per
    process. Example: ``container: image("trainer", workflow="workflow.yaml")``.
    """
    return _call(lambda: _image(ref, os.path.abspath(os.fspath(workflow)) if workflow is not None else None))


def resources(step: str, *, workflow: str | os.PathLike[str]) -> dict[str, str | int]:
    """The step's resources in snakemake-executor-plugin-slurm's names, for
    ``resources: **resources("train", workflow="workflow.yaml")``: the same SLURM request
    as the hpcml step (`slurm_partition`, `runtime`, `mem_mb`, `cpus_per_task`, `gres`, …)."""
    return _call(lambda: api.step_resources(step, workflow=workflow, settings=_config()))


def container_shell(
    image: str, command: str, *, workflow: str | os.PathLike[str], gpus: int = 0, gpu_vendor: str = "nvidia"
) -> str:
    """A `shell:` running `command` in the workflow's image `image` with hpcml's binding.

    `apptainer exec --cleanenv` with the site's exec flags (hpcml config), the working
    directory bound and current, and only when `gpus > 0` `--nv` (`--rocm` for
    gpu_vendor="amd") plus the job's CUDA_VISIBLE_DEVICES. `command` may use Snakemake's
    placeholders (`{input:q}`, `{output:q}`, …). Use it where `--apptainer-args` cannot
    do (they apply to every rule), e.g. a GPU rule next to CPU rules.
    """
    def render() -> str:
        _image(image, os.path.abspath(os.fspath(workflow)))  # built (or refused) as image() would
        return api.step_container_shell(image, command, workflow=workflow, gpus=gpus, gpu_vendor=gpu_vendor,
                                        build=False, settings=_config())

    return _call(render)


# ---- internals ----------------------------------------------------------------------------


def _image(ref: str, workflow: str | None) -> str:
    if (ref, workflow) in _resolved:
        return _resolved[(ref, workflow)]
    if workflow is None:
        sif = api.image_sif(ref, settings=_config())
    else:
        from hpcml.cli.progress import (
            ImageProgress,  # start-up speed: only when an image is looked up
        )

        with ImageProgress(lambda line: print(f"hpcml: {line}", file=sys.stderr, flush=True)) as progress:
            sif = api.image_sif(ref, workflow=workflow, build=_build_allowed(), progress=progress, settings=_config())
    _resolved[(ref, workflow)] = sif
    return sif


def _config() -> Settings:
    global _settings
    if _settings is None:
        _settings = api.load_settings()
    return _settings


def _build_allowed(argv: list[str] | None = None, env: dict[str, str] | None = None) -> bool:
    """False under `snakemake -n` (any spelling: -n, -np, --dry-run, --dryrun) and with
    HPCML_NO_BUILD=1. Snakemake parses the Snakefile before it knows its executor, so its
    `workflow.dryrun` is still False here: the command line is the only witness."""
    environ = os.environ if env is None else env
    if environ.get("HPCML_NO_BUILD", "") not in ("", "0"):
        return False
    return not is_dry_run(sys.argv[1:] if argv is None else argv)


def is_dry_run(args: list[str]) -> bool:
    """Whether snakemake's arguments ask for a dry run. Example: ``is_dry_run(["-np"])``."""
    for arg in args:
        if arg == "--":
            break
        if arg in ("--dry-run", "--dryrun"):
            return True
        if arg.startswith("-") and not arg.startswith("--"):
            for letter in arg[1:]:
                if letter == "n":
                    return True
                if letter not in _FLAG_LETTERS:
                    break
    return False


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except HpcmlError as err:
        raise _workflow_error(err) from None


def _workflow_error(err: HpcmlError) -> Exception:
    # Snakemake prints a WorkflowError as its message at the Snakefile line that raised it.
    from snakemake.exceptions import (
        WorkflowError,  # start-up speed: loaded already inside Snakemake
    )

    return WorkflowError(f"hpcml: {err}")
