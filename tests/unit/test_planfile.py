"""plan.json: one writer, one typed loader that checks the format (and reads old runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcml.errors import StateError
from hpcml.executors.base import LiveJob, Observation
from hpcml.model import Matrix, Plan, Step, StepPlan, Task, Workflow
from hpcml.run import control, planfile
from hpcml.run import status as run_status
from hpcml.run.journal import Journal
from hpcml.run.rundir import RunDir

#: plan.json exactly as hpcml wrote it before the field was named `format`.
OLD_PLAN = """{
 "adopted": {},
 "cached": [
  "prep-k0"
 ],
 "path": "/tmp/w.yaml",
 "run": "20261126-000000-aaaa",
 "steps": [
  {
   "array": false,
   "image": "bb",
   "image_key": "img",
   "name": "prep",
   "needs": [],
   "tasks": [
    {
     "index": 0,
     "key": "prep-k0",
     "point": {},
     "upstream": []
    }
   ]
  },
  {
   "array": true,
   "image": "bb",
   "image_key": "img",
   "name": "train",
   "needs": [
    "prep"
   ],
   "tasks": [
    {
     "index": 0,
     "key": "train-k0",
     "point": {
      "i": 0
     },
     "upstream": [
      "prep-k0"
     ]
    },
    {
     "index": 1,
     "key": "train-k1",
     "point": {
      "i": 1
     },
     "upstream": [
      "prep-k0"
     ]
    }
   ]
  }
 ],
 "version": 1,
 "workflow": "wf"
}"""


class NoJobs:
    name = "slurm"
    detached = True

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        return []

    def observe(self, refs):  # type: ignore[no-untyped-def]
        return Observation({})


def _plan(tmp_path: Path) -> Plan:
    prep = Step("prep", "bb", "true")
    train = Step("train", "bb", "true", needs=("prep",), matrix=Matrix((("i", (0, 1)),)))
    wf = Workflow(str(tmp_path / "w.yaml"), str(tmp_path), "wf", {}, {"prep": prep, "train": train})
    p_tasks = (Task("prep", 0, (), "true", "prep-k0", ()),)
    t_tasks = tuple(Task("train", i, (("i", i),), "true", f"train-k{i}", ("prep-k0",)) for i in range(2))
    return Plan(wf, ("prep", "train"), {"prep": StepPlan(prep, "img", p_tasks), "train": StepPlan(train, "img", t_tasks)}, (), {})


def _run(tmp_path: Path, text: str) -> RunDir:
    rd = RunDir(tmp_path / ".hpcml")
    paths = rd.run("20261126-000000-aaaa")
    paths.root.mkdir(parents=True)
    paths.plan.write_text(text)
    journal = Journal(paths.journal)
    journal.append("run", executor="slurm")
    journal.append("intent", step="train", chunk=None, offset=0, indices=[0, 1], name="n")
    journal.append("submitted", step="train", chunk=None, offset=0, job_id="42", name="n")
    return rd


def test_written_plan_reads_back_the_same(tmp_path: Path) -> None:
    pf = planfile.from_plan(_plan(tmp_path), "20261126-000000-aaaa", {"prep-k0"}, {"train-k1": "7_1"})
    text = planfile.dumps(pf)
    assert json.loads(text)["format"] == planfile.PLAN_FORMAT and "version" not in json.loads(text)
    assert planfile.parse(json.loads(text), pf.run) == pf
    assert [t.key for t in pf.step("train").tasks] == ["train-k0", "train-k1"]  # type: ignore[union-attr]


def test_a_run_written_with_version_1_still_reads(tmp_path: Path) -> None:
    # Runs started before plan.json's field was named `format` must keep working.
    pf = planfile.parse(json.loads(OLD_PLAN), "20261126-000000-aaaa")
    assert pf.format == 1 and pf.cached == {"prep-k0"} and pf.step("train").array  # type: ignore[union-attr]
    old = json.loads(OLD_PLAN)
    old["format"] = old.pop("version")
    assert json.loads(planfile.dumps(pf)) == old  # the same shape, under the field's new name
    rd = _run(tmp_path, OLD_PLAN)
    rd.task("prep", "prep-k0").mkdir(parents=True)
    (rd.task("prep", "prep-k0") / "exitcode").write_text("0\n")
    st = run_status.status(rd, None, NoJobs())  # type: ignore[arg-type]
    assert [(t.step, t.index, t.state, t.job) for t in st.tasks] == [
        ("prep", 0, "cached", None),
        ("train", 0, "lost", "42_0"),
        ("train", 1, "lost", "42_1"),
    ]
    assert [label for label, _ in control.task_logs(rd, "train")] == ["train/0", "train/1"]


def test_a_plan_of_a_newer_hpcml_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    doc = json.loads(OLD_PLAN)
    del doc["version"]
    doc["format"] = planfile.PLAN_FORMAT + 1
    rd = _run(tmp_path, json.dumps(doc))
    message = (
        f"run 20261126-000000-aaaa's plan.json has format {planfile.PLAN_FORMAT + 1}; "
        f"this hpcml reads up to {planfile.PLAN_FORMAT}: upgrade hpcml"
    )
    with pytest.raises(StateError) as err:
        run_status.status(rd, None, NoJobs())  # type: ignore[arg-type]
    assert str(err.value) == message
    for read in (lambda: control.task_logs(rd, "train"), lambda: control.cancel(rd, None, NoJobs())):  # type: ignore[arg-type]
        with pytest.raises(StateError, match="upgrade hpcml"):
            read()


@pytest.mark.parametrize(
    "text",
    ["[]", '{"steps": []}', '{"format": "1", "steps": [], "workflow": "wf"}', '{"format": 1, "workflow": "wf"}',
     '{"format": 1, "workflow": "wf", "steps": [{"name": "a"}]}', "{not json"],
)
def test_a_malformed_plan_is_a_state_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(StateError, match="run r"):
        planfile.load(path, "r")
