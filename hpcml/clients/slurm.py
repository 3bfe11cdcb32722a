"""SLURM behind one small class: argv builders on top, pure parsers below.

`Slurm(runner)` runs sbatch/squeue/sacct/scancel/scontrol through the runner seam (so the
same code works over SSH later) and turns their output into small dataclasses. The
parsers are pure and tested on output pasted from a real cluster (22.05):

- `sbatch --parsable` prints `123` or `123;cluster`.
- `squeue -h -r -t all --me -o '%i|%j|%T|%r'`: one row per job or array task (`123_4`);
  without `-r` a pending array is one row `123_[0-5%2]`, which squeue truncates when long. `-t all` keeps recently finished jobs
  (for MinJobAge seconds), which gives causes such as TIMEOUT on a cluster without sacct.
- `sacct -X --duplicates --parsable2 --noheader -o JobID,JobName,State,ExitCode,Reason`:
  `CANCELLED by 0`, `3:0` exit codes, REQUEUED rows before the newest one.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Sequence

from hpcml.errors import SubmitError
from hpcml.clients.runner import Completed, LocalRunner, Runner

log = logging.getLogger(__name__)

ACCOUNTING_DISABLED = "accounting storage is disabled"

#: sbatch failures worth retrying: the controller is busy or briefly unreachable. Each
#: may also mean the job *was* created, so a retry is preceded by reconciliation.
TRANSIENT_PATTERNS = (
    "socket timed out",
    "resource temporarily unavailable",
    "unable to contact slurm controller",
    "slurm temporarily unable",
    "zero bytes were transmitted or received",
    "connection refused",
    "timed out after",  # the runner's own timeout
    "slurmctld not responding",
)

#: States in which a job still holds or waits for resources (squeue's default set).
LIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STAGE_OUT",
        "SIGNALING",
        "STOPPED",
        "RESV_DEL_HOLD",
    }
)


#: What the client commands say when slurmctld does not answer (stopped, restarting,
#: unreachable): nothing was done, and the same call is worth making once it answers.
UNREACHABLE_PATTERNS = (
    "unable to contact slurm controller",
    "slurmctld not responding",
)


#: sbatch refusals that more tries within a run's retry window will not cure: a policy
#: limit on jobs (the reason SLURM names, or its message), or a job table that stayed full
#: through sbatch's own two minutes of retrying. Matched in order, lower-case.
REFUSALS = (
    ("qosmaxsubmitjobperuserlimit", "your QOS allows no more queued jobs per user (MaxSubmitJobsPerUser)"),
    ("qosmaxsubmitjobperaccountlimit", "your QOS allows no more queued jobs per account (MaxSubmitJobsPerAccount)"),
    ("qosgrpsubmitjobslimit", "your QOS's group limit on queued jobs is reached (GrpSubmitJobs)"),
    ("assocmaxsubmitjoblimit", "your association (account/user) allows no more queued jobs (MaxSubmitJobs)"),
    ("assocgrpsubmitjobslimit", "your account's group limit on queued jobs is reached (GrpSubmitJobs)"),
    ("job violates accounting/qos policy", "the cluster's accounting/QOS policy refuses it (a limit on queued jobs, "
     "job size or time)"),
    ("unable to create job record", "the cluster's job table is full (MaxJobCount)"),
    ("temporarily unable to accept job", "slurmctld kept refusing new jobs through sbatch's own retries (its job "
     "table is full, MaxJobCount, or it is overloaded)"),
)


class ClusterRefused(SubmitError):
    """sbatch was refused for a reason more tries will not cure soon (`why`, in words):
    the jobs already submitted keep running; nothing more is submitted."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


class TransientSubmitError(SubmitError):
    """sbatch failed in a way that may succeed on a retry (and may have created the job)."""


class SbatchFailed(SubmitError):
    """sbatch failed with a message hpcml does not know: not worth retrying, but the job
    may still have been queued before the failure (look for it by name)."""


class ControllerUnreachable(TransientSubmitError):
    """slurmctld did not answer a client command: worth waiting for (jobs already queued
    keep running meanwhile)."""


@dataclass(frozen=True)
class JobRow:
    """One job (or one array task) as squeue or sacct reports it.

    `job_id` is the job (or array master) id; `array_task` the array index, or None for a
    plain job. `exit_code`/`signal` come from sacct only.
    """

    job_id: str
    array_task: int | None
    name: str
    state: str
    reason: str = ""
    exit_code: int | None = None
    signal: int | None = None

    @property
    def ref(self) -> str:
        """The id SLURM accepts for this one task: `123` or `123_4`."""
        return self.job_id if self.array_task is None else f"{self.job_id}_{self.array_task}"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class Slurm:
    """The SLURM client commands. Every method is one command run through `runner`."""

    def __init__(self, runner: Runner | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 sbatch_timeout_s: float = 120.0):
        self.runner = runner or LocalRunner()
        self.sleep = sleep
        self.sbatch_timeout_s = sbatch_timeout_s  # past it, the runner stops sbatch (exit 124: transient)

    # ---- submission -----------------------------------------------------------------

    @staticmethod
    def sbatch_argv(script: str, dependency: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
        """`sbatch --parsable [--dependency=afterok:… --kill-on-invalid-dep=yes] … script`."""
        argv = ["sbatch", "--parsable"]
        if dependency:
            argv += [f"--dependency=afterok:{':'.join(dependency)}", "--kill-on-invalid-dep=yes"]
        return [*argv, *extra, script]

    def sbatch(self, script: str, dependency: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
        """Submit once. Returns the job id; raises TransientSubmitError or SubmitError."""
        done = self.runner.run(self.sbatch_argv(script, dependency, extra), timeout=self.sbatch_timeout_s)
        if done.ok:
            return parse_sbatch(done.stdout)
        message = f"sbatch {script} failed (exit {done.returncode}): {done.tail()}"
        why = refusal(done)
        if why is not None:
            raise ClusterRefused(message, why)
        if is_unreachable(done):
            raise ControllerUnreachable(message)
        if is_transient(done):
            raise TransientSubmitError(message)
        raise SbatchFailed(message)

    # ---- observation ----------------------------------------------------------------

    @staticmethod
    def squeue_argv() -> list[str]:
        # One RPC for every job of this user, finished ones included (-t all): the caller
        # filters by name or id. Asking with -j for purged ids would fail the whole call.
        # -r: one row per array task (`123_4`), never a range: squeue cuts %i at its column
        # width, and a fragmented range (`1559_[2-9,12-99,116-999,1152-11`) cannot be read.
        return ["squeue", "-h", "-r", "-t", "all", "--me", "-o", "%i|%j|%T|%r"]

    def squeue(self) -> list[JobRow]:
        """All of this user's jobs slurmctld still knows."""
        done = self.runner.run(self.squeue_argv(), timeout=120)
        if not done.ok:
            message = f"squeue failed (exit {done.returncode}): {done.tail()}"
            raise ControllerUnreachable(message) if is_unreachable(done) else SubmitError(message)
        return parse_squeue(done.stdout)

    @staticmethod
    def sacct_argv(job_ids: Iterable[str]) -> list[str]:
        return [
            "sacct",
            "-X",
            "--duplicates",
            "--parsable2",
            "--noheader",
            "-j",
            ",".join(job_ids),
            "-o",
            "JobID,JobName,State,ExitCode,Reason",
        ]

    def sacct(self, job_ids: Sequence[str]) -> list[JobRow] | None:
        """Accounting records of `job_ids`, or None where the cluster has no accounting."""
        if not job_ids:
            return []
        done = self.runner.run(self.sacct_argv(job_ids), timeout=120)
        if ACCOUNTING_DISABLED in (done.stdout + done.stderr).lower():
            return None
        if not done.ok:
            raise SubmitError(f"sacct failed (exit {done.returncode}): {done.tail()}")
        return parse_sacct(done.stdout)

    @staticmethod
    def usage_argv(job_ids: Iterable[str]) -> list[str]:
        # Without -X: the job steps carry MaxRSS; their allocation row carries AllocTRES.
        return ["sacct", "--duplicates", "--parsable2", "--noheader", "-j", ",".join(job_ids), "-o", USAGE_FIELDS]

    def usage(self, job_ids: Sequence[str]) -> list[UsageRow] | None:
        """What each allocation of `job_ids` used (one row per allocation, a requeued job's
        earlier ones included), or None where the cluster has no accounting."""
        if not job_ids:
            return []
        done = self.runner.run(self.usage_argv(job_ids), timeout=120)
        if ACCOUNTING_DISABLED in (done.stdout + done.stderr).lower():
            return None
        if not done.ok:
            raise SubmitError(f"sacct failed (exit {done.returncode}): {done.tail()}")
        return parse_usage(done.stdout)

    def version(self) -> str:
        """`sbatch --version` (`slurm 22.05.8`), for the run's provenance."""
        done = self.runner.run(["sbatch", "--version"], timeout=30)
        if not done.ok:
            raise SubmitError(f"sbatch --version failed (exit {done.returncode}): {done.tail()}")
        return done.stdout.strip()

    def job_live(self, job_id: str) -> bool:
        """Whether job `job_id` (anyone's) is still queued or running: `squeue -j`, which
        fails for a job slurmctld no longer knows."""
        done = self.runner.run(["squeue", "-h", "-j", job_id, "-o", "%T"], timeout=60)
        return done.ok and any(line.strip() in LIVE_STATES for line in done.stdout.splitlines())

    def scancel(self, job_ids: Sequence[str]) -> None:
        """Cancel every job in one call."""
        if not job_ids:
            return
        done = self.runner.run(["scancel", *job_ids], timeout=120)
        if not done.ok:
            raise SubmitError(f"scancel failed (exit {done.returncode}): {done.tail()}")

    def show_config(self) -> dict[str, str]:
        """`scontrol show config`, parsed (MaxArraySize, SelectType, GresTypes, …)."""
        done = self.runner.run(["scontrol", "show", "config"], timeout=60)
        if not done.ok:
            raise SubmitError(f"scontrol show config failed (exit {done.returncode}): {done.tail()}")
        return parse_config(done.stdout)

    def usable(self) -> tuple[bool, str]:
        """Whether jobs can be submitted here now, and why."""
        state, why = self.controller()
        return state == "up", why

    def controller(self) -> tuple[str, str]:
        """(state, why) of SLURM here: "up"; "down" (configured, naming a controller that
        does not answer now); "unconfigured" (clients without a usable slurm.conf); "absent"
        (no sbatch). For `hpcml run`'s executor choice: only "unconfigured" and "absent"
        make it run tasks on this machine."""
        version = self.runner.run(["sbatch", "--version"], timeout=30)
        if not version.ok:
            return "absent", "sbatch is not installed"
        name = version.stdout.strip()
        ping = self.runner.run(["scontrol", "ping"], timeout=30)
        if ping.ok and "UP" in ping.stdout:
            return "up", f"{name} found and slurmctld answers"
        controller = parse_ping_controller(ping.stdout)
        if controller is not None:
            return "down", f"{name} is configured here but slurmctld ({controller}) does not answer"
        return "unconfigured", f"{name} is installed but slurmctld does not answer ({ping.tail(1) or 'no configuration'})"


# ---- pure parsers ---------------------------------------------------------------------


def refusal(done: Completed) -> str | None:
    """Why the cluster refuses a job, in words, when a failed sbatch says a limit is reached
    (None for any other failure). A time-out counts only when sbatch said it kept retrying."""
    text = (done.stderr + "\n" + done.stdout).lower()
    for pattern, why in REFUSALS:
        if pattern in text and (pattern != "temporarily unable to accept job" or done.returncode == 124):
            return why
    return None


def is_unreachable(done: Completed) -> bool:
    """Whether a failed client command failed because slurmctld did not answer."""
    text = (done.stderr + "\n" + done.stdout).lower()
    return any(p in text for p in UNREACHABLE_PATTERNS)


def parse_ping_controller(stdout: str) -> str | None:
    """`Slurmctld(primary) at vm is DOWN` → `primary at vm`: the controller `scontrol ping`
    read from the configuration (None when it printed none: no usable configuration)."""
    m = re.search(r"Slurmctld\((\w+)\) at (\S+) is", stdout)
    return f"{m.group(1)} at {m.group(2)}" if m else None


def is_transient(done: Completed) -> bool:
    """Whether a failed sbatch is worth retrying (controller busy/unreachable, timeout)."""
    text = (done.stderr + "\n" + done.stdout).lower()
    return done.returncode == 124 or any(p in text for p in TRANSIENT_PATTERNS)


def parse_sbatch(stdout: str) -> str:
    """`123` or `123;cluster` (sbatch --parsable) → `123`."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SubmitError(f"cannot read a job id from sbatch output {stdout.strip()!r}")
    return job_id


_ID = re.compile(r"(?P<job>\d+)(?:_(?:(?P<task>\d+)|\[(?P<spec>[^\]]*)\]))?(?:\+\d+)?(?:\.\S+)?")


def split_job_id(text: str) -> list[tuple[str, int | None]]:
    """`123` → [(123, None)]; `123_4` → [(123, 4)]; `123_[0-2,5%2]` → tasks 0,1,2,5.

    Ids of other shapes (job steps `123.batch`) give the bare job id.
    """
    m = _ID.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a SLURM job id: {text!r}")
    if m.group("task") is not None:
        return [(m.group("job"), int(m.group("task")))]
    if m.group("spec") is not None:
        return [(m.group("job"), i) for i in parse_array_spec(m.group("spec"))]
    return [(m.group("job"), None)]


def job_ids_of(text: str) -> list[tuple[str, int | None]]:
    """`split_job_id` for a row of someone else's output: an id of a shape this parser does
    not know (a truncated array range, a future format) is skipped, not a crash of every
    `run` and `status` until SLURM forgets that job."""
    try:
        return split_job_id(text)
    except ValueError:
        log.debug("skipped an unreadable job id %r", text)
        return []


def parse_array_spec(spec: str) -> list[int]:
    """`0-5%2` → 0..5; `1,3-7:2` → 1,3,5,7 (the throttle after % is dropped)."""
    spec = spec.split("%", 1)[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return out


def parse_squeue(text: str) -> list[JobRow]:
    """Rows of `squeue -h -o '%i|%j|%T|%r'`; a pending array row becomes one row per task."""
    rows: list[JobRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, name, state, reason = (line.split("|") + ["", "", ""])[:4]
        for job, task in job_ids_of(job_id):
            rows.append(JobRow(job, task, name.strip(), state.strip(), reason.strip()))
    return rows


def parse_sacct(text: str) -> list[JobRow]:
    """Rows of sacct (JobID,JobName,State,ExitCode,Reason; --parsable2 --noheader).

    With --duplicates a requeued job has several records, oldest first: the newest wins.
    `CANCELLED by 0` becomes state CANCELLED.
    """
    newest: dict[tuple[str, int | None], JobRow] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, name, state, exit_code, reason = (line.split("|") + ["", "", "", ""])[:5]
        state = state.split(" ", 1)[0].strip()
        code, sig = _exit_code(exit_code)
        for job, task in job_ids_of(job_id):
            newest[(job, task)] = JobRow(job, task, name.strip(), state, reason.strip(), code, sig)
    return list(newest.values())


def _exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.strip().partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config` → {key: value}; the first occurrence of a key wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            continue
        out.setdefault(key.strip(), value.strip())
    return out


def max_array_size(config: Mapping[str, str], default: int = 1001) -> int:
    """MaxArraySize from the parsed config: array indices must stay below it."""
    try:
        return int(config.get("MaxArraySize", default))
    except ValueError:
        return default


# ---- usage (the report): what each allocation was given and used -------------------------

#: The sacct fields of `usage`, in the order `parse_usage` reads them.
USAGE_FIELDS = "JobID,State,ExitCode,Submit,Start,End,ElapsedRaw,AllocTRES,NodeList,MaxRSS,ReqMem"


@dataclass(frozen=True)
class UsageRow:
    """One allocation of a job (a requeued job has one per run of it), as sacct records it.
    Times are Unix seconds (None when SLURM has none yet)."""

    job: str
    task: int | None
    state: str
    exit_code: int | None
    submit: float | None
    start: float | None
    end: float | None
    elapsed_s: int
    cpus: int
    gpus: int
    node: str
    max_rss: int | None  # bytes, the largest of the job's steps; None when not gathered
    req_mem: str

    @property
    def ref(self) -> str:
        return self.job if self.task is None else f"{self.job}_{self.task}"


def parse_usage(text: str) -> list[UsageRow]:
    """Rows of `sacct --duplicates --parsable2 --noheader -o USAGE_FIELDS` (no -X): one
    UsageRow per allocation row, oldest first, with the largest MaxRSS of the step rows
    (`123_4.batch`) that follow it. sacct prints times in the cluster's local time."""
    rows: list[UsageRow] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        f = (line.split("|") + [""] * 11)[:11]
        job_id, state, exit_code, submit, start, end, elapsed, tres, node, max_rss, req_mem = f
        if "." in job_id:  # a step: its MaxRSS belongs to the allocation row before it
            rss = parse_size(max_rss)
            if rows and rss is not None and job_id.split(".", 1)[0] == rows[-1].ref:
                last = rows[-1]
                rows[-1] = replace(last, max_rss=max(rss, last.max_rss or 0))
            continue
        trs = parse_tres(tres)
        code, _sig = _exit_code(exit_code)
        for job, task in job_ids_of(job_id):
            rows.append(
                UsageRow(
                    job, task, state.split(" ", 1)[0].strip(), code, _time(submit), _time(start), _time(end),
                    int(elapsed) if elapsed.isdigit() else 0, int(trs.get("cpu", 0)), int(trs.get("gres/gpu", 0)),
                    "" if node.strip() == "None assigned" else node.strip(), parse_size(max_rss), req_mem.strip(),
                )
            )
    return rows


def parse_tres(text: str) -> dict[str, float]:
    """`billing=1,cpu=2,gres/gpu:a100=1,mem=500M,node=1` → {"cpu": 2, "gres/gpu": 1, …}
    (typed GPU counts are added into `gres/gpu` when SLURM lists only those)."""
    out: dict[str, float] = {}
    typed = 0.0
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        number = parse_size(value) if name == "mem" else (float(value) if _NUMBER.fullmatch(value) else None)
        if number is None:
            continue
        if name.startswith("gres/gpu:"):
            typed += number
        else:
            out[name] = number
    if "gres/gpu" not in out and typed:
        out["gres/gpu"] = typed
    return out


_NUMBER = re.compile(r"\d+(\.\d+)?")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)(?:[nc])?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """`1234K` → 1263616 bytes; `2G` → 2147483648; `` → None (sacct's sizes are binary)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        return None
    exponent = "_KMGTP".index(m.group(2).upper()) if m.group(2) else 0
    return int(float(m.group(1)) * 1024**exponent)


def _time(text: str) -> float | None:
    text = text.strip()
    if not text or text in ("Unknown", "None"):
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
