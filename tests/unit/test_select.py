"""run/select: which tasks --only/--from/--until/--force and `retry` let a run submit."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml import plan as _plan
from hpcml.errors import SubmitError
from hpcml.model import Plan
from hpcml.run import select
from hpcml.run.select import Selection
from hpcml.spec import checker as spec

WORKFLOW = """\
hpcml: 1
name: sel
images:
  bb:
    from: scratch
    shell: sh
defaults:
  image: bb
steps:
  fetch:
    run: echo f > {out}/f
  prepare:
    needs: [fetch]
    run: cat {in.fetch}/f > {out}/p
  train:
    needs: [prepare]
    matrix: {lr: [1, 2, 3]}
    run: echo {lr} > {out}/t
  evaluate:
    needs: [train]
    run: cat {in.train}/*/t > {out}/e
  side:
    needs: [fetch]
    run: echo s > {out}/s
"""


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    (tmp_path / "workflow.yaml").write_text(WORKFLOW)
    return _plan.build(spec.load(tmp_path / "workflow.yaml"))


def steps_of(plan: Plan, keys: frozenset[str] | None) -> set[str]:
    assert keys is not None
    return {t.step for sp in plan.steps.values() for t in sp.tasks if t.key in keys}


def test_no_selection_runs_everything(plan: Plan) -> None:
    chosen = select.choose(plan, None)
    assert chosen.runnable is None and not chosen.forced
    assert select.subplan(plan, chosen) is plan


def test_only_from_until(plan: Plan) -> None:
    assert steps_of(plan, select.choose(plan, Selection(only=("train",))).runnable) == {"train"}
    assert steps_of(plan, select.choose(plan, Selection(start=("prepare",))).runnable) == {"prepare", "train", "evaluate"}
    assert steps_of(plan, select.choose(plan, Selection(until=("train",))).runnable) == {"fetch", "prepare", "train"}
    both = select.choose(plan, Selection(start=("prepare",), until=("train",)))
    assert steps_of(plan, both.runnable) == {"prepare", "train"}


def test_subplan_keeps_the_steps_read(plan: Plan) -> None:
    sub = select.subplan(plan, select.choose(plan, Selection(only=("evaluate",))))
    assert sub.step_order == ("train", "evaluate")  # train is read (from the cache), the rest left out
    assert sub.steps["train"] is plan.steps["train"]


def test_force_reruns_downstream_within_the_selection(plan: Plan) -> None:
    forced = select.choose(plan, Selection(force=("prepare",))).forced
    assert steps_of(plan, forced) == {"prepare", "train", "evaluate"}
    narrow = select.choose(plan, Selection(until=("train",), force=("prepare",)))
    assert steps_of(plan, narrow.forced) == {"prepare", "train"}
    with pytest.raises(SubmitError, match=r"--force fetch: not among the steps this run may run \(--only train"):
        select.choose(plan, Selection(only=("train",), force=("fetch",)))


def test_unknown_step_lists_the_steps(plan: Plan) -> None:
    with pytest.raises(SubmitError, match=r"--only: no step 'trian' in .*\(did you mean 'train'\?\); steps: fetch, prepare, train"):
        select.choose(plan, Selection(only=("trian",)))
    with pytest.raises(SubmitError, match="cannot be combined"):
        select.choose(plan, Selection(only=("train",), start=("prepare",)))
    with pytest.raises(SubmitError, match="no step is both"):
        select.choose(plan, Selection(start=("side",), until=("train",)))


def test_missing_upstream_names_the_output(plan: Plan) -> None:
    train = [t.key for t in plan.steps["train"].tasks]
    prepare = plan.steps["prepare"].tasks[0].key
    missing = select.missing_upstream(plan, train, available=())
    assert missing == {"prepare/0": ["train/0", "train/1", "train/2"]}
    assert select.missing_upstream(plan, train, available=(prepare,)) == {}
    text = select.missing_message(missing, Selection(only=("train",)))
    assert text.startswith("nothing submitted: --only train leaves out upstream output")
    assert "prepare/0 (needed by train/0, train/1, train/2)" in text and "`--from prepare`" in text


def test_retry_keys_and_an_edited_workflow(plan: Plan) -> None:
    failed = frozenset({plan.steps["train"].tasks[1].key, plan.steps["evaluate"].tasks[0].key})
    chosen = select.choose(plan, Selection(keys=failed))
    assert chosen.runnable == failed
    assert select.subplan(plan, chosen).step_order == ("prepare", "train", "evaluate")
    with pytest.raises(SubmitError, match="no longer in .*edited since"):
        select.choose(plan, Selection(keys=failed | {"0" * 64}))


def test_split_names() -> None:
    assert select.split_names(("a,b", "c", "a")) == ("a", "b", "c")


def test_a_task_submitted_again_has_its_whole_retries_and_no_old_preemptions(plan: Plan, tmp_path: Path) -> None:
    # `hpcml retry` / `--force`: the wrapper counts retries spent in `tries` and preemptions
    # in `preempted`; a new submission starts both afresh (as it does `attempt`).
    from hpcml.run.durable import DurableBatch
    from hpcml.run.rundir import RunDir
    from hpcml.run.taskdir import prepare_task

    run_dir = RunDir(tmp_path / ".hpcml")
    task = plan.steps["fetch"].tasks[0]
    folder = run_dir.task("fetch", task.key)
    folder.mkdir(parents=True)
    for name, text in (("exitcode", "3\n"), ("tries", "2\n"), ("preempted", "1\n"), ("attempt", "3\n")):
        (folder / name).write_text(text)
    batch = DurableBatch()
    prepare_task(run_dir, plan, task, batch)
    batch.flush()
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["attempt", "cmd.sh", "point.json"]
    assert (folder / "attempt").read_text() == "0\n"
