"""The SLURM executor: sbatch per step (array chunk), one squeue per round, at most one sacct.

Submission never duplicates a job: a transient sbatch failure (controller busy, socket
time-out, an sbatch stopped after `sbatch_timeout_s`) may still have created the job, so
before each retry one `squeue` looks for a job of that exact name (names are unique per
run, step and chunk) and adopts it; so does any other failure except a refusal (a job
limit), before it is reported.

A controller that does not answer ("Unable to contact slurm controller": stopped,
restarting, unreachable) is waited for, with a note to the user and backoff, up to
`wait_s`: queued jobs keep running meanwhile, so neither submitting nor watching fails
on a short outage; past `wait_s` a SubmitError says what was and was not submitted.

Example:

    ex = SlurmExecutor(Slurm())
    job_id = ex.submit(step_job, depends_on=["101"])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from hpcml.clients.slurm import (
    ControllerUnreachable,
    JobRow,
    SbatchFailed,
    Slurm,
    TransientSubmitError,
    split_job_id,
)
from hpcml.errors import SubmitError
from hpcml.executors.base import LiveJob, Observation, StepJob
from hpcml.model import Plan
from hpcml.run.tasks import JobRecord

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class SlurmExecutor:
    """Runs job scripts with sbatch. Jobs outlive `hpcml run` (detached)."""

    name = "slurm"
    detached = True
    poll_s = 2.0  # the watch loop's default pause between rounds (one squeue each)
    max_poll_s = 30.0  # and its ceiling while nothing changes: spares slurmctld

    def __init__(
        self,
        slurm: Slurm | None = None,
        *,
        tries: int = 5,
        backoff_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        wait_s: float = 600.0,
        on_wait: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.slurm = slurm or Slurm()
        self.tries, self.backoff_s, self.sleep = tries, backoff_s, sleep
        self.wait_s, self.clock = wait_s, clock
        self.on_wait = on_wait or (lambda m: log.warning("%s", m))
        self.accounting: bool | None = None  # unknown until the first sacct
        self.sbatch_calls = 0  # for bench/submit.py

    # ---- reconciliation and submission ---------------------------------------------

    def check_plan(self, plan: Plan) -> None:
        """Nothing to check ahead: sbatch judges each request against the cluster's own
        partitions and limits, and its refusal names the step."""

    def ready(self) -> None:
        """Return once slurmctld answers `scontrol ping` (waiting up to `wait_s`, with a
        note): before a run writes or submits anything."""
        def ping() -> None:
            state, why = self.slurm.controller()
            if state != "up":
                raise ControllerUnreachable(why)

        self.wait_for_controller("before submitting", ping,
                                 "nothing was submitted and nothing written; rerun `hpcml run` once "
                                 "`scontrol ping` says UP")

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        return [
            LiveJob(r.name, r.job_id, r.array_task, r.state)
            for r in self.wait_for_controller("looking for queued jobs of earlier runs", self.slurm.squeue, _NOT_SUBMITTED)
            if r.live and r.name.startswith(name_prefix)
        ]

    def submit(self, job: StepJob, depends_on: Sequence[str]) -> str:
        delay = self.backoff_s
        last = ""
        for attempt in range(1, self.tries + 1):
            if attempt > 1:
                found = self._find(job.name)
                if found is not None:
                    log.warning("sbatch of %s failed ambiguously but job %s exists: adopting it", job.name, found)
                    return found
            try:
                return self._sbatch(job, depends_on)
            except TransientSubmitError as err:
                last = str(err)
                log.warning("transient sbatch failure (try %d of %d): %s", attempt, self.tries, err)
                if attempt < self.tries:
                    self.sleep(delay)
                    delay *= 2
            except SbatchFailed:
                # An error hpcml does not know may still come after the job was queued (a
                # lost answer): adopt that job rather than leave it running unseen.
                found = self._find(job.name)
                if found is None:
                    raise
                log.warning("sbatch of %s failed but job %s exists: adopting it", job.name, found)
                return found
        found = self._find(job.name)
        if found is not None:
            return found
        raise SubmitError(f"sbatch of {job.name} kept failing after {self.tries} tries: {last}")

    def _sbatch(self, job: StepJob, depends_on: Sequence[str]) -> str:
        """One sbatch, or while slurmctld does not answer, the wait for it and then (the
        job may exist after all) a look for it by name before sbatch again."""
        tries = 0

        def once() -> str:
            nonlocal tries
            tries += 1
            if tries > 1:
                found = self._find(job.name, wait=False)
                if found is not None:
                    return found
            self.sbatch_calls += 1
            return self.slurm.sbatch(str(job.script), list(depends_on))

        return self.wait_for_controller(f"submitting {job.name}", once, _PARTLY_SUBMITTED)

    def _find(self, name: str, wait: bool = True) -> str | None:
        rows = self.wait_for_controller(f"looking for job {name}", self.slurm.squeue, _PARTLY_SUBMITTED) if wait \
            else self.slurm.squeue()
        ids = {r.job_id for r in rows if r.name == name}
        return min(ids, key=int) if ids else None

    def wait_for_controller(self, doing: str, call: Callable[[], _T], after: str = "") -> _T:
        """`call()`, again and again with backoff while it raises ControllerUnreachable, for
        up to `wait_s`; a note when the wait starts and when slurmctld answers again.
        Past `wait_s`, SubmitError naming what was being done and `after` (what became of
        the run)."""
        start = self.clock()
        delay = self.backoff_s
        waiting = False
        while True:
            try:
                result = call()
            except ControllerUnreachable as err:
                waited = self.clock() - start
                if waited >= self.wait_s:
                    raise SubmitError(f"slurmctld did not answer for {_span(waited)} ({doing}): {_last_line(err)}"
                                      f"{'; ' + after if after else ''}") from None
                if not waiting:
                    self.on_wait(f"slurmctld does not answer ({_last_line(err)}); waiting for it up to "
                                 f"{_span(self.wait_s)} ({doing}); queued jobs keep running meanwhile")
                    waiting = True
                self.sleep(max(0.0, min(delay, self.wait_s - waited)))
                delay = min(delay * 2, 30.0)
                continue
            if waiting:
                self.on_wait(f"slurmctld answers again after {_span(self.clock() - start)}; going on ({doing})")
            return result

    # ---- observation ----------------------------------------------------------------

    def observe(self, refs: Sequence[str]) -> Observation:
        """One squeue (-t all: live jobs and recently finished ones), and one sacct only for
        finished jobs squeue no longer knows, where the cluster has accounting."""
        wanted = set(refs)
        jobs = {job for ref in refs for job, _ in split_job_id(ref)}
        records: dict[str, JobRecord] = {}
        rows = self.wait_for_controller("following the run", self.slurm.squeue, _WATCH_STOPPED)
        for row in rows:
            if row.job_id in jobs:
                _put(records, row, wanted)
        missing = [r for r in refs if r not in records and not _array_master_known(r, records)]
        note = ""
        if missing and self.accounting is not False:
            try:
                rows = self.slurm.sacct(sorted({job for ref in missing for job, _ in split_job_id(ref)}, key=int))
            except SubmitError as err:
                # Accounting down (slurmdbd or its database): the exit-code files still say
                # what completed; only the causes of the other ended jobs wait for it.
                note = (f"accounting did not answer ({_last_line(err)}): the cause of {len(missing)} ended "
                        "job(s) is unknown for now; exit-code files are read as usual")
                return Observation(records, accounting=True, note=note)
            self.accounting = rows is not None
            for row in rows or []:
                if row.ref not in records:
                    _put(records, row, wanted)
        return Observation(records, accounting=self.accounting is not False, note=note)

    def cancel(self, refs: Sequence[str]) -> None:
        self.slurm.scancel(list(dict.fromkeys(refs)))


_NOT_SUBMITTED = "nothing was submitted; rerun `hpcml run` once `scontrol ping` says UP"
_PARTLY_SUBMITTED = ("the jobs submitted so far are queued and keep running; rerun `hpcml run` once `scontrol ping` "
                     "says UP to submit the rest (queued jobs are found by name, not submitted twice)")
_WATCH_STOPPED = ("the run's jobs keep running in SLURM; `hpcml status --watch` follows them again once "
                  "`scontrol ping` says UP")


def _span(seconds: float) -> str:
    """`45 s`, `10 min`: a wait, for messages."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else "no answer"


def _put(records: dict[str, JobRecord], row: JobRow, wanted: set[str]) -> None:
    record = JobRecord(row.state, row.reason, row.exit_code, row.signal)
    records[row.ref] = record
    # A dependency may name a whole array (`123`): it is live while any task is.
    if row.array_task is not None and row.job_id in wanted and row.job_id not in records:
        records[row.job_id] = record


def _array_master_known(ref: str, records: dict[str, JobRecord]) -> bool:
    return "_" not in ref and any(k.startswith(ref + "_") for k in records)
