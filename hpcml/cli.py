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


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
