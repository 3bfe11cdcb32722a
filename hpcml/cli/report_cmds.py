"""`hpcml report` (a run's self-contained HTML report, or its data as JSON) and
`hpcml runs show` / `runs diff` (a run's record; what changed between two)."""

from __future__ import annotations

import json

import click

from hpcml.cli import complete, run_cmds, tables
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


@run_cmds.runs_cmd.command("show")
@click.argument("run", required=False, shell_complete=complete.runs)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (docs/report.md).")
@_where
def runs_show_cmd(run: str | None, as_json: bool, directory: str | None, workflow: str | None) -> None:
    """Show the record of RUN (default: the latest): steps, task keys, images, jobs,
    versions and settings.

    Example:

        hpcml runs show 20261202 --json | jq '.steps[].image_key'
    """
    from hpcml import api  # start-up speed: see report_cmd

    rec = api.runs_show(run, directory=directory, workflow=workflow)
    if as_json:
        click.echo(json.dumps(rec.as_dict(), indent=1, sort_keys=True))
        return
    tables.print_run_record(rec)


@run_cmds.runs_cmd.command("diff")
@click.argument("run1", shell_complete=complete.runs)
@click.argument("run2", shell_complete=complete.runs)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (docs/report.md).")
@_where
def runs_diff_cmd(run1: str, run2: str, as_json: bool, directory: str | None, workflow: str | None) -> None:
    """Say what changed from RUN1 to RUN2: each task whose key changed and why (command,
    image, upstream, other key inputs), added and removed tasks, images, settings, and the
    diff of the workflow files: the answer to "why did this rerun?".

    Example:

        hpcml runs diff 20261201 20261202
    """
    from hpcml import api  # start-up speed: see report_cmd

    d = api.runs_diff(run1, run2, directory=directory, workflow=workflow)
    if as_json:
        click.echo(json.dumps(d.as_dict(), indent=1, sort_keys=True))
        return
    tables.print_run_diff(d)


@click.command("_notify", hidden=True)
@click.argument("hpcml_dir", type=click.Path(file_okay=False))
@click.argument("run")
@click.argument("event", type=click.Choice(["finish", "failure"]))
def notify_cmd(hpcml_dir: str, run: str, event: str) -> None:
    """Run by a run's notification job: write the report and send the message once.

    Exit code 1 when the message could not be sent, or (finish) when the run did not
    succeed, so SLURM's own mail of this job says FAILED.
    """
    from hpcml import api  # start-up speed: see report_cmd

    sent = api.notify(hpcml_dir, run, event)
    state = "sent" if sent.posted else f"not sent ({sent.error or 'no webhook: SLURM mail only'})"
    click.echo(f"notify {event}: {state}; report {sent.report}\n{sent.message['text']}")
    failed_post = bool(sent.error) and sent.error not in ("already sent", "no task has failed")
    if failed_post or (event == "finish" and not sent.message["hpcml"]["ok"]):
        raise SystemExit(1)
