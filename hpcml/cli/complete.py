"""Shell completion of the names a command takes: step names (`logs STEP[/TASK]`), image
names (`build FILE IMAGE…`), step lists (`run --only a,b`) and run ids (`status RUN`, `cancel RUN`, `logs --run`).

Click runs these when the shell asks (`_HPCML_COMPLETE=bash_complete hpcml …`, set up as
docs/completion.md says). The workflow comes from the command line (`--workflow`, FILE,
`-C DIR`) or ./workflow.yaml; see api.completion_names.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem


def _where(ctx: click.Context) -> tuple[str | None, str | None]:
    """(workflow file, directory) from what is already on the command line."""
    params = ctx.params
    workflow = params.get("workflow") or params.get("file")
    return (str(workflow) if workflow else None), params.get("directory")


def steps(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Step names of the workflow (for STEP[/TASK])."""
    from hpcml import api  # start-up speed: only on <TAB>

    workflow, directory = _where(ctx)
    return [CompletionItem(s) for s in api.completion_names("steps", workflow=workflow, directory=directory)
            if s.startswith(incomplete)]


def step_list(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Step names for STEP[,STEP] options (`run --only a,b`): the last name is completed."""
    from hpcml import api  # start-up speed: only on <TAB>

    done, _, last = incomplete.rpartition(",")
    head = f"{done}," if done else ""
    taken = set(done.split(","))
    workflow, directory = _where(ctx)
    return [CompletionItem(head + s) for s in api.completion_names("steps", workflow=workflow, directory=directory)
            if s.startswith(last) and s not in taken]


def images(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Image names of FILE (for `build FILE IMAGE…`)."""
    from hpcml import api  # start-up speed: only on <TAB>

    workflow, directory = _where(ctx)
    return [CompletionItem(s) for s in api.completion_names("images", workflow=workflow, directory=directory)
            if s.startswith(incomplete)]


def runs(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Run ids of the workflow directory, newest first."""
    from hpcml import api  # start-up speed: only on <TAB>

    workflow, directory = _where(ctx)
    return [CompletionItem(r) for r in api.completion_runs(workflow=workflow, directory=directory)
            if r.startswith(incomplete)]
