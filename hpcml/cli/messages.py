"""How the CLI talks on stderr: progress notes (`hpcml: …`) and errors with their exit code."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from hpcml.errors import HpcmlError, RemoteDetached, RunInterrupted, SpecError


def say(message: str) -> None:
    """One progress note on stderr, e.g. ``hpcml: executor: local (chosen with --executor)``."""
    # sys.stderr named at each call: while a rich live display is shown, sys.stderr is its
    # proxy, which prints the line above the display (click's default stream bypasses it).
    click.echo(f"hpcml: {message}", file=sys.stderr)


def error_text(err: HpcmlError) -> str:
    """What the user sees for `err`.

    Spec errors are already `file:line:col: message` lines, which editors and terminals
    link to the place; an interrupted run is no error of the user's but a report of what
    became of the run; everything else gets the program's error prefix.
    """
    if isinstance(err, SpecError):
        return str(err)
    if isinstance(err, (RunInterrupted, RemoteDetached)):
        return f"hpcml: {err}"
    return f"hpcml: error: {err}"


def fail(message: str, exit_code: int) -> NoReturn:
    """Print `message` as an error and exit with `exit_code` (for failures the library
    reports in a result rather than raises, such as the failed images of a build)."""
    click.echo(f"hpcml: error: {message}", err=True)
    raise SystemExit(exit_code)
