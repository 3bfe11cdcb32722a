"""`hpcml export snakemake`: a workflow as a Snakefile, to run inside a larger pipeline."""

from __future__ import annotations

import shlex
import sys

import click

from hpcml.cli.messages import say
from hpcml.cli.progress import ImageProgress, live_display


@click.group("export")
def export_group() -> None:
    """Write a workflow in another tool's format.

    Example:

        hpcml export snakemake workflow.yaml -o Snakefile
    """


@export_group.command("snakemake")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="Snakefile", show_default=True, type=click.Path(dir_okay=False),
              help="The Snakefile to write (replaced atomically).")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the images the steps use when no catalog has them.")
def snakemake_cmd(file: str, output: str, build: bool) -> None:
    """Write a Snakefile that runs FILE's steps under Snakemake: one rule per step, a
    matrix step as the wildcard `task` over its points, `{out}`/`{in.STEP}` as directory
    outputs/inputs, each step in its catalog image with hpcml's binding, resources in
    the SLURM plugin's names, secrets from the environment at run time.

    What Snakemake cannot do (checkpoint requeue, max_parallel) is said in the rule and
    here. Nothing is written when FILE has errors.

    Example:

        hpcml export snakemake workflow.yaml -o Snakefile && snakemake --executor slurm -j 20
    """
    from hpcml import (
        api,  # start-up speed: api imports the pipeline; `--help` needs none of it
    )

    command_line = shlex.join(["hpcml", "export", "snakemake", file, "-o", output])
    with live_display(sys.stderr.isatty(), stderr=True) as live, ImageProgress(say, live=live) as progress:
        result = api.export_snakemake(file, output, build=build, progress=progress, command_line=command_line)
    for note in result.notes:
        say(f"note: {note}")
    say(f"wrote {result.path} ({len(result.rules)} rules: {', '.join(result.rules)})")
