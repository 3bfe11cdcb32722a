"""Ctrl-C during `hpcml run` raises RunInterrupted, whose fields (not the wording of earlier
messages) say what became of the run. The local executor here is the real one; the SLURM
case, where jobs keep running, is in tests/integration/test_run_interrupt_slurm.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpcml import api
from hpcml.config import Settings
from hpcml.errors import HpcmlError, RunInterrupted
from hpcml.run import status as run_status
from hpcml.run import submit
from hpcml.run.rundir import RunDir, RunLock

WORKFLOW = """\
hpcml: 1
name: wf
images:
  bb:
    from: scratch
    shell: sh
steps:
  a:
    image: bb
    run: 'true'
  b:
    image: bb
    needs: [a]
    run: 'true'
"""


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(WORKFLOW)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(catalogs=(str(tmp_path / "cat"),), executor="local", local_cpus=2)


def fake_images(tmp_path: Path) -> Callable[..., dict[str, str]]:
    # No task ever starts in these tests (the interrupt comes first): the SIF is never read.
    return lambda plan, s, names: {"bb": str(tmp_path / "bb.sif")}


def interrupt_on(prefix: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        if message.startswith(prefix):
            raise KeyboardInterrupt

    return say


def test_the_three_messages_follow_from_the_facts() -> None:
    cases = [
        (RunInterrupted(submitted=0, executor="slurm", tasks_cancelled=False),
         "interrupted before anything was submitted; rerun to start again"),
        (RunInterrupted(submitted=3, executor="local", tasks_cancelled=True),
         "interrupted: the run's tasks were cancelled; `hpcml status` shows them, a rerun resumes"),
        (RunInterrupted(submitted=3, executor="slurm", tasks_cancelled=False),
         "interrupted: the SLURM jobs keep running; `hpcml status` follows them, `hpcml cancel` stops them"),
    ]
    for err, message in cases:
        assert str(err) == message and err.exit_code == 130 and isinstance(err, HpcmlError)


def test_interrupt_before_the_lock_is_taken(workflow: Path, settings: Settings) -> None:
    with pytest.raises(RunInterrupted) as caught:
        api.run(workflow, executor="local", settings=settings, on_message=interrupt_on("executor:"))
    err = caught.value
    assert (err.submitted, err.executor, err.tasks_cancelled) == (0, "local", False)
    assert not (workflow.parent / ".hpcml").exists()


def test_interrupt_while_images_are_ensured_submits_nothing_and_frees_the_lock(
    tmp_path: Path, workflow: Path, settings: Settings
) -> None:
    def images(*_a: object) -> dict[str, str]:
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as caught:
        submit.start(workflow, settings, ensure_images=images)
    err = caught.value
    assert (err.submitted, err.executor, err.tasks_cancelled, err.run_id) == (0, "local", False, None)
    assert str(err) == "interrupted before anything was submitted; rerun to start again"
    with RunLock(RunDir.for_workflow(workflow)):  # released: a rerun can start
        pass


def test_interrupt_mid_submission_cancels_a_local_runs_tasks(tmp_path: Path, workflow: Path, settings: Settings) -> None:
    with pytest.raises(RunInterrupted) as caught:
        submit.start(workflow, settings, ensure_images=fake_images(tmp_path), on_message=interrupt_on("submitted a"))
    err = caught.value
    assert (err.submitted, err.executor, err.tasks_cancelled) == (1, "local", True)
    assert "tasks were cancelled" in str(err)
    st = run_status.status(RunDir.for_workflow(workflow), err.run_id, settings=settings)
    assert [(t.step, t.state) for t in st.tasks] == [("a", "cancelled"), ("b", "cancelled")]
    with RunLock(RunDir.for_workflow(workflow)):
        pass
