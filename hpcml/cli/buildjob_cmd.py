"""`hpcml _build-image`: what a SLURM build job runs (build_on = "slurm"; the script is
render/buildjob.py). Not for people: hidden from `--help`. Its output is the job's log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hpcml.errors import BuildError

if TYPE_CHECKING:
    from hpcml.images.ensure import ImageEvent


@click.command("_build-image", hidden=True)
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.argument("image")
@click.option("--key", required=True, help="The image key the waiting tasks were submitted for.")
@click.option("--settings", "settings_json", required=True, help="The submitter's build settings (JSON).")
def build_image_cmd(workflow: str, image: str, key: str, settings_json: str) -> None:
    """Build and publish IMAGE of WORKFLOW (key KEY) unless a catalog has it; exit 0 when published."""
    from hpcml import api  # start-up speed

    def show(event: ImageEvent) -> None:
        extra = event.message or event.sif or event.log or ""
        click.echo(f"hpcml: image {event.name}: {event.state}{': ' + extra if extra else ''}")

    report = api.build_image_job(workflow, image, key, progress=show, settings_json=settings_json)
    if report.failed:
        click.echo(report.failure_message, err=True)
        # Last, so that the tail `hpcml status` shows always names what failed.
        for r in report.failed:
            click.echo(f"hpcml: image {r.name}: build {r.state}" + (f"; log: {r.log}" if r.log else ""), err=True)
        raise click.exceptions.Exit(BuildError.exit_code)
