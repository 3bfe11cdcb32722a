"""Tables and sizes the commands print: plan, catalog and run status.

rich is imported inside the functions that draw (start-up speed: rich costs tens of
milliseconds, and `hpcml --help` or `hpcml validate` draw no table).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import RenderableType

    from hpcml.model import Plan
    from hpcml.results import ImageJobState, RunDiff, RunRecordView, RunStatus

#: Colour of a task state in the status table; anything else (failed, cancelled…) is red.
_STATE_STYLE = {
    "completed": "green",
    "cached": "green",
    "running": "cyan",
    "pending": "white",
    "requeued": "yellow",
    "building": "cyan",
    "done": "green",
}

#: squeue reasons of a job that is simply waiting its turn (not worth a line of its own).
_USUAL_PENDING = frozenset({"None", "Priority", "Resources", "Dependency", "BeginTime", "JobArrayTaskLimit", "requeued"})


def size(n: float) -> str:
    """A byte count for people: ``size(1536) == "1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A borderless table on stdout (catalog list, verify)."""
    from rich.console import Console  # start-up speed
    from rich.table import Table  # start-up speed

    table = Table(box=None, pad_edge=False)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True).print(table)


def print_plan(p: Plan) -> None:
    """`hpcml plan`: the steps in order with their task counts, then the images and keys."""
    from rich.console import Console  # start-up speed
    from rich.table import Table  # start-up speed

    # start-up speed: plan is only loaded to draw a plan
    from hpcml.plan import describe_base, describe_extras, waived_secrets

    steps = Table(title=f"{p.workflow.name}: steps", title_justify="left")
    for col in ("step", "tasks", "image", "needs"):
        steps.add_column(col)
    for name in p.step_order:
        sp = p.steps[name]
        steps.add_row(name, str(len(sp.tasks)), sp.step.image, ", ".join(sp.step.needs) or "-")
    images = Table(title=f"{p.workflow.name}: images", title_justify="left")
    for col in ("image", "key", "from", "inputs"):
        images.add_column(col)
    for name in p.image_order:
        ip = p.images[name]
        images.add_row(name, ip.key[:16], describe_base(ip.image) + describe_extras(ip.image), str(len(ip.inputs)))
    console = Console(soft_wrap=True)
    console.print(steps)
    console.print(images)
    waived = waived_secrets(p)
    if waived:
        console.print("[bold]Marked not-a-secret[/] (literals the secret scan found, kept because a line says "
                      "`hpcml: not-a-secret`):", highlight=False)
        for line in waived:
            console.print(f"  {line}", markup=False, highlight=False)


def status_table(st: RunStatus) -> RenderableType:
    """The run's title and a table of its steps with counts per state, coloured."""
    from rich.console import Group  # start-up speed
    from rich.table import Table  # start-up speed
    from rich.text import Text  # start-up speed

    # The title on its own line: as a table title it wrapped at the (narrow) table's width.
    title = Text(f"{st.workflow}: run {st.run_id} ({st.executor})", style="italic")
    table = Table()
    for col in ("step", "tasks", "states"):
        table.add_column(col)
    for image in st.images:
        style = _STATE_STYLE.get(image.state, "red")
        table.add_row(f"image {image.image}", "build", f"[{style}]{image_label(image)}[/{style}]")
    for step, tasks in st.steps().items():
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t.label] = counts.get(t.label, 0) + 1
        parts = []
        for label, n in counts.items():
            style = _STATE_STYLE.get(label.split(" ")[0], "red")
            parts.append(f"[{style}]{n} {label}[/{style}]")
        table.add_row(step, str(len(tasks)), ", ".join(parts))
    return Group(title, table)


def image_label(image: ImageJobState) -> str:
    """`building 2m 5s (job 812)`, `done (job 812)`, `pending (job 812, another run's)`."""
    elapsed = f" {_duration(image.elapsed_s)}" if image.state == "building" and image.elapsed_s is not None else ""
    whose = ", another run's" if image.adopted else ""
    return f"{image.state}{elapsed} (job {image.job}{whose})"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def image_lines(st: RunStatus) -> list[str]:
    """What to say of each failed build job: the image, why, the log's last lines."""
    out = []
    for image in st.images:
        if image.state == "failed":
            out.append(f"image {image.image}: build job {image.job} failed · hpcml logs image:{image.image}")
            out += [f"    {line}" for line in image.detail.splitlines()]
    return out


def counts_line(counts: dict[str, int]) -> str:
    """A run's task counts on one line: ``2 pending, 1 running, 3 completed``."""
    return ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items())


def print_status(st: RunStatus, as_json: bool = False) -> None:
    """`hpcml status`: the table, then a line for each task that failed or may never start."""
    from rich.console import Console  # start-up speed

    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    console = Console(highlight=False)
    console.print(status_table(st))
    for line in image_lines(st):
        console.print(line, markup=False)
    for note in st.notes:
        console.print(f"note: {note}", markup=False)
    for t in st.tasks:
        if t.state == "pending" and t.detail and t.detail not in _USUAL_PENDING:
            # A job that may never start (bad partition limits, nodes down…) must not hide.
            console.print(f"  {t.step}/{t.index}: [yellow]pending ({t.detail})[/yellow] job {t.job}")
        if t.state not in ("completed", "cached", "pending", "running", "requeued"):
            job = f" job {t.job}" if t.job else ""
            # "failed (exit 3)" says it all; a failure without an exit code says why not
            detail = f" ({t.detail})" if t.detail and (t.state != "failed" or t.exit_code is None) else ""
            console.print(f"  {t.step}/{t.index}: [red]{t.label}[/red]{detail}{job} · hpcml logs {t.step}/{t.index}")


def print_run_record(rec: RunRecordView) -> None:
    """`hpcml runs show`: the run, its provenance, then each step with its image and tasks."""
    click.echo(f"run {rec.run_id} of {rec.workflow} ({rec.path})")
    click.echo(f"  executor {rec.executor}; {rec.cached} cached, {rec.adopted} adopted from earlier runs")
    for k, v in sorted(rec.provenance.items()):
        click.echo(f"  {k}: {v}")
    for s in rec.steps:
        jobs = f" jobs {','.join(s['jobs'])}" if s["jobs"] else ""
        click.echo(f"step {s['name']}: image {s['image']} {s['image_key'][:16]}{jobs}")
        for t in s["tasks"]:
            point = " ".join(f"{k}={v}" for k, v in t["point"].items())
            mark = " (cached)" if t["cached"] else ""
            click.echo(f"  {s['name']}/{t['index']} {t['key'][:16]} {point}{mark}".rstrip())


def print_run_diff(d: RunDiff) -> None:
    """`hpcml runs diff`: changed tasks with their reasons, then images, settings, the spec diff."""
    click.echo(f"{d.a} → {d.b}: {len(d.tasks)} task(s) differ, {d.unchanged} unchanged")
    for c in d.tasks:
        point = "".join(f" {k}={v}" for k, v in c.point.items())
        why = f": {', '.join(c.reasons)}" if c.reasons else ""
        click.echo(f"  {c.change:<8} {c.label}{point}{why}")
    for name, a, b in d.images:
        click.echo(f"  image {name}: {a[:16] or '-'} → {b[:16] or '-'}")
    for name, a, b in d.settings:
        click.echo(f"  setting {name}: {a or '-'} → {b or '-'}")
    if d.spec:
        click.echo(d.spec.rstrip("\n"))
