"""Make sure every image of a plan exists: catalog hit, or `apptainer build` then publish.

Images are processed parents first; independent images build in parallel threads. For
each image: look its key up in the catalog path (integrity-checked); otherwise take the
key's lock in the first writable catalog, look again (another process may have built it
meanwhile), copy the image's inputs into a private build directory (staging.py), build
there from those copies only, and publish. A failed build publishes
nothing, keeps its log in the catalog's `logs/failed/`, and its children are skipped.

Example:

    sifs = images.ensure(plan, config.load(), jobs=4, progress=print)
    sifs["torch"]   # '/home/me/.cache/hpcml/images/sif/3f/3f…e1.sif'
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from hpcml import __version__
from hpcml.render import deffile
from hpcml.clients.apptainer import Apptainer
from hpcml.images.catalog import Catalog, Entry
from hpcml.images.manifest import file_fingerprint, new_manifest
from hpcml.images.search import CatalogPath
from hpcml.images.staging import stage_inputs
from hpcml.config import Settings
from hpcml.errors import BuildError, HpcmlError
from hpcml.images.locking import Owner
from hpcml.model import ImagePlan, Plan
from hpcml.clients.runner import LocalRunner, Runner

State = Literal["pending", "cached", "waiting", "building", "done", "failed", "skipped", "scanned"]
FINAL: frozenset[str] = frozenset({"cached", "done", "failed", "skipped"})
#: Directories apptainer creates in every build root, even `Bootstrap: scratch` (measured,
#: 1.4.5): the only places a build-time bind can land in an empty root.


@dataclass(frozen=True)
class ImageEvent:
    """One change of an image's state, as reported to the progress callback."""

    name: str
    key: str
    state: State
    message: str = ""  # e.g. who holds the lock, the error, the SIF path
    sif: str | None = None
    log: str | None = None
    seconds: float = 0.0  # build time, for done/failed


@dataclass(frozen=True)
class ImageResult:
    name: str
    key: str
    state: State
    sif: str | None = None
    log: str | None = None
    seconds: float = 0.0
    error: str = ""


@dataclass
class BuildReport:
    """What `build_images` did, image by image, in plan order."""

    results: dict[str, ImageResult] = field(default_factory=dict)

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.results.values() if r.state in ("failed", "skipped")]

    @property
    def failure_message(self) -> str:
        """What failed, for the user ("" when nothing did): see `failure_message`."""
        return failure_message(self)

    def sifs(self) -> dict[str, str]:
        return {n: r.sif for n, r in self.results.items() if r.sif is not None}


Progress = Callable[[ImageEvent], None]


def catalog_path(settings: Settings, runner: Runner | None = None) -> CatalogPath:
    """The configured search path, with signature checks wired to apptainer when required."""
    app = Apptainer(runner or LocalRunner(), settings.apptainer)
    verify = None
    if settings.verify_key:
        key = settings.verify_key
        verify = lambda sif: app.verify(str(sif), key)  # noqa: E731
    return CatalogPath(
        [Catalog(c) for c in settings.catalogs],
        settings.cache_dir,
        require_signatures=settings.require_signatures,
        verify_signature=verify,
    )


def ensure(
    plan: Plan,
    settings: Settings,
    *,
    names: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> dict[str, str]:
    """SIF path per image name (the ones in `names` and their parents; all by default).

    Raises BuildError listing every failed build (its log path and last lines) and every
    image skipped because its parent failed.
    """
    report = build_images(plan, settings, names=names, jobs=jobs, progress=progress, runner=runner)
    if report.failed:
        raise BuildError(failure_message(report))
    return report.sifs()


def failure_message(report: BuildReport) -> str:
    parts = []
    for r in report.failed:
        if r.state == "skipped":
            parts.append(f"image {r.name}: skipped ({r.error})")
        else:
            where = f"\n  log: {r.log}" if r.log else ""
            parts.append(f"image {r.name}: build failed{where}\n{_indent(r.error)}")
    return "\n".join(parts)


def select(plan: Plan, names: Iterable[str] | None) -> list[str]:
    """`names` plus every ancestor, in plan order; all images when `names` is None."""
    if names is None:
        return list(plan.image_order)
    wanted: set[str] = set()
    for name in names:
        if name not in plan.images:
            raise HpcmlError(f"no image {name!r} in {plan.workflow.path}; images: {', '.join(plan.image_order)}")
        while name is not None and name not in wanted:
            wanted.add(name)
            name = plan.images[name].parent  # type: ignore[assignment]
    return [n for n in plan.image_order if n in wanted]


def needed(plan: Plan, names: Iterable[str] | None, catalogs: CatalogPath) -> list[str]:
    """`select(plan, names)` less the ancestors that no requested image needs built.

    A parent is only an input of its child's build. When a requested child is already in a
    catalog (say a lab member pushed `tool` but not its base `tiny`), building the parent
    would be wasted work, so it is left out unless it was asked for itself. With `names`
    None every image is asked for.
    """
    order = select(plan, names)
    requested = list(order) if names is None else list(names)
    keep: set[str] = set()

    def visit(name: str) -> None:
        if name in keep:
            return
        keep.add(name)
        parent = plan.images[name].parent
        if parent is not None and not _in_catalog(catalogs, plan.images[name].key):
            visit(parent)

    for name in requested:
        visit(name)
    return [n for n in order if n in keep]


def _in_catalog(catalogs: CatalogPath, key: str) -> bool:
    try:
        return catalogs.lookup(key) is not None
    except (HpcmlError, OSError):
        return False  # an unreadable entry: keep the parent; ensure_one reports the problem


def build_images(
    plan: Plan,
    settings: Settings,
    *,
    names: Sequence[str] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
    scan: bool = False,
) -> BuildReport:
    """Bring every selected image into the catalog; never raises for a single failed build.

    Ancestors of requested images that are already in a catalog are not built (`needed`).
    Images published here are scanned when the setting `scan_on_publish` is on; with
    `scan` (`hpcml build --scan`) cached images that were never scanned are scanned too.
    A scan's outcome is a "scanned" event; a failed scan does not fail the build.
    """
    builder = _Builder(plan, settings, runner or LocalRunner(), progress or (lambda e: None))
    order = needed(plan, names, builder.path)
    report = BuildReport()
    jobs = max(1, jobs or settings.build_jobs)
    pending = list(order)
    running: dict[Future[ImageResult], str] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="hpcml-build") as pool:
        while pending or running:
            for name in list(pending):
                parent = plan.images[name].parent
                if parent not in order:
                    parent = None  # not needed: this image is in a catalog (see `needed`)
                parent_result = report.results.get(parent) if parent else None
                if parent and parent_result is None:
                    continue  # parent still running or queued
                pending.remove(name)
                if parent_result is not None and parent_result.sif is None:
                    result = builder.skip(name, f"parent {parent} failed")
                    report.results[name] = result
                    continue
                running[pool.submit(builder.ensure_one, name, parent_result)] = name
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                name = running.pop(fut)
                report.results[name] = fut.result()
    report.results = {n: report.results[n] for n in order}
    if scan or settings.scan_on_publish:
        from hpcml.images.scan import scan_built  # the scan extra, imported only when scanning

        scan_built(report, settings, builder.path, builder.emit, runner or LocalRunner(), cached_too=scan)
    return report


class _Builder:
    """The per-image work, shared by the build threads."""

    def __init__(self, plan: Plan, settings: Settings, runner: Runner, progress: Progress):
        self.plan, self.settings, self.progress = plan, settings, progress
        self.app = Apptainer(runner, settings.apptainer)
        self.path = catalog_path(settings, runner)
        self._version: str | None = None
        self._lock = threading.Lock()

    def emit(self, name: str, state: State, **kw: object) -> None:
        self.progress(ImageEvent(name, self.plan.images[name].key, state, **kw))  # type: ignore[arg-type]

    def skip(self, name: str, why: str) -> ImageResult:
        self.emit(name, "skipped", message=why)
        return ImageResult(name, self.plan.images[name].key, "skipped", error=why)

    def apptainer_version(self) -> str:
        with self._lock:
            if self._version is None:
                self._version = self.app.version()
            return self._version

    def ensure_one(self, name: str, parent: ImageResult | None) -> ImageResult:
        image = self.plan.images[name]
        try:
            entry = self.path.resolve(image.key)
            if entry is not None:
                self.emit(name, "cached", sif=str(entry.sif))
                return ImageResult(name, image.key, "cached", str(entry.sif))
            target = self.path.writable()
            on_wait = lambda owner: self.emit(name, "waiting", message=_holder(owner))  # noqa: E731
            with target.lock(image.key, on_wait=on_wait, stale_after_s=self.settings.lock_stale_after) as lock:
                entry = self.path.resolve(image.key)  # built by someone else while we waited
                if entry is not None:
                    self.emit(name, "cached", sif=str(entry.sif), message="built by another process")
                    return ImageResult(name, image.key, "cached", str(entry.sif))
                return self.build(image, target, self.parent_sif(image, parent), lock.still_held)
        except (HpcmlError, OSError) as err:
            self.emit(name, "failed", message=str(err))
            return ImageResult(name, image.key, "failed", error=str(err))

    def parent_sif(self, image: ImagePlan, parent: ImageResult | None) -> str | None:
        if parent is not None:
            return parent.sif
        if image.parent_key is None:
            return None
        # A `catalog:` base: not built here, it must already be in a catalog.
        entry = self.path.resolve(image.parent_key)
        if entry is None:
            raise BuildError(
                f"base image {image.image.base_ref} (key {image.parent_key[:12]}) is in no catalog "
                f"({', '.join(str(c.root) for c in self.path.catalogs)})"
            )
        return str(entry.sif)

    def build(self, image: ImagePlan, target: Catalog, parent_sif: str | None,
              owned: Callable[[], bool] | None = None) -> ImageResult:
        name = image.name
        if self.settings.require_signatures and not self.settings.signing_key:
            # Checked before building: an unsigned image would be published into the lab
            # catalog as "done", then refused by everyone (this user included) on first use.
            raise BuildError(
                f"image {name} (key {image.key[:12]}) is in no catalog and would be built unsigned, but "
                "require_signatures is set, so nobody could use it; set signing_key to the lab's "
                "private key (docs/configuration.md), or ask whoever holds it to build and push it"
            )
        if image.image.host_setup and name not in self.settings.allow_setup:
            # Checked where host code would run: the plan may come from other settings.
            raise BuildError(f"image {name}: its %setup/%pre would run on this build host, but the setting "
                             "allow_setup does not name it here (docs/configuration.md)")
        version = self.apptainer_version()
        bdir = target.build_dir(name)
        # Every path of the build goes through the directory's descriptor (catalog.BuildDir):
        # a lab member who renames things in the catalog's tmp/ cannot redirect it (issue 12).
        tmp = bdir.here
        # The build's output streams into build.log inside the catalog as it runs: users can
        # follow a long build, and a builder killed mid-way leaves its log (gc'd after a day).
        build_log = tmp / "build.log"
        started = time.monotonic()
        fds: list[int] = []
        try:
            os.close(os.open(build_log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            self.emit(name, "building", log=str(bdir.path / "build.log"))
            def_path, out = Path(f"{name}.def"), Path(f"{name}.sif")
            # Apptainer gets them through the descriptor it inherits (it resolves paths once,
            # early); %files names stay relative to its working directory, this directory.
            def_arg, out_arg = str(bdir.child_path / def_path), str(bdir.child_path / out)
            # Build only from copies of the hashed inputs, under generated names (staging.py).
            staged = stage_inputs(self.plan.workflow.root, image.inputs, tmp)
            local = deffile.localize(image.definition, staged, build_args=dict(image.image.build_args),
                                     allow_host=image.image.host_setup)
            fds = [bdir.fd]
            if parent_sif is not None:
                # The parent is held open and checked on that descriptor: a member who renames
                # another file onto its catalog path during the build changes nothing.
                fds.append(self.pin_parent(image, parent_sif))
                parent_sif = f"/proc/self/fd/{fds[-1]}"
            text = deffile.bind(local, parent_sif=parent_sif, name=name, key=image.key, version=__version__)
            with open(os.open(tmp / def_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600),
                      "w", encoding="utf-8") as fh:
                fh.write(text)
            ca = self.ca_binds(image, tmp, bdir.path)
            binds = list(self.settings.build_binds) + ca
            build_args = image.image.build_args  # validated: buildargs.VALUE_RE, in the key
            argv = self.app.build_argv(def_arg, out_arg, self.settings.build_flags, binds, build_args)
            with open(build_log, "a", encoding="utf-8") as fh:  # made above, O_NOFOLLOW, in a 0700 directory
                fh.write(_log_header(argv, str(bdir.path), text))
            done = self.app.build(def_arg, out_arg, flags=self.settings.build_flags, binds=binds,
                                  cwd=str(tmp), log_path=str(build_log), build_args=build_args, pass_fds=fds)
            seconds = time.monotonic() - started
            with open(build_log, "a", encoding="utf-8") as fh:
                fh.write(f"\n# ---- exit: {done.returncode} after {seconds:.1f}s\n")
            log_text = build_log.read_text(encoding="utf-8", errors="replace")
            out = tmp / out
            if ca and bdir.moved():
                # Bind sources are real paths (Apptainer cannot bind through a descriptor):
                # the directory moved, so the CA bundle the build saw may not be ours.
                raise BuildError(f"image {name}: {bdir.path} was moved by someone during the build, so what "
                                 "it bound (the CA bundle) may not be what hpcml put there; published nothing")
            if not done.ok or not out.is_file():
                log = target.write_failed_log(name, image.key, log_text)
                self.emit(name, "failed", log=str(log) if log else None, seconds=seconds,
                          message=done.tail(15))
                return ImageResult(name, image.key, "failed", log=str(log) if log else None,
                                   seconds=seconds, error=f"apptainer build exited {done.returncode}:\n{done.tail(15)}")
            signed = False
            if self.settings.signing_key:
                self.app.sign(str(out), self.settings.signing_key)
                signed = True
                if self.settings.require_signatures and self.path.verify_signature is not None:
                    self.path.verify_signature(out)  # a key that is not the lab's: publish nothing
            manifest = new_manifest(
                key=image.key, name=name, definition=image.definition, inputs=image.inputs,
                parent_key=image.parent_key, sif=out, apptainer_version=version,
                build_seconds=seconds, log=str(target.log_path(image.key)), signed=signed,
                build_args=image.image.build_args, host_setup=image.image.host_setup,
            )
            entry = target.publish(out, manifest, log_text, owned=owned)
            self._remember(entry)
            self.emit(name, "done", sif=str(entry.sif), log=manifest.log, seconds=seconds)
            return ImageResult(name, image.key, "done", str(entry.sif), manifest.log, seconds)
        finally:
            for fd in fds[1:]:
                os.close(fd)
            bdir.close()

    def pin_parent(self, image: ImagePlan, parent_sif: str) -> int:
        """A descriptor on the parent's SIF, checked (hash, signature) on that descriptor."""
        entry = self.path.lookup(image.parent_key) if image.parent_key else None
        if entry is None or str(entry.sif) != parent_sif:
            raise BuildError(f"image {image.name}: its parent {parent_sif} is no longer in the catalog")
        fd = os.open(entry.sif, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            self.path.check_open(entry, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ca_binds(self, image: ImagePlan, tmp: Path, real: Path) -> list[str]:
        """Bind a private directory holding the CA bundle where deffile's %post prelude looks.
        `tmp` reaches the build directory through its descriptor; the bind names its real
        path `real` (Apptainer resolves binds in its own namespaces)."""
        bundle = self.settings.ca_bundle
        if not bundle:
            return []
        if not os.path.isfile(bundle):
            raise BuildError(f"ca_bundle {bundle} does not exist or is not a file")
        ca_dir = tmp / "ca"
        ca_dir.mkdir()
        # Read-write: the bind hides what the image has at CA_BIND_DIR (/var/tmp-like), and
        # tools in %post may still want to write there; the directory is thrown away.
        os.chmod(ca_dir, 0o1777)
        shutil.copyfile(bundle, ca_dir / os.path.basename(deffile.CA_BUNDLE))
        return [f"{real / 'ca'}:{deffile.CA_BIND_DIR}"]

    def _remember(self, entry: Entry) -> None:
        # We hashed this SIF while publishing; record it so the first use does not rehash.
        stat = entry.sif.stat()
        self.path.remember(entry.sif, file_fingerprint(stat, entry.manifest.sha256)
                           | {"signature_ok": False})  # still verified on first use


def _holder(owner: Owner | None) -> str:
    return f"waiting for {owner.host}:{owner.pid}" if owner else "waiting for another builder"


def _log_header(argv: Sequence[str], cwd: str, definition: str) -> str:
    return f"# argv: {' '.join(argv)}\n# cwd: {cwd}\n# ---- definition\n{definition}\n# ---- apptainer build\n"


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


__all__ = ["BuildReport", "ImageEvent", "ImageResult", "build_images", "catalog_path", "ensure", "needed", "select"]

