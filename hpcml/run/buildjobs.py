"""Images built as SLURM jobs (`build_on = "slurm"`): each missing image becomes one build
job, a child's job depends `afterok` on its parent's, and the task jobs depend on the
build jobs of their image's chain, so submission takes seconds whatever must be built.

One build job per image key, whoever asks: under the key's catalog lock, a run looks for
the image, then for the key's build marker (catalogs' `builds/<key>.json`, naming a job
id), and depends on that job while squeue still has it; only otherwise does it submit a
job and write the marker. The job itself runs hpcml's own build (render/buildjob.py), so
the lock and the crash-safe publish are those of a build on the login node.

Example:

    builds = submit_builds(plan, settings, ["train"], runner=None, say=print)
    builds.sifs["torch"], builds.jobs.get("torch")   # future SIF path, build job id
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hpcml
from hpcml.clients.runner import Runner
from hpcml.clients.slurm import Slurm
from hpcml.config import Settings
from hpcml.errors import BuildError
from hpcml.images import ensure as _images
from hpcml.images.catalog import Catalog
from hpcml.images.search import CatalogPath
from hpcml.model import Plan
from hpcml.render.buildjob import BuildJobSpec, render_build_script
from hpcml.run.durable import atomic_write


@dataclass(frozen=True)
class BuildJob:
    """One image's build job, as a run records it."""

    image: str
    key: str
    job_id: str
    sif: str  # where the job publishes the image
    output: str  # the job's output file
    adopted: bool  # another run's (or user's) job, found by its marker
    parent: str | None = None  # the parent image, when it has a build job too (this one waits for it)


@dataclass
class Builds:
    sifs: dict[str, str] = field(default_factory=dict)  # image → SIF (published, or once built)
    jobs: dict[str, BuildJob] = field(default_factory=dict)  # image → its build job

    def chain_jobs(self, plan: Plan, image: str) -> list[str]:
        """The build job ids of `image` and its ancestors (parents first)."""
        ids: list[str] = []
        name: str | None = image
        while name is not None:
            if name in self.jobs:
                ids.insert(0, self.jobs[name].job_id)
            name = plan.images[name].parent
        return ids


def submit_builds(
    plan: Plan,
    settings: Settings,
    names: Sequence[str],
    *,
    runner: Runner | None,
    say: Callable[[str], None],
    workflow_path: Path,
) -> Builds:
    """The SIF of every image of `names` (and what they need), submitting build jobs for
    the ones no catalog has and no live job builds."""
    path = _images.catalog_path(settings, runner)
    slurm = Slurm(runner)
    builds = Builds()
    for name in _images.needed(plan, names, path):
        image = plan.images[name]
        entry = path.resolve(image.key)
        if entry is not None:
            builds.sifs[name] = str(entry.sif)
            continue
        target = path.writable()
        waiting = f"image {name}: waiting for another hpcml's lock on it"
        with target.lock(image.key, on_wait=lambda _o, said=waiting: say(said)):
            entry = path.resolve(image.key)
            if entry is not None:
                builds.sifs[name] = str(entry.sif)
                continue
            marker = target.read_build_marker(image.key)
            if marker is not None and slurm.job_live(str(marker["job_id"])):
                job = BuildJob(name, image.key, str(marker["job_id"]), str(target.sif_path(image.key)),
                               target.build_output_pattern(name, image.key).replace("%j", str(marker["job_id"])),
                               adopted=True, parent=_parent_with_job(plan, name, builds))
                say(f"image {name}: built by job {job.job_id} (already queued), which the tasks wait for")
            else:
                job = _submit(plan, settings, slurm, path, target, name, builds, workflow_path)
                say(f"image {name}: build job {job.job_id} submitted (key {image.key[:12]})")
        builds.jobs[name] = job
        builds.sifs[name] = job.sif
    return builds


def _submit(plan: Plan, settings: Settings, slurm: Slurm, path: CatalogPath, target: Catalog, name: str,
            builds: Builds, workflow_path: Path) -> BuildJob:
    image = plan.images[name]
    if image.parent is None and image.parent_key is not None and path.lookup(image.parent_key) is None:
        raise BuildError(f"base image {image.image.base_ref} (key {image.parent_key[:12]}) of image {name} is in "
                         "no catalog")
    output = target.build_output_pattern(name, image.key)
    spec = BuildJobSpec(
        workflow=plan.workflow.name, image=name, key=image.key, workflow_path=str(workflow_path.resolve()),
        workflow_root=plan.workflow.root, python=sys.executable, package_root=package_root(), output=output,
        partition=settings.build_partition, time=settings.build_time, cpus=settings.build_cpus,
        mem=settings.build_mem, extra=settings.build_sbatch_flags, settings=settings_json(settings),
    )
    # In the user's own cache, not the (group-writable) catalog: nobody else may edit it.
    script = Path(settings.cache_dir) / "builds" / f"{name}-{image.key[:12]}.sbatch"
    script.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(script, render_build_script(spec), mode=0o755)
    parent = image.parent
    deps = [builds.jobs[parent].job_id] if parent is not None and parent in builds.jobs else []  # afterok
    job_id = slurm.sbatch(str(script), deps)
    target.write_build_marker(image.key, job_id, name)
    return BuildJob(name, image.key, job_id, str(target.sif_path(image.key)), output.replace("%j", job_id), adopted=False,
                    parent=_parent_with_job(plan, name, builds))


def _parent_with_job(plan: Plan, name: str, builds: Builds) -> str | None:
    parent = plan.images[name].parent
    return parent if parent is not None and parent in builds.jobs else None


def package_root() -> str:
    """The directory (or zipapp) holding the running `hpcml` package, for the build job."""
    return str(Path(hpcml.__file__).resolve().parent.parent)


#: The settings a build reads (images/ensure.py), handed to the build job as resolved here.
BUILD_SETTINGS = ("catalogs", "cache_dir", "apptainer", "build_flags", "build_binds", "ca_bundle", "require_signatures",
                  "signing_key", "verify_key", "allow_setup",
                  "scan_on_publish", "advisories", "advisory_service")  # scan_on_publish scans in the job


def settings_json(settings: Settings) -> str:
    return json.dumps({k: getattr(settings, k) for k in BUILD_SETTINGS}, sort_keys=True)


def settings_from_json(text: str) -> Settings:
    """The build settings `settings_json` wrote; the rest are defaults (a build reads no other)."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise BuildError(f"unreadable build settings ({err})") from None
    if not isinstance(data, dict) or set(data) - set(BUILD_SETTINGS):
        raise BuildError(f"unexpected build settings: {sorted(set(data) - set(BUILD_SETTINGS)) if isinstance(data, dict) else data!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return dataclasses.replace(Settings(), **values)


def build_journal_fields(job: BuildJob) -> Mapping[str, object]:
    return {"image": job.image, "key": job.key, "job_id": job.job_id, "sif": job.sif, "output": job.output,
            "adopted": job.adopted, "parent": job.parent}
