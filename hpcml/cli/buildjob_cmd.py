"""`hpcml _build-image`: what a SLURM build job runs (build_on = "slurm"; the script is
render/buildjob.py). Not for people: hidden from `--help`. Its output is the job's log."""

from __future__ import annotations

import click

from hpcml.errors import BuildError


@click.command("_build-image", hidden=True)
@click.argument("workflow", type=click.Path(dir_okay=False))
@click.argument("image")
@click.option("--key", required=True, help="The image key the waiting tasks were submitted for.")
@click.option("--settings", "settings_json", required=True, help="The submitter's build settings (JSON).")
def build_image_cmd(workflow: str, image: str, key: str, settings_json: str) -> None:
    """Build and publish IMAGE of WORKFLOW (key KEY) unless a catalog has it; exit 0 when published."""
    from hpcml import api  # start-up speed

    def show(event: object) -> None:
        name, state = getattr(event, "name", ""), getattr(event, "state", "")
        extra = getattr(event, "message", "") or getattr(event, "sif", "") or getattr(event, "log", "") or ""
        click.echo(f"hpcml: image {name}: {state}{': ' + str(extra) if extra else ''}", nl=True)

    report = api.build_image_job(workflow, image, key, progress=show, settings_json=settings_json)
    if report.failed:
        click.echo(report.failure_message, err=True)
        raise click.exceptions.Exit(BuildError.exit_code)
