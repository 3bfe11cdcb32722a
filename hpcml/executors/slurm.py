"""The SLURM executor: sbatch per step (array chunk), one squeue per round, at most one sacct.

Submission never duplicates a job: a transient sbatch failure (controller busy, socket
time-out) may still have created the job, so before each retry one `squeue` looks for a
job of that exact name (names are unique per run, step and chunk) and adopts it.

Example:

    ex = SlurmExecutor(Slurm())
    job_id = ex.submit(step_job, depends_on=["101"])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from hpcml.clients.slurm import JobRow, Slurm, TransientSubmitError, split_job_id
from hpcml.errors import SubmitError
from hpcml.executors.base import LiveJob, Observation, StepJob
from hpcml.model import Plan
from hpcml.run.tasks import JobRecord

log = logging.getLogger(__name__)


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
    ):
        self.slurm = slurm or Slurm()
        self.tries, self.backoff_s, self.sleep = tries, backoff_s, sleep
        self.accounting: bool | None = None  # unknown until the first sacct
        self.sbatch_calls = 0  # for bench/submit.py

    # ---- reconciliation and submission ---------------------------------------------

    def check_plan(self, plan: Plan) -> None:
        """Nothing to check ahead: sbatch judges each request against the cluster's own
        partitions and limits, and its refusal names the step."""

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        return [
            LiveJob(r.name, r.job_id, r.array_task, r.state)
            for r in self.slurm.squeue()
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
                self.sbatch_calls += 1
                return self.slurm.sbatch(str(job.script), list(depends_on))
            except TransientSubmitError as err:
                last = str(err)
                log.warning("transient sbatch failure (try %d of %d): %s", attempt, self.tries, err)
                if attempt < self.tries:
                    self.sleep(delay)
                    delay *= 2
        found = self._find(job.name)
        if found is not None:
            return found
        raise SubmitError(f"sbatch of {job.name} kept failing after {self.tries} tries: {last}")

    def _find(self, name: str) -> str | None:
        ids = {r.job_id for r in self.slurm.squeue() if r.name == name}
        return min(ids, key=int) if ids else None

    # ---- observation ----------------------------------------------------------------

    def observe(self, refs: Sequence[str]) -> Observation:
        """One squeue (-t all: live jobs and recently finished ones), and one sacct only for
        finished jobs squeue no longer knows, where the cluster has accounting."""
        wanted = set(refs)
        jobs = {job for ref in refs for job, _ in split_job_id(ref)}
        records: dict[str, JobRecord] = {}
        for row in self.slurm.squeue():
            if row.job_id in jobs:
                _put(records, row, wanted)
        missing = [r for r in refs if r not in records and not _array_master_known(r, records)]
        if missing and self.accounting is not False:
            rows = self.slurm.sacct(sorted({job for ref in missing for job, _ in split_job_id(ref)}, key=int))
            self.accounting = rows is not None
            for row in rows or []:
                if row.ref not in records:
                    _put(records, row, wanted)
        return Observation(records, accounting=self.accounting is not False)

    def cancel(self, refs: Sequence[str]) -> None:
        self.slurm.scancel(list(dict.fromkeys(refs)))


def _put(records: dict[str, JobRecord], row: JobRow, wanted: set[str]) -> None:
    record = JobRecord(row.state, row.reason, row.exit_code)
    records[row.ref] = record
    # A dependency may name a whole array (`123`): it is live while any task is.
    if row.array_task is not None and row.job_id in wanted and row.job_id not in records:
        records[row.job_id] = record


def _array_master_known(ref: str, records: dict[str, JobRecord]) -> bool:
    return "_" not in ref and any(k.startswith(ref + "_") for k in records)
