"""The `hpcml` command: parse options, call hpcml.api, render results.

Commands never compute; they call one api function and print its result as text or JSON.
HpcmlError becomes a message on stderr and the error's exit code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from hpcml import __version__
from hpcml.errors import HpcmlError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcmlError as err:
            click.echo(f"hpcml: error: {err}" if not _is_multiline(err) else str(err), err=True)
            ctx.exit(err.exit_code)


def _is_multiline(err: HpcmlError) -> bool:
    return "\n" in str(err) or str(err).count(":") >= 3 and str(err)[0] != " "


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="hpcml")
def main() -> None:
    """hpcml: ML workflows as Apptainer images and SLURM jobs.

    Example:

        hpcml run workflow.yaml
    """


# ---- spec: validate / schema (owner: spec) --------------------------------------------


@main.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_cmd(file: str) -> None:
    """Check FILE against the workflow spec; print every problem as file:line:col.

    Exits 0 when the file is valid and 2 when it is not. Nothing is built or submitted.

    Example:

        hpcml validate workflows/quickstart.yaml
    """
    from hpcml import api

    click.echo(api.validate(file).summary)


@main.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the schema to this file.")
def schema_cmd(output: str | None) -> None:
    """Print the JSON Schema of workflow.yaml, for editors (see docs/editor.md).

    Example:

        hpcml schema -o .vscode/hpcml.schema.json
    """
    import json

    from hpcml import api

    text = json.dumps(api.schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, output)


# ---- plan / compile (owner: plan) -------------------------------------------------------


@main.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (shape in docs/plan.md).")
def plan_cmd(file: str, as_json: bool) -> None:
    """Show what FILE would run: steps in order with their tasks, images and their keys.

    Nothing is built or submitted. `catalog:` bases show their reference, not a key.

    Example:

        hpcml plan workflows/sweep.yaml --json | jq '.steps[].tasks | length'
    """
    import json

    from hpcml import api
    from hpcml import plan as plan_mod

    p = api.plan(file)
    if as_json:
        click.echo(json.dumps(plan_mod.to_document(p), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    steps = Table(title=f"{p.workflow.name}: steps", title_justify="left")
    for col in ("step", "tasks", "image", "needs"):
        steps.add_column(col)
    for name in p.step_order:
        sp = p.steps[name]
        steps.add_row(name, str(len(sp.tasks)), sp.step.image, ", ".join(sp.step.needs) or "-")
    images = Table(title=f"{p.workflow.name}: images", title_justify="left")
    for col in ("image", "key", "from", "inputs"):
        images.add_column(col)
    for name in p.image_order:
        ip = p.images[name]
        images.add_row(name, ip.key[:16], plan_mod.describe_base(ip.image), str(len(ip.inputs)))
    console = Console(soft_wrap=True)
    console.print(steps)
    console.print(images)


@main.command("compile")
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
    from hpcml import api

    result = api.compile(file, out_dir)
    for path in result.files:
        click.echo(path)
    click.echo(result.keys_file)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
