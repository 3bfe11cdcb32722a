"""The `hpcml` command group: registers the commands and turns HpcmlError into a message
on stderr and the error's exit code.

Commands live beside what they show: spec_cmds (validate, schema, plan, compile),
image_cmds (build, catalog …), run_cmds (run, retry, status, logs, cancel, runs), export,
init_cmd (init); complete holds the shell completion of names. Each parses its
options, calls one `hpcml.api` function and renders the result. To add a command, write it
in its own module and register it below with one `main.add_command(...)` line.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hpcml.cli import buildjob_cmd, doctor_cmd, export, image_cmds, init_cmd, report_cmds, run_cmds, spec_cmds
from hpcml.cli.messages import error_text
from hpcml.errors import HpcmlError


class _Group(click.Group):
    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None and ctx.params.get("remote"):
            # --remote NAME: the same command and options, done on the cluster (cli/remote_cmds.py)
            from hpcml.cli.remote_cmds import proxy  # start-up speed: only remote use needs it

            cmd = proxy(cmd, (cmd.name or "",))
        return name, cmd, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcmlError as err:
            click.echo(error_text(err), err=True)
            ctx.exit(err.exit_code)
        except ModuleNotFoundError as err:
            # The zipapp leaves out compiled dependencies (paramiko): say so, not a traceback.
            from hpcml.buildinfo import missing_module  # start-up speed: only on this error

            why = missing_module(err.name)
            if why is None:
                raise
            click.echo(f"hpcml: error: {why}", err=True)
            ctx.exit(1)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from hpcml.buildinfo import describe  # start-up speed: only --version needs it

    click.echo(describe())
    ctx.exit()


@click.group(cls=_Group)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version, which build this is (zipapp, checkout, installed) and exit.")
@click.option("-r", "--remote", metavar="NAME",
              help="Do the command on the cluster [remotes.NAME] of the configuration, over SSH (docs/remote.md).")
def main(remote: str | None) -> None:
    """hpcml: ML workflows as Apptainer images and SLURM jobs.

    Example:

        hpcml run workflow.yaml
    """


main.add_command(spec_cmds.validate_cmd)
main.add_command(spec_cmds.schema_cmd)
main.add_command(spec_cmds.plan_cmd)
main.add_command(spec_cmds.compile_cmd)
main.add_command(image_cmds.build_cmd)
main.add_command(image_cmds.catalog_group)
main.add_command(run_cmds.run_cmd)
main.add_command(run_cmds.retry_cmd)
main.add_command(run_cmds.status_cmd)
main.add_command(run_cmds.logs_cmd)
main.add_command(run_cmds.cancel_cmd)
main.add_command(run_cmds.runs_cmd)
main.add_command(export.export_group)
main.add_command(report_cmds.report_cmd)
main.add_command(report_cmds.notify_cmd)
main.add_command(init_cmd.init_cmd)
main.add_command(doctor_cmd.doctor_cmd)
main.add_command(buildjob_cmd.build_image_cmd)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
