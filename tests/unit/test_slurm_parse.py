"""Parsers of SLURM client output, on text pasted from a real 22.05 cluster."""

from __future__ import annotations

import pytest

from hpcml.errors import SubmitError
from hpcml.clients.runner import Completed
from hpcml.render.jobs import format_array_spec
from hpcml.clients.slurm import (
    Slurm,
    is_transient,
    max_array_size,
    parse_array_spec,
    parse_config,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    split_job_id,
)


def test_sbatch_parsable() -> None:
    assert parse_sbatch("123\n") == "123"
    assert parse_sbatch("4567;cluster\n") == "4567"
    with pytest.raises(SubmitError, match="cannot read a job id"):
        parse_sbatch("sbatch: error: Batch job submission failed\n")


def test_job_ids() -> None:
    assert split_job_id("123") == [("123", None)]
    assert split_job_id("123_4") == [("123", 4)]
    assert split_job_id("123_[0-2,5%2]") == [("123", 0), ("123", 1), ("123", 2), ("123", 5)]
    assert split_job_id("123.batch") == [("123", None)]


def test_array_specs_round_trip() -> None:
    assert parse_array_spec("1,3-7:2%4") == [1, 3, 5, 7]
    assert format_array_spec([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert format_array_spec(range(6), 3) == "0-5%3"
    assert parse_array_spec(format_array_spec([0, 2, 3, 9], 2)) == [0, 2, 3, 9]


SQUEUE = """\
101|hpcml.sweep.20261126-061200-ab12.prepare|RUNNING|None
102_[2-5%3]|hpcml.sweep.20261126-061200-ab12.train|PENDING|JobArrayTaskLimit
102_0|hpcml.sweep.20261126-061200-ab12.train|RUNNING|None
102_1|hpcml.sweep.20261126-061200-ab12.train|COMPLETED|None
103|hpcml.sweep.20261126-061200-ab12.evaluate|PENDING|Dependency
99|other-job|TIMEOUT|TimeLimit
"""


def test_squeue_expands_pending_arrays() -> None:
    rows = parse_squeue(SQUEUE)
    refs = [r.ref for r in rows]
    assert refs == ["101", "102_2", "102_3", "102_4", "102_5", "102_0", "102_1", "103", "99"]
    assert rows[1].reason == "JobArrayTaskLimit" and rows[1].live
    assert not rows[6].live and rows[6].state == "COMPLETED"
    assert rows[-1].state == "TIMEOUT"


SACCT = """\
200|hpcml.w.r.train|COMPLETED|0:0|None
201_0|hpcml.w.r.train|FAILED|3:0|NonZeroExitCode
201_1|hpcml.w.r.train|CANCELLED by 0|0:15|None
201_[2-3]|hpcml.w.r.train|PENDING|0:0|Dependency
202|hpcml.w.r.ckpt|REQUEUED|0:15|None
202|hpcml.w.r.ckpt|COMPLETED|0:0|None
203|hpcml.w.r.slow|TIMEOUT|0:0|TimeLimit
"""


def test_sacct_newest_record_wins_and_causes() -> None:
    rows = {r.ref: r for r in parse_sacct(SACCT)}
    assert rows["201_0"].state == "FAILED" and rows["201_0"].exit_code == 3
    assert rows["201_1"].state == "CANCELLED" and rows["201_1"].signal == 15
    assert rows["201_3"].state == "PENDING"
    assert rows["202"].state == "COMPLETED"
    assert rows["203"].state == "TIMEOUT"


def test_config_parse() -> None:
    text = """Configuration data as of 2026-11-26T06:12:00
AccountingStorageType   = accounting_storage/none
GresTypes               = gpu
MaxArraySize            = 4001
SelectType              = select/cons_tres
SelectTypeParameters    = CR_CORE_MEMORY

Cgroup Support Configuration:
AllowedRAMSpace         = 100.0%
"""
    cfg = parse_config(text)
    assert cfg["GresTypes"] == "gpu" and cfg["SelectType"] == "select/cons_tres"
    assert max_array_size(cfg) == 4001 and max_array_size({}) == 1001


def test_transient_errors() -> None:
    def done(rc: int, err: str) -> Completed:
        return Completed(("sbatch",), rc, "", err)

    assert is_transient(done(1, "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"))
    assert is_transient(done(1, "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying"))
    assert is_transient(done(124, ""))
    assert not is_transient(done(1, "sbatch: error: Invalid partition name specified"))


class _Echo:
    """A runner that answers one canned result: tests the argv a method builds."""

    def __init__(self, result: Completed):
        self.result = result
        self.argv: list[str] = []

    def run(self, argv, **_kw):  # type: ignore[no-untyped-def]
        self.argv = list(argv)
        return self.result


def test_sacct_reports_disabled_accounting() -> None:
    runner = _Echo(Completed(("sacct",), 1, "", "Slurm accounting storage is disabled\n"))
    assert Slurm(runner).sacct(["1"]) is None
    assert runner.argv[:5] == ["sacct", "-X", "--duplicates", "--parsable2", "--noheader"]


def test_sbatch_argv_puts_dependencies_on_the_command_line() -> None:
    argv = Slurm.sbatch_argv("/r/jobs/train.sbatch", ["101", "102_3"])
    assert argv == [
        "sbatch",
        "--parsable",
        "--dependency=afterok:101:102_3",
        "--kill-on-invalid-dep=yes",
        "/r/jobs/train.sbatch",
    ]


def test_squeue_asks_for_one_row_per_array_task() -> None:
    # Without -r a pending array is one row whose range squeue cuts at the column width.
    assert "-r" in Slurm.squeue_argv()


def test_an_unreadable_foreign_row_is_skipped_not_a_crash() -> None:
    # A cancelled array of another run, as squeue printed it without -r (cut at 31 chars).
    text = "1559_[2-9,12-99,116-999,1152-11|hpcml.x.r.train|CANCELLED|None\n42_3|hpcml.w.r.s|RUNNING|None\n"
    rows = parse_squeue(text)
    assert [(r.job_id, r.array_task, r.state) for r in rows] == [("42", 3, "RUNNING")]
    sacct = "1559_[2-9,12-99|n|CANCELLED by 0|0:0|None\n77|n|COMPLETED|0:0|None\n"
    assert [r.job_id for r in parse_sacct(sacct)] == ["77"]


def test_ping_names_the_configured_controller_and_unreachable_errors() -> None:
    from hpcml.clients.runner import Completed
    from hpcml.clients.slurm import is_unreachable, parse_ping_controller

    down = "Slurmctld(primary) at vm is DOWN\n*****************************************\n"
    assert parse_ping_controller(down) == "primary at vm"
    assert parse_ping_controller("") is None  # no configuration read: nothing named
    failed = Completed(("squeue",), 1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n")
    assert is_unreachable(failed)
    assert not is_unreachable(Completed(("squeue",), 1, "", "squeue: error: Invalid user\n"))


@pytest.mark.parametrize(("stderr", "code", "why"), [
    # 22.05 names the limit on its own line before the policy message
    ("sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: Job violates "
     "accounting/QOS policy (job submit limit, user's size and/or time limits)\n", 1, "MaxSubmitJobsPerUser"),
    ("sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: Job violates accounting/QOS "
     "policy (job submit limit, user's size and/or time limits)\n", 1, "(MaxSubmitJobs)"),
    ("sbatch: error: Batch job submission failed: Unable to create job record, try again\n", 1, "MaxJobCount"),
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n", 124, "MaxJobCount"),
    ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n", 1, None),
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n", 1, None),
])
def test_refusals_that_retrying_will_not_cure(stderr: str, code: int, why: str | None) -> None:
    from hpcml.clients.runner import Completed
    from hpcml.clients.slurm import refusal

    got = refusal(Completed(("sbatch",), code, "", stderr))
    assert (got is None) if why is None else (got is not None and why in got)
