"""Commands for images: build, and the catalog group (list, show, path, tag, push, pull,
verify, gc)."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

import click

from hpcml.cli import complete, tables
from hpcml.cli.messages import fail, say
from hpcml.cli.progress import ImageProgress, live_display
from hpcml.errors import BuildError

if TYPE_CHECKING:
    from hpcml.config import Settings


def _settings(**flags: object) -> Settings:
    # start-up speed: api imports the pipeline; `--help` needs none of it
    from hpcml import api

    return api.load_settings({k: v for k, v in flags.items() if v is not None})


@click.command("build")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, shell_complete=complete.images)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Images built in parallel (config: build_jobs).")
@click.option("--build-on", type=click.Choice(["login", "slurm"]),
              help="Build here, or submit one SLURM build job per missing image and return (config: build_on).")
def build_cmd(file: str, images: tuple[str, ...], jobs: int | None, build_on: str | None) -> None:
    """Build the images of FILE that no catalog has yet (IMAGE…: only those and their parents).

    Parents build before children, independent images in parallel. A failed build shows
    its last lines and log path; nothing of it is published and its children are skipped.

    Example:

        hpcml build workflow.yaml torch --jobs 4
    """
    from hpcml import api  # start-up speed: see _settings

    s = _settings(build_jobs=jobs, build_on=build_on)
    if s.build_on == "slurm":
        for job in api.build_jobs(file, list(images) or None, on_message=say, settings=s):
            click.echo(f"{job.image}\tjob {job.job_id}\t{job.sif}")
        return
    with live_display(sys.stderr.isatty(), stderr=True) as live, ImageProgress(say, live=live) as progress:
        report = api.build(file, list(images) or None, jobs=jobs, progress=progress, settings=s)
    for r in report.results.values():
        if r.sif:
            click.echo(f"{r.name}\t{r.state}\t{r.sif}")
    if report.failed:
        fail(report.failure_message, BuildError.exit_code)


@click.group("catalog")
def catalog_group() -> None:
    """Inspect and manage the image catalogs (search path: config `catalogs`, HPCML_CATALOGS).

    Example:

        hpcml catalog list --json
    """


@catalog_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of images.")
def catalog_list_cmd(as_json: bool) -> None:
    """List the images of every catalog, in search order.

    Example:

        hpcml catalog list --json | jq '.[].name'
    """
    from hpcml import api  # start-up speed: see _settings

    rows = api.catalog_list(_settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    tables.print_table(
        ["name", "key", "size", "created", "tags", "catalog"],
        [[r.name, r.key[:16], tables.size(r.size), r.created, ", ".join(r.tags), r.catalog] for r in rows],
    )


@catalog_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The manifest as JSON.")
def catalog_show_cmd(ref: str, as_json: bool) -> None:
    """Show the manifest of REF (NAME[:TAG] or a key prefix of 8+ hex digits).

    Example:

        hpcml catalog show torch:v1
    """
    from hpcml import api  # start-up speed: see _settings

    doc = api.catalog_show(ref, _settings())
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for key in ("name", "key", "sif", "catalog", "tags", "size", "sha256", "parent_key", "created",
                "user", "host", "apptainer_version", "build_seconds", "signed", "log"):
        click.echo(f"{key + ':':19}{doc.get(key)}")
    for rel, digest in doc.get("inputs") or []:  # type: ignore[union-attr]
        click.echo(f"{'input:':19}{rel} {digest[:16]}")
    click.echo("definition:")
    click.echo(str(doc["definition"]).rstrip())


@catalog_group.command("path")
@click.argument("ref")
def catalog_path_cmd(ref: str) -> None:
    """Print the SIF path of REF after checking its integrity.

    Example:

        apptainer exec "$(hpcml catalog path torch)" python3 -V
    """
    from hpcml import api  # start-up speed: see _settings

    click.echo(api.catalog_path(ref, _settings()))


@catalog_group.command("tag")
@click.argument("ref")
@click.argument("name_tag", metavar="NAME[:TAG]")
@click.option("--in", "in_catalog", type=click.Path(file_okay=False),
              help="Catalog directory to tag in (default: the first catalog holding REF).")
def catalog_tag_cmd(ref: str, name_tag: str, in_catalog: str | None) -> None:
    """Tag image REF as NAME[:TAG] (default tag: latest) in the catalog holding it.

    Tagged images are never garbage-collected; workflows use them as `from: catalog:NAME:TAG`.
    A tag is seen only by those who search its catalog: after a push, tag in the lab
    catalog with --in.

    Example:

        hpcml catalog tag 3f2a9c01 torch:v1 --in /shared/lab/hpcml
    """
    from hpcml import api  # start-up speed: see _settings

    key = api.catalog_tag(ref, name_tag, _settings(), in_catalog)
    click.echo(f"{name_tag} -> {key}")


@catalog_group.command("push")
@click.argument("ref")
@click.option("--to", "dest", type=click.Path(file_okay=False), help="Catalog directory (default: the last of the search path).")
def catalog_push_cmd(ref: str, dest: str | None) -> None:
    """Copy REF into a (lab) catalog.

    Example:

        hpcml catalog push torch --to /shared/lab/hpcml
    """
    from hpcml import api  # start-up speed: see _settings

    click.echo(api.catalog_push(ref, dest, _settings()))


@catalog_group.command("pull")
@click.argument("ref")
def catalog_pull_cmd(ref: str) -> None:
    """Copy REF into the first writable catalog (your cache), e.g. before going offline.

    Example:

        hpcml catalog pull torch:v1
    """
    from hpcml import api  # start-up speed: see _settings

    click.echo(api.catalog_pull(ref, _settings()))


@catalog_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of results.")
def catalog_verify_cmd(as_json: bool) -> None:
    """Rehash every image of every catalog; exit 1 if any is corrupt (or unsigned when required).

    Example:

        hpcml catalog verify
    """
    from hpcml import api  # start-up speed: see _settings

    results = api.catalog_verify(_settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        tables.print_table(["status", "name", "key", "catalog", "problem"],
                           [["ok" if r.ok else "BAD", r.name, r.key[:16], r.catalog, r.problem] for r in results])
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


@catalog_group.command("gc")
@click.option("--days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Remove untagged images not used for this many days.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of removed (or removable) files.")
def catalog_gc_cmd(days: float, dry_run: bool, as_json: bool) -> None:
    """Remove untagged images unused for DAYS, incomplete publishes and old failed-build logs
    from the writable catalogs.

    Example:

        hpcml catalog gc --days 60 --dry-run
    """
    from hpcml import api  # start-up speed: see _settings

    items = api.catalog_gc(days, dry_run, _settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in items], indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for item in items:
        click.echo(f"{verb} {item.path} ({item.reason}, {tables.size(item.size)})")
    click.echo(f"{verb} {len(items)} files, {tables.size(sum(i.size for i in items))}")
