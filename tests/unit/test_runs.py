"""run/ without a cluster: reconciliation by job name, dependencies, plan.json, run ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcml.executors.choose import choose_executor
from hpcml.results import RunStatus
from hpcml.run import control, planfile, submit
from hpcml.run import status as run_status
from hpcml.run.reconcile import live_tasks, reconcile
from hpcml.errors import StateError
from hpcml.executors.base import LiveJob, Observation
from hpcml.render.jobs import render_manifest
from hpcml.model import Matrix, Plan, Step, StepPlan, Task, Workflow
from hpcml.run.journal import Journal
from hpcml.run.rundir import RunDir


class ListedJobs:
    """An executor stand-in that only lists live jobs (reconciliation reads nothing else)."""

    name = "slurm"
    detached = True
    poll_s, max_poll_s = 2.0, 30.0

    def __init__(self, jobs: list[LiveJob]):
        self.jobs = jobs

    def ready(self) -> None:
        pass

    def check_plan(self, plan: object) -> None:
        pass

    def live_jobs(self, name_prefix: str) -> list[LiveJob]:
        return [j for j in self.jobs if j.name.startswith(name_prefix)]

    def observe(self, refs):  # type: ignore[no-untyped-def]
        return Observation({})


def _tasks(step: str, n: int) -> list[Task]:
    return [Task(step, i, (("i", i),), "true", f"{step}-k{i}", ()) for i in range(n)]


def test_reconcile_maps_live_jobs_to_task_keys(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / ".hpcml")
    old = rd.run("20261126-000000-aaaa")
    old.jobs.mkdir(parents=True)
    old.manifest("train").write_text(render_manifest(_tasks("train", 6000)))
    old.manifest("prep").write_text(render_manifest(_tasks("prep", 1)))
    j = Journal(old.journal)
    j.append("intent", step="prep", chunk=None, offset=0, indices=[0], name="x")
    j.append("intent", step="train", chunk=1, offset=4001, indices=[4001, 4002], name="y")
    live = [
        LiveJob("hpcml.wf.20261126-000000-aaaa.prep", "10", None, "RUNNING"),
        LiveJob("hpcml.wf.20261126-000000-aaaa.train.1", "11", 0, "PENDING"),
        LiveJob("hpcml.wf.20261126-000000-aaaa.train.1", "11", 1, "PENDING"),
        LiveJob("hpcml.wf.20261126-999999-zzzz.prep", "12", None, "PENDING"),  # another directory's run
        LiveJob("hpcml.other.20261126-000000-aaaa.prep", "13", None, "PENDING"),  # another workflow
    ]
    adopted = live_tasks(ListedJobs(live), rd, "wf")  # type: ignore[arg-type]
    assert adopted == {"prep-k0": "10", "train-k4001": "11_0", "train-k4002": "11_1"}
    # the array job 11 was submitted with tasks 4001 and 4002, both live: it may be waited for whole
    _adopted, arrays = reconcile(ListedJobs(live), rd, "wf")  # type: ignore[arg-type]
    assert arrays == {"11": frozenset({"train-k4001", "train-k4002"})}


def _plan(tmp_path: Path) -> Plan:
    prep = Step("prep", "bb", "true")
    train = Step("train", "bb", "true", needs=("prep",), matrix=Matrix((("i", (0, 1, 2)),)))
    wf = Workflow(str(tmp_path / "w.yaml"), str(tmp_path), "wf", {}, {"prep": prep, "train": train})
    p_tasks = tuple(_tasks("prep", 1))
    t_tasks = tuple(Task("train", i, (("i", i),), "true", f"train-k{i}", ("prep-k0",)) for i in range(3))
    return Plan(wf, ("prep", "train"), {"prep": StepPlan(prep, "img", p_tasks), "train": StepPlan(train, "img", t_tasks)}, (), {})


def test_dependencies_name_live_upstream_jobs_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    train = plan.steps["train"]
    assert submit._dependencies(plan, train, {"prep-k0": "7"}, {}) == ["7"]
    assert submit._dependencies(plan, train, {}, {"prep-k0": "3_2"}) == ["3_2"]
    assert submit._dependencies(plan, train, {}, {}) == []  # upstream complete: nothing to wait for


def test_dependencies_on_an_earlier_runs_array_name_it_whole_where_they_may() -> None:
    # Issue 15, finding 7: a step taking over 3,000 live tasks of a killed run depended on
    # every task id (~30 KB; the kernel refuses one argument over 128 KiB).
    prep = Step("prep", "bb", "true", matrix=Matrix((("i", tuple(range(3000))),)))
    after = Step("after", "bb", "true", needs=("prep",))
    wf = Workflow("/w.yaml", "/", "wf", {}, {"prep": prep, "after": after})
    tasks = tuple(_tasks("prep", 3000))
    plan = Plan(wf, ("prep", "after"), {"prep": StepPlan(prep, "img", tasks),
                                        "after": StepPlan(after, "img", (Task("after", 0, (), "true", "a", ()),))}, (), {})
    adopted = {f"prep-k{i}": f"1574_{i}" for i in range(1, 3000)}  # task 0 completed already
    arrays = {"1574": frozenset(f"prep-k{i}" for i in range(3000))}
    whole = submit.whole_arrays(arrays, {"prep-k0"}, adopted)
    assert submit._dependencies(plan, plan.steps["after"], {}, adopted, whole) == ["1574"]
    # One of the array's tasks failed (this run resubmits it): afterok:1574 would never be
    # met, so the live tasks are named one by one.
    assert submit.whole_arrays(arrays, set(), adopted) == frozenset()
    deps = submit._dependencies(plan, plan.steps["after"], {"prep-k0": "1600"}, adopted, frozenset())
    assert deps[0] == "1600" and len(deps) == 3000


def test_plan_document_round_trips_through_status(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    rd = RunDir(tmp_path / ".hpcml")
    paths = rd.run("20261126-000000-bbbb")
    paths.root.mkdir(parents=True)
    paths.plan.write_text(planfile.dumps(planfile.from_plan(plan, paths.run_id, {"prep-k0"}, {})))
    (rd.task("prep", "prep-k0")).mkdir(parents=True)
    (rd.task("prep", "prep-k0") / "exitcode").write_text("0\n")
    Journal(paths.journal).append("run", executor="slurm")
    Journal(paths.journal).append("intent", step="train", chunk=None, offset=0, indices=[0, 1, 2], name="n")
    Journal(paths.journal).append("submitted", step="train", chunk=None, offset=0, job_id="42", name="n")
    st = run_status.status(rd, None, ListedJobs([]))  # type: ignore[arg-type]
    assert [(t.step, t.index, t.state, t.job) for t in st.tasks] == [
        ("prep", 0, "cached", None),
        ("train", 0, "lost", "42_0"),
        ("train", 1, "lost", "42_1"),
        ("train", 2, "lost", "42_2"),
    ]
    assert st.finished and not st.ok


def test_resolve_run_by_prefix(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / ".hpcml")
    with pytest.raises(StateError, match="no runs"):
        run_status.resolve_run(rd, None)
    for rid in ("20261126-000000-aaaa", "20261126-000100-bbbb"):
        rd.run(rid).root.mkdir(parents=True)
    assert run_status.resolve_run(rd, None) == "20261126-000100-bbbb"
    assert run_status.resolve_run(rd, "20261126-0000") == "20261126-000000-aaaa"
    with pytest.raises(StateError, match="several runs"):
        run_status.resolve_run(rd, "20261126")


def test_downstream_of_a_cancelled_run_is_cancelled_not_upstream_failed(tmp_path: Path) -> None:
    # Regression: after Ctrl-C / `hpcml cancel`, tasks waiting on cancelled ones were shown
    # as "upstream failed", as if something had failed.
    plan = _plan(tmp_path)
    rd = RunDir(tmp_path / ".hpcml")
    paths = rd.run("20261126-000000-cccc")
    paths.root.mkdir(parents=True)
    paths.plan.write_text(planfile.dumps(planfile.from_plan(plan, paths.run_id, set(), {})))
    journal = Journal(paths.journal)
    journal.append("run", executor="slurm")
    for step, indices, job in (("prep", [0], "41"), ("train", [0, 1, 2], "42")):
        journal.append("intent", step=step, chunk=None, offset=0, indices=indices, name=step)
        journal.append("submitted", step=step, chunk=None, offset=0, job_id=job, name=step)
    (rd.task("prep", "prep-k0")).mkdir(parents=True)
    (rd.task("prep", "prep-k0") / "cause").write_text("cancelled\n")
    (rd.task("prep", "prep-k0") / "exitcode").write_text("143\n")
    st = run_status.status(rd, None, ListedJobs([]))  # type: ignore[arg-type]
    assert {t.state for t in st.tasks if t.step == "train"} == {"upstream_failed"}  # not cancelled by the user
    (paths.root / "cancelled").write_text("now\n")
    st = run_status.status(rd, None, ListedJobs([]))  # type: ignore[arg-type]
    assert [t.state for t in st.tasks] == ["cancelled"] * 4


def test_a_workflow_directory_sbatch_cannot_carry_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # Regression: the path was checked when the first job script was rendered, after the
    # run directory, plan.json, journal and task directories had been written.
    from hpcml.config import Settings
    from hpcml.errors import SubmitError

    root = tmp_path / "my project"
    root.mkdir()
    (root / "w.yaml").write_text(
        "hpcml: 1\nname: wf\nimages:\n  bb:\n    from: scratch\n    shell: sh\nsteps:\n  a:\n    image: bb\n    run: 'true'\n"
    )
    settings = Settings(catalogs=(str(tmp_path / "cat"),), executor="local")
    with pytest.raises(SubmitError, match="workflow directory path .* contains ' '"):
        submit.start(root / "w.yaml", settings, ensure_images=lambda *a: pytest.fail("images ensured"))  # type: ignore[arg-type]
    assert sorted(p.name for p in root.iterdir()) == ["w.yaml"]


def test_choose_executor_names_what_decided() -> None:
    # Regression: HPCML_EXECUTOR=local was reported as set by the user's config file.
    from hpcml.config import Settings

    class NoSlurm:
        def controller(self) -> tuple[str, str]:
            return "absent", "sbatch is not installed"

    s = Settings(executor="local", sources=("/home/a/.config/hpcml/config.toml",))
    assert choose_executor(None, s, NoSlurm(), {"HPCML_EXECUTOR": "local"}) == ("local", "set by HPCML_EXECUTOR=local")  # type: ignore[arg-type]
    assert choose_executor(None, s, NoSlurm(), {}) == ("local", "set by `executor` in /home/a/.config/hpcml/config.toml")  # type: ignore[arg-type]
    assert choose_executor("slurm", s, NoSlurm(), {}) == ("slurm", "chosen with --executor")  # type: ignore[arg-type]
    assert choose_executor(None, Settings(), NoSlurm(), {}) == ("local", "sbatch is not installed; running tasks on this machine")  # type: ignore[arg-type]


def test_a_configured_slurm_whose_controller_does_not_answer_is_still_chosen() -> None:
    # Finding 2 of issue 15: a controller outage put a whole sweep on the login node.
    from hpcml.config import Settings

    class Said:
        def __init__(self, state: str) -> None:
            self.state = state

        def controller(self) -> tuple[str, str]:
            return self.state, f"slurm 22.05.8 ({self.state})"

    assert choose_executor(None, Settings(), Said("down"), {}) == ("slurm", "slurm 22.05.8 (down) now; waiting for it")  # type: ignore[arg-type]
    assert choose_executor(None, Settings(), Said("unconfigured"), {})[0] == "local"  # type: ignore[arg-type]
    assert choose_executor(None, Settings(), Said("up"), {})[0] == "slurm"  # type: ignore[arg-type]


def test_cancel_of_an_ended_run_cancels_nothing_and_keeps_its_failures(tmp_path: Path) -> None:
    # Regression: cancelling a finished run scancel'ed its failed tasks' jobs and marked the
    # run cancelled, so `status` showed "failed (exit 3)" as "cancelled".
    plan = _plan(tmp_path)
    rd = RunDir(tmp_path / ".hpcml")
    paths = rd.run("20261126-000000-dddd")
    paths.root.mkdir(parents=True)
    paths.plan.write_text(planfile.dumps(planfile.from_plan(plan, paths.run_id, set(), {})))
    journal = Journal(paths.journal)
    journal.append("run", executor="slurm")
    journal.append("intent", step="prep", chunk=None, offset=0, indices=[0], name="prep")
    journal.append("submitted", step="prep", chunk=None, offset=0, job_id="41", name="prep")
    rd.task("prep", "prep-k0").mkdir(parents=True)
    (rd.task("prep", "prep-k0") / "exitcode").write_text("3\n")

    class Refuses(ListedJobs):
        def cancel(self, refs):  # type: ignore[no-untyped-def]
            pytest.fail(f"cancelled {refs}")

    assert control.cancel(rd, None, Refuses([])) == (paths.run_id, [])  # type: ignore[arg-type]
    assert not (paths.root / "cancelled").exists()
    assert run_status.status(rd, None, ListedJobs([])).tasks[0].label == "failed (exit 3)"  # type: ignore[arg-type]


def test_history_names_unfinished_and_cancelled_tasks(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    rd = RunDir(tmp_path / ".hpcml")
    paths = rd.run("20261126-000000-eeee")
    paths.root.mkdir(parents=True)
    paths.plan.write_text(planfile.dumps(planfile.from_plan(plan, paths.run_id, set(), {})))
    Journal(paths.journal).append("run", executor="slurm")
    rd.task("prep", "prep-k0").mkdir(parents=True)
    (rd.task("prep", "prep-k0") / "exitcode").write_text("0\n")
    [summary] = control.history(rd)
    assert dict(summary.counts) == {"completed": 1, "unfinished": 3} and not summary.finished
    (paths.root / "cancelled").write_text("now\n")
    assert dict(control.history(rd)[0].counts) == {"completed": 1, "cancelled": 3}


def test_watch_of_a_local_run_never_backs_off_past_its_ceiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: the back-off grew to 30 s, so a local run could end up to 30 s after its
    # last task (and the live table lagged as long).
    from hpcml.run.tasks import TaskState

    class Local(ListedJobs):
        poll_s, max_poll_s = 0.5, 2.0

    rounds = iter([False] * 20 + [True])

    def fake_status(*_a: object) -> RunStatus:
        state = "completed" if next(rounds) else "running"
        return RunStatus("r", "wf", "local", (TaskState("a", 0, "k", state),))

    monkeypatch.setattr(run_status, "status", fake_status)
    sleeps: list[float] = []
    started = submit.RunStarted("r", RunDir(tmp_path), "wf", Local([]), "", {}, 0, 0, 1)  # type: ignore[arg-type]
    run_status.watch(started, lambda _st: None, sleep=sleeps.append)
    assert sleeps[0] == 0.5 and max(sleeps) == 2.0


def test_workflow_option_selects_that_workflows_runs(tmp_path: Path) -> None:
    # Regression: two workflow files in one directory share `.hpcml`; `--workflow b.yaml`
    # showed the latest run of a.yaml.
    for rid, name in (("20261126-000000-aaaa", "b"), ("20261126-000100-bbbb", "a")):
        paths = RunDir(tmp_path / ".hpcml").run(rid)
        paths.root.mkdir(parents=True)
        Journal(paths.journal).append("run", run=rid, path=str(tmp_path / f"{name}.yaml"), executor="slurm")
    assert run_status.resolve_run(RunDir.for_workflow(tmp_path / "b.yaml"), None) == "20261126-000000-aaaa"
    assert run_status.resolve_run(RunDir.for_workflow(tmp_path / "a.yaml"), None) == "20261126-000100-bbbb"
    assert run_status.resolve_run(RunDir(tmp_path / ".hpcml"), None) == "20261126-000100-bbbb"  # -C DIR: all runs
    with pytest.raises(StateError, match=r"no runs of .*c\.yaml"):
        run_status.resolve_run(RunDir.for_workflow(tmp_path / "c.yaml"), None)


def test_jobs_are_reconciled_after_the_images_are_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: squeue was asked before a possibly hour-long image build; a job adopted
    # then could fail and be forgotten meanwhile, and `afterok` on a forgotten id is satisfied.
    from hpcml.config import Settings

    order: list[str] = []

    class Recording(ListedJobs):
        name = "recording"

        def live_jobs(self, name_prefix: str) -> list[LiveJob]:
            order.append("squeue")
            return []

        def submit(self, job, depends_on):  # type: ignore[no-untyped-def]
            order.append("sbatch")
            return "1"

    monkeypatch.setattr(submit, "make_executor", lambda *a, **k: Recording([]))
    wf = tmp_path / "w.yaml"
    wf.write_text("hpcml: 1\nname: wf\nimages:\n  bb:\n    from: scratch\n    shell: sh\nsteps:\n  a:\n    image: bb\n    run: 'true'\n")
    settings = Settings(catalogs=(str(tmp_path / "cat"),), executor="local")

    def images(plan, s, names):  # type: ignore[no-untyped-def]
        order.append("images")
        return {"bb": str(tmp_path / "bb.sif")}

    submit.start(wf, settings, ensure_images=images).close()
    assert order == ["images", "squeue", "sbatch"]


def test_a_run_being_created_is_not_a_run(tmp_path: Path) -> None:
    # A crash while runs/<id>/ was being written leaves only a hidden staging directory,
    # which status and history must not take for the latest run (it has no plan.json).
    rd = RunDir(tmp_path / ".hpcml")
    rd.run("20261126-000000-aaaa").root.mkdir(parents=True)
    (rd.path / "runs" / ".20261126-000100-bbbb.tmp").mkdir()
    assert rd.run_ids() == ["20261126-000000-aaaa"]
