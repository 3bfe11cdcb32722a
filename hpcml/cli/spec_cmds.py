"""Commands that read a workflow file and build nothing: validate, schema, plan, compile."""

from __future__ import annotations

import json

import click

from hpcml.cli import tables
from hpcml.fsutil import atomic_write


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_cmd(file: str) -> None:
    """Check FILE against the workflow spec; print every problem as file:line:col.

    Exits 0 when the file is valid and 2 when it is not. Nothing is built or submitted.

    Example:

        hpcml validate workflows/quickstart.yaml
    """
    # start-up speed: api imports the pipeline; `--help` needs none of it
    from hpcml import api

    click.echo(api.validate(file).summary)


@click.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the schema to this file.")
def schema_cmd(output: str | None) -> None:
    """Print the JSON Schema of workflow.yaml, for editors (see docs/editor.md).

    Example:

        hpcml schema -o .vscode/hpcml.schema.json
    """
    from hpcml import api  # start-up speed: see validate_cmd

    text = json.dumps(api.schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    atomic_write(output, text)


@click.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (shape in docs/plan.md).")
def plan_cmd(file: str, as_json: bool) -> None:
    """Show what FILE would run: steps in order with their tasks, images and their keys.

    Nothing is built or submitted. `catalog:` bases show their reference, not a key.

    Example:

        hpcml plan workflows/sweep.yaml --json | jq '.steps[].tasks | length'
    """
    from hpcml import api  # start-up speed: see validate_cmd
    from hpcml import plan as plan_mod  # start-up speed: only to render a plan

    p = api.plan(file)
    if as_json:
        click.echo(json.dumps(plan_mod.to_document(p), indent=2))
        return
    tables.print_plan(p)


@click.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for <image>.def files and keys.json (created if missing).")
def compile_cmd(file: str, out_dir: str) -> None:
    """Write an Apptainer definition file for every image of FILE, and keys.json.

    Nothing is written when FILE is invalid. Build from the workflow's directory, parents
    first (keys.json lists the order): %files sources are relative to it.

    Example:

        hpcml compile workflows/quickstart.yaml -o /tmp/defs
    """
    from hpcml import api  # start-up speed: see validate_cmd

    result = api.compile(file, out_dir)
    for path in result.files:
        click.echo(path)
    click.echo(result.keys_file)
