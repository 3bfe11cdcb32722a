"""The executor interface: where job scripts run. SLURM and the local scheduler implement it.

An executor knows nothing of workflows or task keys: run/submit.py prepares the run directory,
renders one job script per step (or array chunk), and hands each to `submit` as a
`StepJob`. Status comes back as SLURM-like `JobRecord`s per job reference (`123`, or
`123_4` for an array task), which run/tasks.derive_state combines with the exit-code files.

Example:

    job_id = executor.submit(StepJob(...), depends_on=["101", "102_3"])
    seen = executor.observe([job_id])    # Observation(records={"103_0": JobRecord("RUNNING")})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hpcml.model import Plan, StepPlan
from hpcml.run.tasks import JobRecord


@dataclass(frozen=True)
class StepJob:
    """One submission: the job script of a step (or of one chunk of its array).

    `indices` are task indices (array index = task index - `offset`); `array` says whether
    it is a job array (a matrix step) or a plain job running task 0. `task_dirs` maps each
    task index to its task directory (where the wrapper writes exitcode/requeue).
    """

    name: str  # the job name, hpcml.<workflow>.<run>.<step>[.<chunk>]
    script: Path
    step: StepPlan
    indices: tuple[int, ...]
    array: bool
    offset: int = 0
    chunk: int | None = None
    task_dirs: Mapping[int, str] = field(default_factory=dict)
    output: str = ""  # sbatch --output pattern, also used by the local executor

    def ref(self, job_id: str, index: int) -> str:
        """The job reference of task `index` in this submission: `123` or `123_<array index>`."""
        return f"{job_id}_{index - self.offset}" if self.array else job_id


@dataclass(frozen=True)
class Observation:
    """One polling round: what the executor knows of the asked jobs, by job reference.

    `accounting` is False where causes of finished jobs cannot be asked (SLURM without
    sacct); a reference missing from `records` is a job the executor has forgotten.
    """

    records: Mapping[str, JobRecord]
    accounting: bool = True
    note: str = ""  # one line for the user, e.g. accounting did not answer: causes unknown this round


@dataclass(frozen=True)
class LiveJob:
    """A live job found by name: `array_task` is the array index, None for a plain job."""

    name: str
    job_id: str
    array_task: int | None
    state: str

    @property
    def ref(self) -> str:
        return self.job_id if self.array_task is None else f"{self.job_id}_{self.array_task}"


class Executor(Protocol):
    """Where tasks run. `detached` executors keep running jobs after `hpcml run` exits.

    `poll_s` is the watch loop's default pause between polling rounds, and `max_poll_s`
    the longest it backs off to while nothing changes: asking SLURM costs slurmctld work,
    looking at local processes costs nothing.
    """

    name: str
    detached: bool
    poll_s: float
    max_poll_s: float

    def ready(self) -> None:
        """Return once the executor can take jobs (SLURM: slurmctld answers; waited for
        with a note, bounded); SubmitError when it does not in time."""
        ...

    def check_plan(self, plan: Plan) -> None:
        """Raise SubmitError for a step that can never run here (every such step named),
        before any image is built."""
        ...

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        """Every pending or running job (array task) whose name starts with `name_prefix`,
        found with one query: reconciliation before submitting."""
        ...

    def submit(self, job: StepJob, depends_on: Sequence[str]) -> str:
        """Submit one StepJob after every job reference in `depends_on` succeeded; the job id.

        Must not create two jobs for one call, even when retrying after an ambiguous error."""
        ...

    def observe(self, refs: Sequence[str]) -> Observation:
        """What is known of these job references now (one round, cheap)."""
        ...

    def cancel(self, refs: Sequence[str]) -> None:
        """Cancel all these jobs (one call)."""
        ...
