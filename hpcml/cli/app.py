"""The `hpcml` command: parse options, call hpcml.api, render results.

Commands never compute; they call one api function and print its result as text or JSON.
HpcmlError becomes a message on stderr and the error's exit code.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hpcml import __version__
from hpcml.errors import HpcmlError, SpecError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpcmlError as err:
            # Spec errors are already `file:line:col: message` lines, which editors and
            # terminals link to the place; everything else gets the program's prefix.
            click.echo(str(err) if isinstance(err, SpecError) else f"hpcml: error: {err}", err=True)
            ctx.exit(err.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="hpcml")
def main() -> None:
    """hpcml: ML workflows as Apptainer images and SLURM jobs.

    Example:

        hpcml run workflow.yaml
    """


# ---- spec: validate / schema ----


@main.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_cmd(file: str) -> None:
    """Check FILE against the workflow spec; print every problem as file:line:col.

    Exits 0 when the file is valid and 2 when it is not. Nothing is built or submitted.

    Example:

        hpcml validate workflows/quickstart.yaml
    """
    from hpcml import api

    click.echo(api.validate(file).summary)


@main.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the schema to this file.")
def schema_cmd(output: str | None) -> None:
    """Print the JSON Schema of workflow.yaml, for editors (see docs/editor.md).

    Example:

        hpcml schema -o .vscode/hpcml.schema.json
    """
    import json

    from hpcml import api

    text = json.dumps(api.schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    from hpcml.fsutil import atomic_write

    atomic_write(output, text)


# ---- plan / compile ----


@main.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (shape in docs/plan.md).")
def plan_cmd(file: str, as_json: bool) -> None:
    """Show what FILE would run: steps in order with their tasks, images and their keys.

    Nothing is built or submitted. `catalog:` bases show their reference, not a key.

    Example:

        hpcml plan workflows/sweep.yaml --json | jq '.steps[].tasks | length'
    """
    import json

    from hpcml import api
    from hpcml import plan as plan_mod

    p = api.plan(file)
    if as_json:
        click.echo(json.dumps(plan_mod.to_document(p), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

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
        images.add_row(name, ip.key[:16], plan_mod.describe_base(ip.image), str(len(ip.inputs)))
    console = Console(soft_wrap=True)
    console.print(steps)
    console.print(images)


@main.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for <image>.def files and keys.json (created if missing).")
def compile_cmd(file: str, out_dir: str) -> None:
    """Write an Apptainer definition file for every image of FILE, and keys.json.

    Nothing is written when FILE is invalid. Build from the workflow's directory, parents
    first (keys.json lists the order): %files sources are relative to it.

    Example:

        hpcml compile workflows/quickstart.yaml -o /tmp/defs
    """
    from hpcml import api

    result = api.compile(file, out_dir)
    for path in result.files:
        click.echo(path)
    click.echo(result.keys_file)


# ---- build / catalog ----


def _settings(**flags: object):  # noqa: ANN202 - config.Settings
    from hpcml import api

    return api.load_settings({k: v for k, v in flags.items() if v is not None})


@main.command("build")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Images built in parallel (config: build_jobs).")
def build_cmd(file: str, images: tuple[str, ...], jobs: int | None) -> None:
    """Build the images of FILE that no catalog has yet (IMAGE…: only those and their parents).

    Parents build before children, independent images in parallel. A failed build shows
    its last lines and log path; nothing of it is published and its children are skipped.

    Example:

        hpcml build workflow.yaml torch --jobs 4
    """
    from hpcml import api
    from hpcml.images import ensure as images_mod

    s = _settings(build_jobs=jobs)
    with images_mod.LiveProgress() as progress:
        report = api.build(file, list(images) or None, jobs=jobs, progress=progress, settings=s)
    for r in report.results.values():
        if r.sif:
            click.echo(f"{r.name}\t{r.state}\t{r.sif}")
    if report.failed:
        raise images_mod.BuildError(images_mod.failure_message(report))


@main.group("catalog")
def catalog_group() -> None:
    """Inspect and manage the image catalogs (search path: config `catalogs`, HPCML_CATALOGS).

    Example:

        hpcml catalog list --json
    """


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True).print(table)


@catalog_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of images.")
def catalog_list_cmd(as_json: bool) -> None:
    """List the images of every catalog, in search order.

    Example:

        hpcml catalog list --json | jq '.[].name'
    """
    import dataclasses
    import json

    from hpcml import api

    rows = api.catalog_list(_settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    _table(["name", "key", "size", "created", "tags", "catalog"],
           [[r.name, r.key[:16], _size(r.size), r.created, ", ".join(r.tags), r.catalog] for r in rows])


@catalog_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The manifest as JSON.")
def catalog_show_cmd(ref: str, as_json: bool) -> None:
    """Show the manifest of REF (NAME[:TAG] or a key prefix of 8+ hex digits).

    Example:

        hpcml catalog show torch:v1
    """
    import json

    from hpcml import api

    doc = api.catalog_show(ref, _settings())
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for key in ("name", "key", "sif", "catalog", "tags", "size", "sha256", "parent_key", "created",
                "user", "host", "apptainer_version", "build_seconds", "signed", "log"):
        click.echo(f"{key + ':':19}{doc.get(key)}")
    for rel, digest in doc.get("inputs") or []:  # type: ignore[union-attr]
        click.echo(f"{'input:':19}{rel} {digest[:16]}")
    click.echo("definition:")
    click.echo(str(doc["definition"]).rstrip())


@catalog_group.command("path")
@click.argument("ref")
def catalog_path_cmd(ref: str) -> None:
    """Print the SIF path of REF after checking its integrity.

    Example:

        apptainer exec "$(hpcml catalog path torch)" python3 -V
    """
    from hpcml import api

    click.echo(api.catalog_path(ref, _settings()))


@catalog_group.command("tag")
@click.argument("ref")
@click.argument("name_tag", metavar="NAME[:TAG]")
@click.option("--in", "in_catalog", type=click.Path(file_okay=False),
              help="Catalog directory to tag in (default: the first catalog holding REF).")
def catalog_tag_cmd(ref: str, name_tag: str, in_catalog: str | None) -> None:
    """Tag image REF as NAME[:TAG] (default tag: latest) in the catalog holding it.

    Tagged images are never garbage-collected; workflows use them as `from: catalog:NAME:TAG`.
    A tag is seen only by those who search its catalog: after a push, tag in the lab
    catalog with --in.

    Example:

        hpcml catalog tag 3f2a9c01 torch:v1 --in /shared/lab/hpcml
    """
    from hpcml import api

    key = api.catalog_tag(ref, name_tag, _settings(), in_catalog)
    click.echo(f"{name_tag} -> {key}")


@catalog_group.command("push")
@click.argument("ref")
@click.option("--to", "dest", type=click.Path(file_okay=False), help="Catalog directory (default: the last of the search path).")
def catalog_push_cmd(ref: str, dest: str | None) -> None:
    """Copy REF into a (lab) catalog.

    Example:

        hpcml catalog push torch --to /shared/lab/hpcml
    """
    from hpcml import api

    click.echo(api.catalog_push(ref, dest, _settings()))


@catalog_group.command("pull")
@click.argument("ref")
def catalog_pull_cmd(ref: str) -> None:
    """Copy REF into the first writable catalog (your cache), e.g. before going offline.

    Example:

        hpcml catalog pull torch:v1
    """
    from hpcml import api

    click.echo(api.catalog_pull(ref, _settings()))


@catalog_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of results.")
def catalog_verify_cmd(as_json: bool) -> None:
    """Rehash every image of every catalog; exit 1 if any is corrupt (or unsigned when required).

    Example:

        hpcml catalog verify
    """
    import dataclasses
    import json

    from hpcml import api

    results = api.catalog_verify(_settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        _table(["status", "name", "key", "catalog", "problem"],
               [["ok" if r.ok else "BAD", r.name, r.key[:16], r.catalog, r.problem] for r in results])
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


@catalog_group.command("gc")
@click.option("--days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Remove untagged images not used for this many days.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of removed (or removable) files.")
def catalog_gc_cmd(days: float, dry_run: bool, as_json: bool) -> None:
    """Remove untagged images unused for DAYS, incomplete publishes and old failed-build logs
    from the writable catalogs.

    Example:

        hpcml catalog gc --days 60 --dry-run
    """
    import dataclasses
    import json

    from hpcml import api

    items = api.catalog_gc(days, dry_run, _settings())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in items], indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for item in items:
        click.echo(f"{verb} {item.path} ({item.reason}, {_size(item.size)})")
    click.echo(f"{verb} {len(items)} files, {_size(sum(i.size for i in items))}")


# ---- run / status / logs / cancel / runs ----

_WHERE = [
    click.option("-C", "directory", type=click.Path(file_okay=False), help="Workflow directory (default: here)."),
    click.option("--workflow", type=click.Path(dir_okay=False), help="Workflow file whose runs to use."),
]


def _where(f):  # noqa: ANN001, ANN202 - click decorator
    for option in reversed(_WHERE):
        f = option(f)
    return f


_STATE_STYLE = {
    "completed": "green",
    "cached": "green",
    "running": "cyan",
    "pending": "white",
    "requeued": "yellow",
}


def _status_table(st):  # noqa: ANN001, ANN202 - runs.RunStatus → rich renderable
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # The title on its own line: as a table title it wrapped at the (narrow) table's width.
    title = Text(f"{st.workflow}: run {st.run_id} ({st.executor})", style="italic")
    table = Table()
    for col in ("step", "tasks", "states"):
        table.add_column(col)
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


#: squeue reasons of a job that is simply waiting its turn (not worth a line of its own).
_USUAL_PENDING = frozenset({"None", "Priority", "Resources", "Dependency", "BeginTime", "JobArrayTaskLimit", "requeued"})


def _print_status(st, as_json: bool = False) -> None:  # noqa: ANN001 - runs.RunStatus
    import json

    from rich.console import Console

    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    console = Console(highlight=False)
    console.print(_status_table(st))
    for t in st.tasks:
        if t.state == "pending" and t.detail and t.detail not in _USUAL_PENDING:
            # A job that may never start (bad partition limits, nodes down…) must not hide.
            console.print(f"  {t.step}/{t.index}: [yellow]pending ({t.detail})[/yellow] job {t.job}")
        if t.state not in ("completed", "cached", "pending", "running", "requeued"):
            job = f" job {t.job}" if t.job else ""
            detail = f" ({t.detail})" if t.detail and t.state != "failed" else ""
            console.print(f"  {t.step}/{t.index}: [red]{t.label}[/red]{detail}{job} · hpcml logs {t.step}/{t.index}")


class _ImageProgress:
    """Image progress during `hpcml run`: a build can take minutes, so it must never look
    idle. On a terminal a line per image in the live display, with the elapsed time;
    without one a line per change and, while building, one every `every_s` seconds."""

    def __init__(self, say, live=None, every_s: float = 30.0) -> None:  # noqa: ANN001
        import threading

        self.say, self.live, self.every_s = say, live, every_s
        self.started: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, event) -> None:  # noqa: ANN001 - images.ImageEvent
        import threading
        import time

        if event.state == "building":
            self.started[event.name] = time.monotonic()
            self.say(f"image {event.name}: building (key {event.key[:12]}; this can take minutes; log: {event.log})")
            if self.live is not None:
                self.live.update(self)
            elif self._thread is None:
                self._thread = threading.Thread(target=self._beat, daemon=True)
                self._thread.start()
            return
        begun = self.started.pop(event.name, None)
        if event.state == "done":
            self.say(f"image {event.name}: built in {event.seconds:.0f}s")
        elif event.state == "cached":
            self.say(f"image {event.name}: cached{f' ({event.message})' if event.message else ''}")
        elif event.state == "waiting":
            self.say(f"image {event.name}: {event.message}")
        elif event.state in ("failed", "skipped") and begun is not None:
            self.say(f"image {event.name}: {event.state} after {event.seconds:.0f}s")

    def _beat(self) -> None:
        import time

        while not self._stop.wait(self.every_s):
            now = time.monotonic()
            for name, begun in list(self.started.items()):
                self.say(f"image {name}: building, {now - begun:.0f}s so far")

    def __rich__(self):  # noqa: ANN204 - the live display while images build
        import time

        from rich.text import Text

        now = time.monotonic()
        return Text("\n".join(f"building image {n} … {now - t:.0f}s" for n, t in self.started.items()))

    def close(self) -> None:
        self._stop.set()


@main.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--executor", type=click.Choice(["slurm", "local"]), help="Where tasks run (default: config, else SLURM if sbatch works, else local).")
@click.option("--watch/--detach", default=None, help="Follow the run until it ends (default on a terminal), or return once submitted.")
def run_cmd(file: str, executor: str | None, watch: bool | None) -> None:
    """Build or reuse the images, then submit every task of FILE not already complete.

    Tasks whose key already completed are skipped (resume by default); tasks still queued
    by an earlier run are depended on, not resubmitted. The exit code is 0 only when every
    task completed (or, with --detach, when everything was submitted).

    Example:

        hpcml run workflow.yaml --detach && hpcml status
    """
    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        click.echo(f"hpcml: {message}", err=True)

    try:
        outcome = _run(file, executor, watch, say)
    except KeyboardInterrupt:
        submitted = any(m.startswith("submitted ") for m in said)
        if not submitted:
            say("interrupted before anything was submitted; rerun to start again")
        elif any(m.startswith("executor: local") for m in said):
            say("interrupted: the run's tasks were cancelled; `hpcml status` shows them, a rerun resumes")
        else:
            say("interrupted: the SLURM jobs keep running; `hpcml status` follows them, `hpcml cancel` stops them")
        raise SystemExit(130) from None
    if outcome.status is None:
        ids = ", ".join(f"{s}={','.join(j)}" for s, j in outcome.jobs.items()) or "nothing to submit"
        click.echo(f"run {outcome.run_id}: {ids}; follow with `hpcml status`")
        return
    _print_status(outcome.status)
    if not outcome.ok:
        raise SystemExit(1)


def _run(file: str, executor: str | None, watch: bool | None, say):  # noqa: ANN001, ANN202 - api.RunOutcome
    from hpcml import api

    detach = watch is False  # asked for explicitly: refused by executors that cannot detach (local)
    watch = sys.stdout.isatty() if watch is None else watch
    if watch and sys.stdout.isatty():
        from rich.live import Live

        with Live(refresh_per_second=4, transient=True) as live:
            images = _ImageProgress(say, live=live)
            try:
                outcome = api.run(file, executor=executor, watch=True, on_message=say, on_image=images,
                                  on_update=lambda st: live.update(_status_table(st)))
            finally:
                images.close()
    else:
        # Without a terminal: one line per change (also where a local run is watched anyway).
        last: list[object] = [None]

        def line(st) -> None:  # noqa: ANN001
            if st.counts != last[0]:
                last[0] = st.counts
                click.echo(", ".join(f"{n} {s.replace('_', ' ')}" for s, n in st.counts.items()))

        images = _ImageProgress(say)
        try:
            outcome = api.run(file, executor=executor, watch=watch, on_message=say, on_update=line,
                              detach=detach, on_image=images)
        finally:
            images.close()
    return outcome


@main.command("status")
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (shape in docs/running.md).")
@_where
def status_cmd(run: str | None, as_json: bool, directory: str | None, workflow: str | None) -> None:
    """Show the state of every task of RUN (default: the latest run here).

    One squeue (and at most one sacct) for the whole run. Exit code 0 when every task
    completed, 1 when one failed, 3 while tasks are still pending or running.

    Example:

        hpcml status --json | jq '.counts'
    """
    from hpcml import api

    st = api.status(run, directory=directory, workflow=workflow)
    _print_status(st, as_json)
    if not st.finished:
        raise SystemExit(3)
    if not st.ok:
        raise SystemExit(1)


@main.command("logs")
@click.argument("target", metavar="STEP[/TASK]")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the task ends.")
@click.option("--run", help="Run id (default: the latest).")
@_where
def logs_cmd(target: str, follow: bool, run: str | None, directory: str | None, workflow: str | None) -> None:
    """Print the log of a task (STEP/INDEX), or of every task of STEP.

    Example:

        hpcml logs train/3 -f
    """
    from pathlib import Path

    from hpcml import api
    from hpcml.run import submit as runs
    from hpcml.errors import StateError

    found = api.logs(target, run=run, directory=directory, workflow=workflow)
    if follow:
        if len(found) != 1:
            raise StateError(f"--follow needs one task: STEP/INDEX (step {target} has {len(found)} tasks)")
        label, path = found[0]

        def done() -> bool:
            st = api.status(run, directory=directory, workflow=workflow)
            return any(t.state not in ("pending", "running", "requeued") for t in st.tasks if f"{t.step}/{t.index}" == label)

        runs.follow(Path(path), done, lambda text: click.echo(text, nl=False))
        return
    for label, path in found:
        if len(found) > 1:
            click.echo(f"==> {label} ({path}) <==")
        try:
            click.echo(Path(path).read_text(errors="replace"), nl=False)
        except FileNotFoundError:
            click.echo("(no log yet: the task has not started)")


@main.command("cancel")
@click.argument("run", required=False)
@_where
def cancel_cmd(run: str | None, directory: str | None, workflow: str | None) -> None:
    """Cancel every unfinished job of RUN (default: the latest) with one scancel.

    Example:

        hpcml cancel
    """
    from hpcml import api

    run_id, jobs = api.cancel(run, directory=directory, workflow=workflow)
    if not jobs:
        click.echo(f"run {run_id}: nothing to cancel (no task of it is queued or running)")
        return
    click.echo(f"run {run_id}: cancelled {len(jobs)} job(s): {' '.join(jobs)}")


@main.command("runs")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of runs.")
@_where
def runs_cmd(as_json: bool, directory: str | None, workflow: str | None) -> None:
    """List the runs of this workflow directory, oldest first.

    Example:

        hpcml runs -C ~/projects/cifar
    """
    import dataclasses
    import json

    from hpcml import api

    items = api.runs_history(directory=directory, workflow=workflow)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in items], indent=2))
        return
    for r in items:
        counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in r.counts.items())
        click.echo(f"{r.run_id}  {r.executor:<6} {r.tasks:>5} tasks  {counts}{'' if r.finished else '  (not watched to the end)'}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
