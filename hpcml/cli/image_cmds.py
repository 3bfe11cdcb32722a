"""Commands for images: build, and the catalog group (list, show, path, tag, push, pull,
verify, scan, gc)."""

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
@click.option("--scan", is_flag=True,
              help="Scan the images afterwards (SBOM + vulnerability audit; cached ones only if never scanned). "
                   "The setting scan_on_publish scans every newly published image.")
def build_cmd(file: str, images: tuple[str, ...], jobs: int | None, build_on: str | None, scan: bool) -> None:
    """Build the images of FILE that no catalog has yet (IMAGE…: only those and their parents).

    Parents build before children, independent images in parallel. A failed build shows
    its last lines and log path; nothing of it is published and its children are skipped.

    Example:

        hpcml build workflow.yaml torch --jobs 4
    """
    from hpcml import api  # start-up speed: see _settings

    s = _settings(build_jobs=jobs, build_on=build_on, scan_on_publish=True if scan and build_on == "slurm" else None)
    if s.build_on == "slurm":
        for job in api.build_jobs(file, list(images) or None, on_message=say, settings=s):
            click.echo(f"{job.image}\tjob {job.job_id}\t{job.sif}")
        return
    with live_display(sys.stderr.isatty(), stderr=True) as live, ImageProgress(say, live=live) as progress:
        report = api.build(file, list(images) or None, jobs=jobs, progress=progress, settings=s, scan=scan)
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
        ["name", "key", "size", "created", "tags", "scan", "catalog"],
        [[r.name, r.key[:16], tables.size(r.size), r.created, ", ".join(r.tags), scan_cell(r.scan), r.catalog]
         for r in rows],
    )


def scan_cell(scan: dict[str, object] | None) -> str:
    """`catalog list`'s scan column: 'not scanned', or when and the counts by severity,
    e.g. '2026-12-02 C1/H0/M0/L0' (U: severity unknown), then '!py' / '!os' when the image's
    Python distributions / OS packages were listed but not audited."""
    if scan is None:
        return "not scanned"
    if "error" in scan:
        return "unreadable scan"
    counts: dict[str, int] = scan["counts"]  # type: ignore[assignment]
    cells = "/".join(f"{sev[0].upper()}{counts.get(sev, 0)}" for sev in ("critical", "high", "medium", "low"))
    if counts.get("unknown"):
        cells += f"/U{counts['unknown']}"
    gaps = "".join(f" !{g}" for g, key in (("py", "python_audited"), ("os", "os_audited")) if scan.get(key) is False)
    return f"{str(scan['scanned'])[:10]} {cells}{gaps}"


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
    _show_scan(doc.get("scan"))  # type: ignore[arg-type]
    click.echo("definition:")
    click.echo(str(doc["definition"]).rstrip())


def _show_scan(scan: dict[str, object] | None) -> None:
    if scan is None:
        click.echo(f"{'scanned:':19}never (hpcml catalog scan REF)")
        return
    from hpcml.images.scan import ScanRecord  # start-up speed

    record = ScanRecord(**scan)  # type: ignore[arg-type]
    click.echo(f"{'scanned:':19}{record.scanned}")
    for line in scan_report_lines(record):
        click.echo(f"{'':19}{line}")


def scan_report_lines(record: object) -> list[str]:
    """What a scan found, a line each: packages, per group what it was audited against (or
    that it was NOT audited, and why), the SBOM's path, then one line per finding, worst first."""
    from hpcml.images.advisories import RANK  # start-up speed
    from hpcml.images.scan import ScanRecord  # start-up speed

    assert isinstance(record, ScanRecord)
    pkgs = ", ".join(f"{n} {eco}" for eco, n in sorted(record.packages.items())) or "none found"
    counts = ", ".join(f"{record.counts.get(sev, 0)} {sev}" for sev in ("critical", "high", "medium", "low", "unknown"))
    partial = " (incomplete: some packages were NOT audited, see below)" if any(
        a["packages"] and not a["audited"] for a in record.audits) else ""
    lines = [f"packages: {pkgs}" + (f" ({record.os})" if record.os else ""), f"vulnerabilities: {counts}{partial}"]
    for audit in record.audits:
        group = "Python" if audit["group"] == "python" else "OS"
        if not audit["packages"]:
            continue
        if audit["audited"]:
            lines.append(f"{group} packages audited against: {'; '.join(audit['against'])}")
        notes = list(audit["notes"])
        lines += [f"{group}: {n}" for n in notes[:6]]
    lines += [f"note: {n}" for n in record.notes[:5]]
    lines.append(f"sbom: {record.sbom}")
    for f in sorted(record.findings, key=lambda f: (-RANK[f["severity"]], f["package"], f["id"])):
        fixed = f" (fixed in {', '.join(f['fixed'])})" if f["fixed"] else " (no fix listed)"
        aliases = f" [{', '.join(f['aliases'])}]" if f["aliases"] else ""
        lines.append(f"{f['severity'].upper()} {f['id']}{aliases} {f['package']} {f['version']}{fixed}: {f['summary'][:120]}")
    return lines


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


@catalog_group.command("scan")
@click.argument("refs", nargs=-1)
@click.option("--all", "all_images", is_flag=True, help="Every image of every catalog in the search path.")
@click.option("--stale", metavar="DURATION",
              help="Only images not scanned for DURATION (e.g. 7d, 12h), for a cron job.")
@click.option("--fail-on", type=click.Choice(["low", "medium", "high", "critical"]),
              help="Exit 1 if a finding is at this severity or above (or of unknown severity), or if "
                   "an image's Python distributions could not be audited.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of scan records.")
def catalog_scan_cmd(refs: tuple[str, ...], all_images: bool, stale: str | None, fail_on: str | None,
                     as_json: bool) -> None:
    """Scan REF… (or --all): list each image's OS packages and Python distributions from the
    SIF without running it, audit them against the configured advisories, and store an SBOM
    (CycloneDX JSON) and a summary beside the manifest. Needs `pip install 'hpcml[scan]'`.

    Example:

        hpcml catalog scan --all --stale 7d --fail-on high
    """
    from hpcml import api  # start-up speed: see _settings
    from hpcml.spec.units import parse_duration  # start-up speed

    try:
        stale_s = parse_duration(stale) if stale is not None else None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--stale") from None
    outcomes = []
    for outcome in api.catalog_scan(list(refs), all_images=all_images, stale_s=stale_s, settings=_settings()):
        outcomes.append(outcome)
        if not as_json:
            _print_outcome(outcome)
    if as_json:
        click.echo(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
    problems = [f"{o.name} ({o.key[:12]}): {o.error}" for o in outcomes if o.error]
    if fail_on is not None:
        for o in outcomes:
            if o.record is None:
                continue
            hits = o.record.at_or_above(fail_on)
            if hits:
                problems.append(f"{o.name} ({o.key[:12]}): {len(hits)} finding(s) at {fail_on} or above "
                                f"(or unrated): {', '.join(sorted({h['id'] for h in hits}))}")
            if o.record.audited("python") is False:
                problems.append(f"{o.name} ({o.key[:12]}): its Python distributions were not audited")
    if problems:
        fail("\n  ".join(["scan:", *problems]), 1)


def _print_outcome(outcome: object) -> None:
    from hpcml.images.scan import ScanOutcome  # start-up speed

    assert isinstance(outcome, ScanOutcome)
    head = f"{outcome.name} {outcome.key[:12]}"
    if outcome.error:
        click.echo(f"{head}: scan failed: {outcome.error}")
        return
    assert outcome.record is not None
    if outcome.skipped:
        click.echo(f"{head}: skipped, {outcome.skipped} (within --stale)")
        return
    click.echo(f"{head}: scanned {outcome.record.scanned}")
    for line in scan_report_lines(outcome.record):
        click.echo(f"  {line}")


def _outcome_json(outcome: object) -> dict[str, object]:
    from hpcml.images.scan import ScanOutcome  # start-up speed

    assert isinstance(outcome, ScanOutcome)
    return dataclasses.asdict(outcome)


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
