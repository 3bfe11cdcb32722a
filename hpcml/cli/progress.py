"""The one renderer of progress: image builds (`images.ImageEvent`, for `hpcml build` and
`hpcml run`) and a run's live view (`run.progress.RunProgress`, for `hpcml run` and
`hpcml status --watch`).

A first build takes a minute or more, so it must never look idle. Every change of an
image's state is one line (`image numpy: building (key …; log: …)`, `image numpy: built in
56s`). On a terminal a live display also shows a line per building image with its elapsed
time; without one (logs, CI) a heartbeat line `image numpy: building, 30s so far` is
printed every `every_s` seconds while an image builds.

Example:

    with live_display(sys.stderr.isatty(), stderr=True) as live, ImageProgress(say, live=live) as progress:
        report = api.build("workflow.yaml", progress=progress)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, Self

from hpcml.cli.tables import counts_line, image_label, image_lines
from hpcml.spec.units import human_duration as duration

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.text import Text

    from hpcml.images.ensure import ImageEvent
    from hpcml.results import ImageJobState, RunStatus
    from hpcml.run.progress import ProgressTracker, RunProgress
    from hpcml.run.tasks import TaskState

#: Seconds between heartbeat lines while an image builds without a terminal.
HEARTBEAT_S = 30.0


class LiveView(Protocol):
    """What the progress needs of a live display (rich.live.Live)."""

    def update(self, renderable: RenderableType) -> None: ...


def event_line(event: ImageEvent, was_building: bool) -> str | None:
    """The line that reports `event`, or None when it has nothing to say.

    A failed or skipped image gets a line only when it had been building (its cause is
    in the error the command prints at the end, with the log's last lines).
    """
    name = event.name
    if event.state == "building":
        return f"image {name}: building (key {event.key[:12]}; this can take minutes; log: {event.log})"
    if event.state == "done":
        return f"image {name}: built in {event.seconds:.0f}s"
    if event.state == "cached":
        return f"image {name}: cached{f' ({event.message})' if event.message else ''}"
    if event.state in ("waiting", "scanned"):
        return f"image {name}: {event.message}"
    if event.state in ("failed", "skipped") and was_building:
        return f"image {name}: {event.state} after {event.seconds:.0f}s"
    return None


def heartbeat_lines(started: dict[str, float], now: float) -> list[str]:
    """One line per image still building, with the seconds since it began."""
    return [f"image {name}: building, {now - begun:.0f}s so far" for name, begun in started.items()]


def live_lines(started: dict[str, float], now: float) -> list[str]:
    """The live display's lines: one per image still building."""
    return [f"building image {name} … {now - begun:.0f}s" for name, begun in started.items()]


class ImageProgress:
    """A progress callback for image events: `say` gets each line; with `live` the building
    images are shown there, else a heartbeat thread says they still build. Close it (or use
    it as a context manager) to stop the heartbeat."""

    def __init__(self, say: Callable[[str], None], *, live: LiveView | None = None,
                 every_s: float = HEARTBEAT_S) -> None:
        self.say, self.live, self.every_s = say, live, every_s
        self.started: dict[str, float] = {}  # building image → time.monotonic() it began
        self._lock = threading.Lock()  # events come from the build threads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, event: ImageEvent) -> None:
        with self._lock:
            if event.state == "building":
                self.started[event.name] = time.monotonic()
                was_building = False
            else:
                was_building = self.started.pop(event.name, None) is not None
        line = event_line(event, was_building)
        if line is not None:
            self.say(line)
        if event.state != "building":
            return
        if self.live is not None:
            self.live.update(self)
        elif self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="hpcml-heartbeat", daemon=True)
            self._thread.start()

    def snapshot(self) -> dict[str, float]:
        """The images building now, with the time each began."""
        with self._lock:
            return dict(self.started)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            for line in heartbeat_lines(self.snapshot(), time.monotonic()):
                self.say(line)

    def __rich__(self) -> Text:
        # start-up speed: rich is loaded only when a live display shows
        from rich.text import Text

        return Text("\n".join(live_lines(self.snapshot(), time.monotonic())))

    def close(self) -> None:
        """Stop the heartbeat."""
        self._stop.set()


@contextmanager
def live_display(enabled: bool, *, stderr: bool = False) -> Iterator[Live | None]:
    """A rich live display on stdout (or stderr), cleared when done; None when not `enabled`
    (no terminal), so callers fall back to lines."""
    if not enabled:
        yield None
        return
    from rich.console import Console  # start-up speed: rich only on a terminal
    from rich.live import Live  # start-up speed

    with Live(console=Console(stderr=stderr), refresh_per_second=4, transient=True) as live:
        yield live


# ---- the live view of a run (`hpcml run`, `hpcml status --watch`) ---------------------------




def headline(p: RunProgress) -> str:
    """``run R: 5/9 done · 1m 10s elapsed · about 2m left · 2 GPUs in use``."""
    left = "" if p.finished else (" · estimating time left" if p.eta_s is None else f" · about {duration(p.eta_s)} left")
    gpus = f" · {p.gpus_in_use} GPU{'s' if p.gpus_in_use != 1 else ''} in use" if p.gpus_in_use or not p.finished else ""
    return f"run {p.run_id}: {p.done}/{p.total} done · {duration(p.elapsed_s)} elapsed{left}{gpus}"


def failure_line(t: TaskState) -> str:
    """The line that reports a failure the moment it is seen, with the command to read its log."""
    detail = f" ({t.detail})" if t.detail and not t.detail.startswith("exit ") else ""
    job = f" job {t.job}" if t.job else ""
    return f"{t.step}/{t.index}: {t.label}{detail}{job} · hpcml logs {t.step}/{t.index}"


def run_view(p: RunProgress, images: Sequence[ImageJobState] = ()) -> RenderableType:
    """The live view: the headline, a row per image build job, then a bar per step with
    done/total, running and failed."""
    # start-up speed: rich is loaded only when a live display shows
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    for image in images:
        style = {"building": "cyan", "done": "green", "failed": "red"}.get(image.state, "dim")
        table.add_row(f"image {image.image}", Text(image_label(image), style=style), "", "", "")
    for s in p.steps:
        table.add_row(
            s.step, ProgressBar(total=max(s.total, 1), completed=s.done, width=30),
            f"{s.done}/{s.total}", Text(f"{s.running} running", style="cyan" if s.running else "dim"),
            Text(f"{s.failed} failed", style="red" if s.failed else "dim"),
        )
    return Group(Text(headline(p), style="italic"), table)


class RunView:
    """`on_update` for a watched run. A failure is said the moment it is seen; on a terminal
    the live view shows the bars, without one a line of counts is printed per change."""

    def __init__(self, tracker: ProgressTracker, say: Callable[[str], None], live: LiveView | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.tracker, self.say, self.live, self.clock = tracker, say, live, clock
        self.last: dict[str, int] | None = None
        self.images: dict[str, str] = {}  # image → its build job's last state said
        self.said_failed = False

    def __call__(self, st: RunStatus) -> None:
        p = self.tracker.update(st, self.clock())
        for image in st.images:
            if self.images.get(image.image) != image.state:
                self.images[image.image] = image.state
                if image.state != "failed":
                    self.say(f"image {image.image}: {image_label(image)}")
        if any(i.state == "failed" for i in st.images) and not self.said_failed:
            self.said_failed = True
            for line in image_lines(st):
                self.say(line)
        for t in p.new_failures:
            self.say(failure_line(t))
        if self.live is not None:
            self.live.update(run_view(p, st.images))
        elif st.counts != self.last:
            self.say(counts_line(st.counts))
        self.last = st.counts
