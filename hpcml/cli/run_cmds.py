"""Commands for runs: run, status, logs, cancel, runs."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from hpcml.cli import complete, tables
from hpcml.cli.messages import say
from hpcml.cli.progress import ImageProgress, RunView, live_display

if TYPE_CHECKING:
    from hpcml.results import RunOutcome
    from hpcml.run.select import Selection

_Command = TypeVar("_Command", bound=Callable[..., None])


def _where(f: _Command) -> _Command:
    """The options that say which workflow directory's runs a command reads."""
    f = click.option("--workflow", type=click.Path(dir_okay=False), help="Workflow file whose runs to use.")(f)
    return click.option("-C", "directory", type=click.Path(file_okay=False), help="Workflow directory (default: here).")(f)


def _selection_options(f: _Command) -> _Command:
    """--only/--from/--until/--force: which steps a run may run, and which despite the cache."""
    for name, dest, text in reversed((
        ("--only", "only", "Run only these steps (STEP[,STEP]); their upstream outputs must be complete or queued."),
        ("--from", "start", "Run these steps and everything downstream of them; upstream outputs come from the cache."),
        ("--until", "until", "Run these steps and everything they need; nothing downstream of them."),
        ("--force", "force", "Rerun these steps (and the tasks downstream of them) even where complete."),
    )):
        f = click.option(name, dest, multiple=True, metavar="STEP[,STEP]", help=text,
                         shell_complete=complete.step_list)(f)
    return f


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--executor", type=click.Choice(["slurm", "local"]), help="Where tasks run (default: config, else SLURM if sbatch works, else local).")
@click.option("--watch/--detach", default=None, help="Follow the run until it ends (default on a terminal), or return once submitted.")
@click.option("--build-on", type=click.Choice(["login", "slurm"]),
              help="Build missing images here or as SLURM jobs the tasks wait for (config: build_on).")
@_selection_options
def run_cmd(file: str, executor: str | None, watch: bool | None, build_on: str | None,
            only: tuple[str, ...], start: tuple[str, ...], until: tuple[str, ...], force: tuple[str, ...]) -> None:
    """Build or reuse the images, then submit every task of FILE not already complete.

    Tasks whose key already completed are skipped (resume by default); tasks still queued
    by an earlier run are depended on, not resubmitted. --only, --from and --until narrow
    the run to some steps (the others' outputs must be complete or queued, else nothing
    is submitted and the missing ones are named); --force reruns steps despite the cache.
    The exit code is 0 only when every task completed (or, with --detach, when everything
    was submitted); 130 when interrupted.

    Example:

    \b
        hpcml run workflow.yaml --detach && hpcml status
        hpcml run workflow.yaml --from train --force train
    """
    from hpcml.run.select import Selection, split_names  # start-up speed: only `run` needs it

    names = [split_names(v) for v in (only, start, until, force)]
    selection = Selection(*names) if any(names) else None
    _finish(_run(file, executor, watch, build_on, selection))


@click.command("retry")
@click.argument("run", required=False, shell_complete=complete.runs)
@click.option("--executor", type=click.Choice(["slurm", "local"]), help="Where tasks run (default: where RUN ran).")
@click.option("--watch/--detach", default=None, help="Follow the retry until it ends (default on a terminal), or return once submitted.")
@_where
def retry_cmd(run: str | None, executor: str | None, watch: bool | None, directory: str | None, workflow: str | None) -> None:
    """Submit again only the tasks of RUN (default: the latest) that failed, timed out, were
    cancelled or lost, and those left behind by them, with the same keys.

    Refused while RUN still has tasks queued or running, and when its workflow file was
    edited since (the keys would differ: use `hpcml run`).

    Example:

        hpcml retry && hpcml status
    """
    from hpcml import api  # start-up speed: see _run

    detach = watch is False
    follow = sys.stdout.isatty() if watch is None else watch
    with live_display(follow and sys.stdout.isatty()) as live, ImageProgress(say, live=live) as images:
        view = RunView(api.run_progress(directory=directory, workflow=workflow), click.echo, live)
        outcome = api.retry(run, directory=directory, workflow=workflow, executor=executor, watch=follow, detach=detach,
                            on_message=say, on_update=view, on_image=images)
    _finish(outcome)


def _finish(outcome: RunOutcome) -> None:
    if outcome.status is None:
        ids = ", ".join(f"{s}={','.join(j)}" for s, j in outcome.jobs.items()) or "nothing to submit"
        click.echo(f"run {outcome.run_id}: {ids}; follow with `hpcml status`")
        return
    tables.print_status(outcome.status)
    if not outcome.ok:
        raise SystemExit(1)


def _run(file: str, executor: str | None, watch: bool | None, build_on: str | None = None,
         selection: Selection | None = None) -> RunOutcome:
    # start-up speed: api imports the pipeline; `--help` needs none of it
    from hpcml import api

    detach = watch is False  # asked for explicitly: refused by executors that cannot detach (local)
    watch = sys.stdout.isatty() if watch is None else watch
    # On a terminal a live display (image builds, then the status table); without one
    # (also where a local run is watched anyway) one line per change.
    with live_display(watch and sys.stdout.isatty()) as live, ImageProgress(say, live=live) as images:
        on_update = RunView(api.run_progress(workflow=file), click.echo, live)
        settings = api.load_settings({"build_on": build_on}) if build_on else None
        return api.run(file, executor=executor, watch=watch, detach=detach, on_message=say,
                       on_update=on_update, on_image=images, settings=settings, selection=selection)


@click.command("status")
@click.argument("run", required=False, shell_complete=complete.runs)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape in docs/running.md).")
@click.option("--watch", is_flag=True, help="Follow the run until it ends, with the live view of `hpcml run`.")
@_where
def status_cmd(run: str | None, as_json: bool, watch: bool, directory: str | None, workflow: str | None) -> None:
    """Show the state of every task of RUN (default: the latest run here).

    One squeue (and at most one sacct) for the whole run. Exit code 0 when every task
    completed, 1 when one failed, 3 while tasks are still pending or running. With
    --watch, re-attach to a run (one submitted with --detach, say) until it ends.

    Example:

        hpcml status --json | jq '.counts'
        hpcml status --watch
    """
    from hpcml import api  # start-up speed: see _run

    if watch:
        with live_display(sys.stdout.isatty() and not as_json) as live:
            view = RunView(api.run_progress(directory=directory, workflow=workflow), click.echo if not as_json else say, live)
            st = api.watch_status(run, on_update=view, directory=directory, workflow=workflow, on_message=say)
    else:
        st = api.status(run, directory=directory, workflow=workflow, on_message=say)
    tables.print_status(st, as_json)
    if not st.finished:
        raise SystemExit(3)
    if not st.ok:
        raise SystemExit(1)


@click.command("logs")
@click.argument("target", metavar="STEP[/TASK]", shell_complete=complete.steps)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the task ends.")
@click.option("--run", help="Run id (default: the latest).", shell_complete=complete.runs)
@_where
def logs_cmd(target: str, follow: bool, run: str | None, directory: str | None, workflow: str | None) -> None:
    """Print the log of a task (STEP/INDEX), of every task of STEP, or of the SLURM build
    job of an image (image:NAME, with build_on = "slurm").

    Example:

        hpcml logs train/3 -f
    """
    from hpcml import api  # start-up speed: see _run

    if follow:
        api.follow_log(target, write=lambda text: click.echo(text, nl=False), run=run,
                       directory=directory, workflow=workflow)
        return
    found = api.logs(target, run=run, directory=directory, workflow=workflow)
    for label, path in found:
        if len(found) > 1:
            click.echo(f"==> {label} ({path}) <==")
        try:
            click.echo(Path(path).read_text(errors="replace"), nl=False)
        except FileNotFoundError:
            click.echo("(no log yet: the job has not started)" if label.startswith("image:")
                       else "(no log yet: the task has not started)")


@click.command("cancel")
@click.argument("run", required=False, shell_complete=complete.runs)
@_where
def cancel_cmd(run: str | None, directory: str | None, workflow: str | None) -> None:
    """Cancel every unfinished job of RUN (default: the latest) with one scancel.

    Example:

        hpcml cancel
    """
    from hpcml import api  # start-up speed: see _run

    run_id, jobs = api.cancel(run, directory=directory, workflow=workflow)
    if not jobs:
        click.echo(f"run {run_id}: nothing to cancel (no task of it is queued or running)")
        return
    click.echo(f"run {run_id}: cancelled {len(jobs)} job(s): {' '.join(jobs)}")


@click.group("runs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of runs.")
@_where
@click.pass_context
def runs_cmd(ctx: click.Context, as_json: bool, directory: str | None, workflow: str | None) -> None:
    """List the runs of this workflow directory, oldest first; `runs show RUN` and
    `runs diff RUN1 RUN2` say what a run submitted and what changed between two.

    Example:

        hpcml runs -C ~/projects/cifar
    """
    if ctx.invoked_subcommand is not None:
        return
    from hpcml import api  # start-up speed: see _run

    items = api.runs_history(directory=directory, workflow=workflow)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in items], indent=2))
        return
    for r in items:
        unwatched = "" if r.finished else "  (not watched to the end)"
        preempted = f"; preempted ×{r.preempted} (requeued, not failures)" if r.preempted else ""
        click.echo(f"{r.run_id}  {r.executor:<6} {r.tasks:>5} tasks  {tables.counts_line(r.counts)}{preempted}{unwatched}")
