"""The `hpcml` command: parse options, call hpcml.api, render results.

Commands never compute; they call one api function and print its result as text or JSON.
HpcmlError becomes a message on stderr and the error's exit code.
"""

from __future__ import annotations

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


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
