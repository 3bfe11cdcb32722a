"""`hpcml init`: a starter project in a directory."""

from __future__ import annotations

import click


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("-t", "--template", is_flag=False, flag_value="",
              help="Starter template (default: cpu-sweep); without a value: list them.")
@click.option("--list", "list_templates", is_flag=True, help="List the templates and exit.")
def init_cmd(directory: str, template: str | None, list_templates: bool) -> None:
    """Write a starter project into DIRECTORY (default: here): workflow.yaml and src/.

    A requirements.txt (or the pip list of an environment.yml) already in DIRECTORY is
    installed into the image. No existing file is ever overwritten: if one of the files
    to write exists, nothing is written.

    Example:

        hpcml init my-sweep --template gpu-train
    """
    # start-up speed: api imports the pipeline; `--help` needs none of it
    from hpcml import api

    if list_templates or template == "":
        for name, about in api.init_templates().items():
            click.echo(f"{name:<10} {about}")
        return
    result = api.init(directory, template or None)
    for path in result.files:
        click.echo(f"wrote {path}")
    if result.adopted:
        click.echo(f"adopted {result.adopted} into the image")
    for entry in result.not_adopted:
        click.echo(f"not adopted (see the comment in workflow.yaml): {entry}")
    wf = f"{directory.rstrip('/')}/workflow.yaml" if directory != "." else "workflow.yaml"
    click.echo(f"next: hpcml validate {wf} && hpcml plan {wf} && hpcml run {wf}")
