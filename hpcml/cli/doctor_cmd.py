"""`hpcml doctor`: the preflight checks as a table (or `--json`); the exit code says
whether any check failed (1) or none did (0). The checks are hpcml/doctor/."""

from __future__ import annotations

import json

import click

_MARK = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@click.command("doctor")
@click.argument("workflow", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--gpu", is_flag=True, help="Also submit a short job on a GPU partition that runs --image with --nv.")
@click.option("--image", metavar="REF", help="For --gpu: a SIF path or NAME[:TAG] from a catalog (default: the image of WORKFLOW's first GPU step).")
@click.option("--partition", metavar="NAME", help="For --gpu: the partition (default: the first with GPUs).")
def doctor_cmd(workflow: str | None, as_json: bool, gpu: bool, image: str | None, partition: str | None) -> None:
    """Check that this machine and cluster can build and run hpcml workflows, and say how
    to fix what cannot (WORKFLOW: also check its steps' partitions and GPUs).

    Example:

        hpcml doctor workflow.yaml --gpu --image torch
    """
    from hpcml import api  # start-up speed: the checks import the pipeline

    report = api.doctor(workflow, gpu=gpu, image=image, partition=partition)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            click.echo(f"{_MARK.get(check.status, check.status)}  {check.title}: {check.detail}")
            if check.fix and check.status in ("warn", "fail"):
                click.echo(f"      fix: {check.fix}")
        counts = report.counts()
        click.echo(f"\n{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
    if not report.ok:
        raise click.exceptions.Exit(1)
