"""`hpcml report`: a run's self-contained HTML report, or its data as JSON."""

from __future__ import annotations

import json

import click

from hpcml.cli import complete
from hpcml.cli.run_cmds import _where


@click.command("report")
@click.argument("run", required=False, shell_complete=complete.runs)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="HTML file to write (default: .hpcml/runs/RUN/report.html).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's trace as one JSON object instead (docs/report.md).")
@_where
def report_cmd(run: str | None, output: str | None, as_json: bool, directory: str | None, workflow: str | None) -> None:
    """Write the report of RUN (default: the latest run here): one HTML file with the
    summary (wall time, CPU- and GPU-hours), the DAG, a timeline of every task and attempt,
    a table of tasks (failures first), the images and the run's provenance. It needs no
    network: open it from the cluster's file system or send it as an attachment.

    Example:

        hpcml report -o report.html && hpcml report --json | jq .gpu_hours
    """
    from hpcml import api  # start-up speed: the API imports the pipeline

    result = api.report(run, output=output, html=not as_json, directory=directory, workflow=workflow)
    if as_json:
        click.echo(json.dumps(result.trace.as_dict(), indent=1, sort_keys=True))
        return
    tr = result.trace
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in tr.counts.items())
    click.echo(f"run {tr.run}: {counts}; {tr.gpu_hours:.3f} GPU-hours; report in {result.path}")
