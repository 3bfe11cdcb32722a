"""The run report's data layer and renderer: the wrapper's attempt records, sacct usage
parsed from pasted output, timeline segments (requeues visible), failures first, and the
HTML page of a small fixed run against its golden file."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from collections.abc import Callable

from hpcml.clients.slurm import Slurm, UsageRow, parse_size, parse_tres, parse_usage
from hpcml.render.report import compact, render
from hpcml.run.trace import (
    Attempt,
    ImageInfo,
    RunTrace,
    StepInfo,
    TaskTrace,
    parse_attempts,
)

# sacct --duplicates --parsable2 --noheader -o USAGE_FIELDS on the testbed (SLURM 22.05),
# for a requeued array task (two allocations) and a failed one; MaxRSS added to one step.
SACCT = """\
40_0|REQUEUED|0:0|2026-12-02T14:00:00|2026-12-02T14:00:02|2026-12-02T14:01:02|60|billing=1,cpu=1,gres/gpu=1,mem=100M,node=1|vm||100M
40_0.batch|CANCELLED|0:15|2026-12-02T14:00:02|2026-12-02T14:00:02|2026-12-02T14:01:02|60|cpu=1,gres/gpu=1,mem=100M,node=1|vm|2048K|
40_0|COMPLETED|0:0|2026-12-02T14:01:02|2026-12-02T14:03:40|2026-12-02T14:03:50|10|billing=1,cpu=1,gres/gpu=1,mem=100M,node=1|vm||100M
40_0.batch|COMPLETED|0:0|2026-12-02T14:03:40|2026-12-02T14:03:40|2026-12-02T14:03:50|10|cpu=1,gres/gpu=1,mem=100M,node=1|vm|1024K|
40_1|FAILED|3:0|2026-12-02T14:00:00|2026-12-02T14:00:02|2026-12-02T14:00:05|3|billing=2,cpu=2,gres/gpu:a100=2,mem=100M,node=1|vm||100M
40_1.extern|COMPLETED|0:0|2026-12-02T14:00:02|2026-12-02T14:00:02|2026-12-02T14:00:05|3|cpu=2,mem=100M,node=1|vm|0|
"""


def test_usage_rows_one_per_allocation_with_the_steps_peak_memory() -> None:
    rows = parse_usage(SACCT)
    assert [(r.ref, r.state, r.elapsed_s, r.gpus, r.cpus) for r in rows] == [
        ("40_0", "REQUEUED", 60, 1, 1),
        ("40_0", "COMPLETED", 10, 1, 1),
        ("40_1", "FAILED", 3, 2, 2),
    ]
    assert [r.max_rss for r in rows] == [2048 * 1024, 1024 * 1024, 0]
    assert rows[2].exit_code == 3 and rows[0].req_mem == "100M"
    assert rows[1].start is not None and rows[1].end is not None and rows[1].end - rows[1].start == 10


def test_usage_argv_asks_for_steps_and_duplicates() -> None:
    argv = Slurm.usage_argv(["40", "41"])
    assert argv[:2] == ["sacct", "--duplicates"] and "-X" not in argv and "40,41" in argv


def test_tres_and_sizes() -> None:
    assert parse_tres("billing=1,cpu=4,gres/gpu=2,mem=1G,node=1") == {"billing": 1, "cpu": 4, "gres/gpu": 2, "mem": 2**30, "node": 1}
    assert parse_tres("cpu=1,gres/gpu:a100=1,gres/gpu:v100=1")["gres/gpu"] == 2
    assert parse_size("1.5M") == int(1.5 * 2**20) and parse_size("") is None and parse_size("0") == 0


def test_attempts_file_torn_and_unknown_lines_skipped() -> None:
    text = "start 100 1 node1 40_0 0\nend 160 1 99 USR2\nstart 250 2 node2 40_0 1,3\ngarbage\nend 2"
    assert parse_attempts(text) == (
        Attempt(1, 100.0, 160.0, "node1", "40_0", ("0",), 99, "USR2"),
        Attempt(2, 250.0, None, "node2", "40_0", ("1", "3"), None),
    )
    assert parse_attempts("start 5 1 n j -\nend 6 1 3 -\n") == (Attempt(1, 5.0, 6.0, "n", "j", (), 3),)


def _usage(ref: str, submit: float, start: float, end: float, gpus: int, state: str = "COMPLETED") -> UsageRow:
    job, _, task = ref.partition("_")
    return UsageRow(job, int(task) if task else None, state, 0, submit, start, end, int(end - start), 1, gpus, "vm", None, "100M")


def small_trace() -> RunTrace:
    """prepare → sweep (3 GPU tasks: one requeued, one failed) → evaluate (upstream failed)."""
    t = 1_800_000_000.0
    tasks = (
        TaskTrace("prepare", 0, "a" * 64, {}, "completed", "", 0, "10", t, (Attempt(1, t + 1, t + 3, "vm", "10", (), 0),),
                  (_usage("10", t, t + 1, t + 3, 0),)),
        TaskTrace("sweep", 0, "b" * 64, {"lr": 0.1}, "completed", "", 0, "11_0", t,
                  (Attempt(1, t + 4, t + 64, "vm", "11_0", ("0",), 99, "USR2"), Attempt(2, t + 200, t + 210, "vm", "11_0", ("1",), 0)),
                  (_usage("11_0", t, t + 4, t + 64, 1, "REQUEUED"), _usage("11_0", t + 64, t + 200, t + 210, 1))),
        TaskTrace("sweep", 1, "c" * 64, {"lr": 0.01}, "failed", "exit 3", 3, "11_1", t,
                  (Attempt(1, t + 4, t + 6, "vm", "11_1", ("1",), 3), Attempt(2, t + 6, t + 9, "vm", "11_1", ("1",), 3)),
                  (_usage("11_1", t, t + 4, t + 9, 1, "FAILED"),),
                  log_tail="hpcml: attempt 1 exited with 3\nTraceback: <boom> & more"),
        TaskTrace("sweep", 2, "d" * 64, {"lr": 0.001}, "completed", "", 0, "11_2", t,
                  (Attempt(1, t + 9, t + 20, "vm", "11_2", ("1",), 0),), (_usage("11_2", t, t + 9, t + 20, 1),)),
        TaskTrace("evaluate", 0, "e" * 64, {}, "upstream_failed", "", None, "12", t, (), ()),
    )
    steps = (
        StepInfo("prepare", (), "bb", "k1", 1),
        StepInfo("sweep", ("prepare",), "bb", "k1", 3),
        StepInfo("evaluate", ("sweep",), "bb", "k1", 1),
    )
    return RunTrace(
        "20270115-080000-abcd", "demo", "slurm", True, t + 300, steps, tasks,
        (ImageInfo("bb", "k1" * 32, "f" * 64, "2027-01-15T07:59:00Z", "login1", "ana", 12.5, "1.3.4"),),
        {"hpcml": "0.1.0", "executor": "slurm", "executor_reason": "slurm 22.05.8 found and slurmctld answers"},
        "hpcml: 1\nname: demo\n",
    )


def test_figures_from_allocations() -> None:
    tr = small_trace()
    # GPU-hours: allocated GPUs × elapsed over every allocation, the requeued one included.
    assert abs(tr.gpu_hours - (60 + 10 + 5 + 11) / 3600) < 1e-9
    assert tr.wall_s == 210 and tr.counts == {"completed": 3, "failed": 1, "upstream_failed": 1}
    sweep0 = tr.tasks[1]
    assert sweep0.queue_wait_s == 4 and sweep0.elapsed_s == 70
    assert [(s.kind, s.outcome) for s in sweep0.segments(tr.now)] == [
        ("queued", ""), ("run", "requeued"), ("queued", ""), ("run", "ok"),
    ]
    # A failure retried in its allocation is a failed attempt, not a requeue.
    assert [s.outcome for s in tr.tasks[2].segments(tr.now)] == ["", "failed", "failed"]


def test_a_preemption_is_a_requeue_and_counted_once_from_either_record() -> None:
    t = 1_800_000_000.0
    assert parse_attempts("start 5 1 n 7 -\nend 6 1 143 TERM preempted\n")[0].preempted
    attempts = (Attempt(1, t + 1, t + 30, "vm", "7", (), 9, "USR1", True), Attempt(2, t + 90, t + 95, "vm", "7", (), 0))
    # The checkpointing job handed its allocation back with a requeue: sacct says REQUEUED.
    task = TaskTrace("train", 0, "a" * 64, {}, "completed", "", 0, "7", t, attempts,
                     (_usage("7", t, t + 1, t + 30, 0, "REQUEUED"), _usage("7", t + 30, t + 90, t + 95, 0)))
    assert task.preempted == 1
    assert [s.outcome for s in task.segments(t + 100) if s.kind == "run"] == ["requeued", "ok"]
    # Without the wrapper's record (its file lost) sacct's PREEMPTED allocation counts.
    bare = replace(task, attempts=(), allocations=(_usage("7", t, t + 1, t + 30, 0, "PREEMPTED"),
                                                   _usage("7", t + 30, t + 90, t + 95, 0)))
    assert bare.preempted == 1 and task.as_dict(t + 100)["preempted"] == 1
    tr = replace(small_trace(), tasks=(task,))
    page = render(tr)
    assert "train/0 ×1 (requeued by SLURM; retries untouched)" in page
    assert 'id="failures"' not in page


def test_failures_first_own_failure_before_upstream() -> None:
    tr = small_trace()
    assert [t.label for t in tr.ordered()][:2] == ["sweep/1", "evaluate/0"]
    doc = tr.as_dict()
    assert doc["tasks"][0]["state"] == "failed" and doc["missing"] == []
    json.dumps(doc)  # JSON-able


def test_compact_data_one_row_per_task_with_every_segment() -> None:
    data = compact(small_trace())
    assert len(data["tasks"]) == 5
    sweep0 = data["tasks"][1]
    assert [data["segkinds"][k] for k in sweep0[14][::3]] == ["queued", "requeued", "queued", "ok"]


def test_page_is_self_contained_and_escaped(golden: Callable[[str, str], None]) -> None:
    html = render(small_trace())
    golden("report-small.html", html)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "<boom>" not in html and "&lt;boom&gt;" in html
    assert html.count("<script") == 2 and "</script>" not in html.split('id="hpcml-data">', 1)[1].split("</script>", 1)[0]
    assert 'data-task="sweep/1"' in html  # the failure with its cause


def test_a_job_still_pending_after_its_upstream_failed_is_queued_until_now() -> None:
    t = 1_800_000_000.0
    pending = UsageRow("12", None, "PENDING", 0, t, None, None, 0, 0, 0, "", None, "100M")
    task = TaskTrace("evaluate", 0, "e" * 64, {}, "upstream_failed", "", None, "12", t + 1, (), (pending,))
    assert [(s.kind, s.start, s.end) for s in task.segments(t + 50)] == [("queued", t + 1, t + 50)]
    never_queued = TaskTrace("evaluate", 0, "e" * 64, {}, "upstream_failed", "", None, None, t + 1, (), ())
    assert never_queued.segments(t + 50) == ()  # the local executor never started it
