"""What the live view of a run shows, computed from each polling round: per step how many
tasks are done, running and failed, the time since the run started, an estimate of the
time left, the GPUs in use, and the failures that are new since the last round.

The CLI only draws a `RunProgress`; every figure is decided here.

Example:

    tracker = ProgressTracker(run_dir)
    p = tracker.update(status(run_dir), time.time())
    p.eta_s, [f.label for f in p.new_failures]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcml.render.protocol import TASK_ATTEMPTS
from hpcml.run.journal import read_journal
from hpcml.run.tasks import DONE_OK, FAILED, TaskState
from hpcml.run.trace import parse_attempts

if TYPE_CHECKING:
    from hpcml.results import RunStatus
    from hpcml.run.rundir import RunDir


@dataclass(frozen=True)
class StepProgress:
    """One step's bar: `done` of `total` (cached included), with running and failed."""

    step: str
    total: int
    done: int
    running: int
    failed: int

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.running - self.failed


@dataclass(frozen=True)
class RunProgress:
    """The live view's content for one polling round."""

    run_id: str
    steps: tuple[StepProgress, ...]
    elapsed_s: float
    eta_s: float | None  # None until a task of this run has finished
    gpus_in_use: int
    new_failures: tuple[TaskState, ...]
    finished: bool

    @property
    def total(self) -> int:
        return sum(s.total for s in self.steps)

    @property
    def done(self) -> int:
        return sum(s.done for s in self.steps)


def step_progress(st: RunStatus) -> tuple[StepProgress, ...]:
    """Counts per step, in DAG order."""
    out = []
    for step, tasks in st.steps().items():
        out.append(StepProgress(
            step, len(tasks), sum(t.state in DONE_OK for t in tasks), sum(t.state == "running" for t in tasks),
            sum(t.state in FAILED for t in tasks),
        ))
    return tuple(out)


def eta(remaining: int, finished_here: int, elapsed_s: float) -> float | None:
    """Seconds left at the rate tasks of this run have finished so far (tasks per second
    since it started, which counts the parallelism SLURM gave it); None before the first."""
    if remaining <= 0:
        return 0.0
    if finished_here <= 0 or elapsed_s <= 0:
        return None
    return remaining * elapsed_s / finished_here


class ProgressTracker:
    """Turns successive RunStatus rounds of one run into RunProgress (remembering which
    failures it already reported). Reads the journal once, for when the run started, and
    each round only the attempt records of running tasks (for their devices)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.started: dict[str, float] = {}
        self.reported: set[str] = set()

    def _started_at(self, run_id: str, now: float) -> float:
        if run_id not in self.started:
            records = read_journal(self.run_dir.run(run_id).journal)
            self.started[run_id] = next((float(r["t"]) for r in records if r["event"] == "run"), now)
        return self.started[run_id]

    def gpus_in_use(self, st: RunStatus) -> int:
        """Devices held by the running tasks, from the wrapper's record of each attempt."""
        total = 0
        for t in st.tasks:
            if t.state != "running":
                continue
            try:
                attempts = parse_attempts((self.run_dir.task(t.step, t.key) / TASK_ATTEMPTS).read_text(encoding="utf-8"))
            except OSError:
                continue
            if attempts and attempts[-1].end is None:
                total += len(attempts[-1].devices)
        return total

    def update(self, st: RunStatus, now: float) -> RunProgress:
        """The progress of this round; failures not reported in an earlier round are new."""
        steps = step_progress(st)
        elapsed = max(0.0, now - self._started_at(st.run_id, now))
        finished_here = sum(1 for t in st.tasks if t.state == "completed" or t.state in FAILED)
        remaining = sum(s.total - s.done - s.failed for s in steps)
        new = tuple(t for t in st.tasks if t.state in FAILED and t.state != "upstream_failed" and t.key not in self.reported)
        self.reported.update(t.key for t in new)
        return RunProgress(st.run_id, steps, elapsed, eta(remaining, finished_here, elapsed), self.gpus_in_use(st), new, st.finished)
