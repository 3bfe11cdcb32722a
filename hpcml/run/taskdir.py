"""A task's directory before its job starts: out/, cmd.sh (the command with its paths filled
in), point.json, and for a matrix upstream the folder of links that `{in.STEP}` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from hpcml import plan as _plan
from hpcml.model import Plan, StepPlan, Task
from hpcml.render import jobs as _jobs
from hpcml.run.durable import DurableBatch
from hpcml.run.rundir import RunDir
from hpcml.render.protocol import (
    TASK_ATTEMPT,
    TASK_CAUSE,
    TASK_COMMAND,
    TASK_EXITCODE,
    TASK_OUT,
    TASK_PREEMPTED,
    TASK_REQUEUE,
    TASK_TRIES,
)


def step_shell(plan: Plan, sp: StepPlan) -> str:
    """The shell that runs the step's command: the step's own, else its image's."""
    return sp.step.shell or plan.workflow.images[sp.step.image].shell


def prepare_task(run_dir: RunDir, plan: Plan, task: Task, batch: DurableBatch) -> None:
    """The task directory: out/, cmd.sh, point.json; stale state of a failed try removed.
    The files are durable once `batch` is flushed."""
    sp = plan.steps[task.step]
    tdir = run_dir.task(task.step, task.key)
    fresh = not tdir.is_dir()  # nothing stale to remove: spares three unlinks per task of a new sweep
    (tdir / TASK_OUT).mkdir(parents=True, exist_ok=True)
    inputs = {up: input_path(run_dir, plan, up, task) for up in sp.step.needs}
    command = _plan.fill_paths(task.command, str(tdir / TASK_OUT), inputs)
    batch.write(tdir / TASK_COMMAND, _jobs.render_task_command(command, step_shell(plan, sp), sp.step, task.index))
    batch.write(tdir / "point.json", json.dumps(dict(task.point), sort_keys=True) + "\n")
    # A new submission has its whole `retries` again, and counts its own preemptions.
    for name in () if fresh else (TASK_EXITCODE, TASK_CAUSE, TASK_REQUEUE, TASK_TRIES, TASK_PREEMPTED):
        (tdir / name).unlink(missing_ok=True)
    batch.write(tdir / TASK_ATTEMPT, "0\n")


def input_path(run_dir: RunDir, plan: Plan, up: str, task: Task) -> str:
    """{in.UP}: the upstream task's out/, or for a matrix step a directory of symlinks."""
    usp = plan.steps[up]
    wanted = set(task.upstream)  # once, not per upstream task: a fan-in may have thousands
    ups = [t for t in usp.tasks if t.key in wanted] or list(usp.tasks)
    if not usp.is_array:
        return str(run_dir.task(up, ups[0].key) / TASK_OUT)
    digest = hashlib.sha256("\n".join(t.key for t in ups).encode()).hexdigest()[:16]
    folder = run_dir.step_inputs(up, digest)
    if not folder.is_dir():
        tmp = folder.with_name(f".{digest}.tmp.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for t in ups:
            # Relative links resolve the same inside the container, where .hpcml is bound
            # at its host path.
            os.symlink(f"../../../tasks/{up}/{t.key}/{TASK_OUT}", tmp / str(t.index))
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # someone else made it: same content
    return str(folder)
