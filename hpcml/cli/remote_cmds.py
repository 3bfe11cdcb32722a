"""`hpcml --remote NAME COMMAND …`: the same commands, done on a cluster over SSH.

The group's `--remote/-r` option swaps each command for a proxy with the same parameters
(so parsing, `--help` and local checks such as "FILE exists" stay as they are) whose
callback hands the parsed parameters to `api.remote_invoke` and renders what comes back.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hpcml.cli import tables
from hpcml.cli.messages import say
from hpcml.cli.progress import live_display

if TYPE_CHECKING:
    from hpcml.results import RunStatus


def proxy(cmd: click.Command, path: tuple[str, ...]) -> click.Command:
    """`cmd` with the same parameters, done on the remote named by the root's --remote."""
    if isinstance(cmd, click.Group):
        def group_callback(**params: Any) -> None:
            # a group that is also a command (`runs`): remote only when no subcommand follows
            if click.get_current_context().invoked_subcommand is None:
                _remote(path, params)

        return click.Group(
            cmd.name, commands={n: proxy(c, (*path, n)) for n, c in cmd.commands.items()},
            params=cmd.params, help=cmd.help, callback=group_callback,
            invoke_without_command=cmd.invoke_without_command,
        )
    return click.Command(cmd.name, params=cmd.params, help=cmd.help,
                         callback=lambda **params: _remote(path, params))


def _write(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()

    return write


def _remote(path: tuple[str, ...], params: dict[str, Any]) -> None:
    from hpcml import api  # start-up speed: api imports the pipeline

    name = click.get_current_context().find_root().params["remote"]
    tty = sys.stdout.isatty()
    with live_display(tty and path in (("run",), ("retry",))) as live:
        last: list[dict[str, int]] = []

        def on_update(st: RunStatus) -> None:
            if live is not None:
                live.update(tables.status_table(st))
            elif not last or st.counts != last[0]:
                last[:] = [st.counts]
                click.echo(tables.counts_line(st.counts))

        outcome = api.remote_invoke(name, path, params, out=_write(sys.stdout), err=_write(sys.stderr),
                                    on_message=say, on_update=on_update, cwd=os.getcwd(), tty=tty)
    if outcome.status is not None:
        tables.print_status(outcome.status)
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)
