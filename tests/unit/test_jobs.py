"""Job scripts: golden files, `bash -n`, shellcheck, quoting and refusal of unsafe values."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Callable

import pytest

from hpcml.errors import SubmitError
from hpcml.model import Checkpoint, Matrix, Resources, Step, Task
from hpcml.render import protocol
from hpcml.render.jobs import (
    RANKS_START,
    WRAPPER_START,
    ScriptSpec,
    job_name,
    parse_job_name,
    parse_manifest,
    render_env_file,
    render_manifest,
    render_step_script,
    render_task_command,
    render_wrapper,
    ranks_text,
    wrapper_text,
)

RUN = "20261126-061200-ab12"
ROOT = "/home/alice/cifar"


def _spec(step: Step, **kw: object) -> ScriptSpec:
    base = ScriptSpec(
        workflow="cifar-sweep",
        run_id=RUN,
        step=step,
        sif="/shared/lab/hpcml/sif/ab/ab12cd.sif",
        shell="bash",
        run_dir=f"{ROOT}/.hpcml",
        workflow_root=ROOT,
        run_root=f"{ROOT}/.hpcml/runs/{RUN}",
        exec_flags=("--userns",),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


TRAIN = Step(
    name="train",
    image="torch",
    run="python3 /opt/src/train.py",
    needs=("prepare",),
    matrix=Matrix(axes=(("lr", (0.1, 0.01)), ("seed", (1, 2, 3)))),
    max_parallel=3,
    resources=Resources(partition="gpu", time_s=4 * 3600, cpus=4, mem_mb=32768, gpus=1, gpu_type="a100", cpus_per_gpu=4),
    retries=2,
    checkpoint=Checkpoint("USR2", 120),
    secrets=("WANDB_API_KEY",),
    env=(("OMP_NUM_THREADS", "4"), ("TAGS", "a,b c$d")),
)
PREPARE = Step(
    name="prepare",
    image="base",
    run="python3 /opt/src/prepare.py",
    resources=Resources(partition="cpu", account="lab", qos="normal", time_s=1200, cpus=2, mem_mb=4096),
)

CASES = {
    "train-gpu-array.sbatch": _spec(
        TRAIN, indices=tuple(range(6)), array=True, env_file=f"{ROOT}/.hpcml/runs/{RUN}/env/train.env"
    ),
    "prepare-cpu.sbatch": _spec(PREPARE),
    "train-gpus-per-node-chunk.sbatch": _spec(
        TRAIN, indices=(4001, 4002, 4005), array=True, offset=4001, chunk=1, gpu_style="gpus-per-node"
    ),
    "busybox-sh.sbatch": _spec(
        Step(name="hello", image="busybox", run="echo hi", shell="sh", resources=Resources(time_s=30)), shell="sh"
    ),
    # Multi-process steps (docs/distributed.md): the rank launcher between settings and wrapper.
    "ddp-2nodes-per-gpu.sbatch": _spec(
        Step(
            name="ddp", image="torch", run="python3 /opt/src/train.py",
            resources=Resources(partition="gpu", time_s=3600, nodes=2, gpus=4, cpus_per_gpu=2, launch="per_gpu"),
            checkpoint=Checkpoint("USR2", 120), env=(("NCCL_DEBUG", "INFO"),),
        ),
        gpu_style="gpus-per-node",
    ),
    "torchrun-2nodes-per-node.sbatch": _spec(
        Step(
            name="torchrun", image="torch", run="torchrun --nnodes 2 --nproc-per-node 4 /opt/src/train.py",
            resources=Resources(partition="gpu", time_s=3600, nodes=2, gpus=4, cpus=8, launch="per_node"),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_scripts(name: str, golden: Callable[[str, str], None], tmp_path: Path) -> None:
    text = render_step_script(CASES[name])
    golden(name, text)
    script = tmp_path / name
    script.write_text(text)
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---- shellcheck: the template on its own, and every rendered job script ----------------

#: What shellcheck says about rendered scripts that is wrong for them (the template has
#: these as directives, which rendering leaves out): SC2317, the trap handlers look
#: unreachable to it; SC2209, `hpcml_shell=sh` is a string (shlex.quote leaves it bare);
#: SC2016, env values are single-quoted so that `$` stays literal.
RENDERED_EXCLUDES = "SC2016,SC2209,SC2317"


#: The comment that opens a multi-process step's rank settings (jobs.render_step_script).
RANKS_SECTION = "# ---- this step's ranks ----"


def _template() -> str:
    return resources.files("hpcml.render").joinpath("wrapper.sh").read_text(encoding="utf-8")


@pytest.mark.parametrize("template", ["wrapper.sh", "ranks.sh"])
def test_shellcheck_reads_the_wrapper_template_on_its_own(shellcheck: str, template: str) -> None:
    with resources.as_file(resources.files("hpcml.render").joinpath(template)) as path:
        done = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_single_process_scripts_have_no_rank_launcher() -> None:
    for name, spec in CASES.items():
        text = render_step_script(spec)
        multi = spec.step.resources.launch != "single"
        assert (RANKS_START in text) == multi and ("--ntasks-per-node" in text) == multi, name
        assert ("hpcml_container=(hpcml_ranks " in text) == multi, name
    ranks = ranks_text()
    assert ranks.startswith(RANKS_START) and not re.search(r"@[A-Z][A-Z0-9_]*@", ranks) and "# shellcheck" not in ranks
    assert f"port_base={protocol.MASTER_PORT_BASE} port_span={protocol.MASTER_PORT_SPAN}" in ranks


@pytest.mark.parametrize("name", sorted(CASES))
def test_shellcheck_passes_rendered_scripts(name: str, shellcheck: str, tmp_path: Path) -> None:
    script = tmp_path / name
    script.write_text(render_step_script(CASES[name]))
    done = subprocess.run([shellcheck, f"--exclude={RENDERED_EXCLUDES}", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_template_declares_the_settings_the_renderer_writes() -> None:
    header = _template().partition(WRAPPER_START)[0]
    declared = re.findall(r"^(hpcml_\w+)=", header, re.M)
    for spec in CASES.values():
        rendered = render_step_script(spec).partition(WRAPPER_START)[0].partition(RANKS_SECTION)[0]
        assert re.findall(r"^(hpcml_\w+)=", rendered, re.M) == declared


def test_the_wrapper_gets_every_protocol_value_and_keeps_no_marker() -> None:
    text = wrapper_text()
    assert text.startswith(WRAPPER_START) and text.endswith('exit "$hpcml_status"\n')
    assert not re.search(r"@[A-Z][A-Z0-9_]*@", text) and "# shellcheck" not in text
    assert f"exit {protocol.REQUEUE_EXIT}\n" in text
    assert f"for hpcml_var in {' '.join(protocol.DEVICE_ENV_VARS)}; do" in text
    assert f'"$taskdir/{protocol.TASK_COMMAND}"' in text
    used = set(re.findall(r"@([A-Z][A-Z0-9_]*)@", _template().partition(WRAPPER_START)[2]))
    assert used == set(protocol.WRAPPER_VALUES)  # no value defined for nothing


def test_unknown_markers_and_unsafe_values_are_refused() -> None:
    template = f"# header\n{WRAPPER_START}exit @NOPE@\n"
    with pytest.raises(SubmitError, match="unknown marker @NOPE@"):
        render_wrapper(template, {"REQUEUE_EXIT": "75"})
    with pytest.raises(SubmitError, match="plain words"):
        render_wrapper(template, {"NOPE": "75; rm -rf /"})
    with pytest.raises(SubmitError, match="has no line"):
        render_wrapper("exit 0\n", {})
    assert render_wrapper(f"#!x\n{WRAPPER_START}# shellcheck disable=SC2242\nexit @N@\n", {"N": "75"}) == (
        f"{WRAPPER_START}exit 75\n"
    )


def test_cpu_step_gets_no_gpu_flags() -> None:
    text = render_step_script(CASES["prepare-cpu.sbatch"])
    assert "--nv" not in text and "--gres" not in text and "hpcml_gpu=0" in text
    gpu = render_step_script(CASES["train-gpu-array.sbatch"])
    assert " --nv " in gpu and "#SBATCH --gres=gpu:a100:1" in gpu
    # SLURM refuses --cpus-per-task next to --cpus-per-gpu
    assert "--cpus-per-task" not in gpu and "#SBATCH --cpus-per-gpu=4" in gpu


def test_chunk_indices_are_offset() -> None:
    text = render_step_script(CASES["train-gpus-per-node-chunk.sbatch"])
    assert "#SBATCH --array=0-1,4%3" in text and "hpcml_offset=4001" in text
    assert "#SBATCH --job-name=hpcml.cifar-sweep.20261126-061200-ab12.train.1" in text


def test_env_values_are_quoted() -> None:
    text = render_step_script(CASES["train-gpu-array.sbatch"])
    assert "export APPTAINERENV_TAGS='a,b c\\$d'" in text


ODD_VALUES = ['a"b', "a\\b", "a`b`", "a$HOME", "a\\$HOME", 'a\\"b', "it's", "$(id)", "end$", "end\\", "x\ny", "${X:-d}"]


def _as_apptainer_injects(value: str) -> str:
    """What a container sees for an APPTAINERENV_ / --env-file value: apptainer (1.4,
    measured) writes `export NAME="<value with " escaped>"` into a script its shell runs."""
    script = 'printf %s "' + value.replace('"', '\\"') + '"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"HOME": "/root"}).stdout


@pytest.mark.parametrize("value", ODD_VALUES)
def test_env_values_reach_the_container_literally(value: str, tmp_path: Path) -> None:
    # Regression: `$HOME` in a step's env became the container's home, and `$x` in a
    # secret vanished, because apptainer expands values a second time.
    step = replace(PREPARE, env=(("V", value),))
    text = render_step_script(replace(CASES["prepare-cpu.sbatch"], step=step))
    line = re.search(r"^export APPTAINERENV_V=(?:[^'\s]+|'[^']*'|\"'\")+$", text, re.M).group(0)  # type: ignore[union-attr]
    exported = subprocess.run(["bash", "-c", f"{line}; printf %s \"$APPTAINERENV_V\""], capture_output=True, text=True).stdout
    assert _as_apptainer_injects(exported) == value
    (tmp_path / "e").write_text(render_env_file([("S", value)]))
    sourced = subprocess.run(["bash", "-c", f". {tmp_path / 'e'}; printf %s \"$S\""], capture_output=True, text=True).stdout
    assert _as_apptainer_injects(sourced) == value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"workflow_root": "/home/alice/my project"}, "without blanks"),
        ({"run_dir": "relative/.hpcml"}, "is not absolute"),
        ({"sif": "/x/a:b.sif"}, "':'"),
        ({"shell": "zsh"}, "allowed: bash, sh"),
        ({"step": replace(PREPARE, resources=Resources(partition="cpu --uid=0"))}, "invalid partition"),
        ({"step": replace(PREPARE, checkpoint=Checkpoint("USR2; rm -rf /", 10))}, "invalid checkpoint signal"),
        ({"step": replace(PREPARE, env=(("A B", "x"),))}, "invalid environment variable"),
    ],
)
def test_unsafe_values_are_refused(change: dict, message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        render_step_script(replace(CASES["prepare-cpu.sbatch"], **change))


def test_job_names_round_trip() -> None:
    assert parse_job_name(job_name("w", RUN, "train")) == ("w", RUN, "train", None)
    assert parse_job_name(job_name("w", RUN, "train", 2)) == ("w", RUN, "train", 2)
    assert parse_job_name("slurm-job") is None


def test_manifest_round_trip() -> None:
    tasks = [Task("train", i, (), "true", f"k{i}", ()) for i in (2, 0, 1)]
    text = render_manifest(tasks)
    assert text == "0 k0\n1 k1\n2 k2\n"
    assert parse_manifest(text) == {0: "k0", 1: "k1", 2: "k2"}


def test_task_command_and_env_file(tmp_path: Path) -> None:
    cmd = render_task_command("python3 train.py --lr 0.1", "bash", TRAIN, 3)
    assert cmd.splitlines()[1:] == ["set -eo pipefail", "trap ':' USR2", "python3 train.py --lr 0.1"]
    assert "trap" not in render_task_command("echo hi", "sh", PREPARE, 0)
    env = render_env_file([("WANDB_API_KEY", "s3cr3t'; rm -rf /")])
    assert env == "WANDB_API_KEY='s3cr3t'\"'\"'; rm -rf /'\n"
    # The env file is read by a shell interpreter: it must give back the exact value.
    (tmp_path / "e").write_text(env)
    out = subprocess.run(["bash", "-c", f". {tmp_path / 'e'}; printf %s \"$WANDB_API_KEY\""], capture_output=True, text=True)
    assert out.stdout == "s3cr3t'; rm -rf /"


# ---- the wrapper, run for real with bash (apptainer replaced by a fake that runs the
# command after the image path on the host) -----------------------------------------------

FAKE_APPTAINER = '#!/bin/bash\nwhile [[ $# -gt 0 && $1 != *.sif ]]; do shift; done\nshift\nexec "$@"\n'


def _runnable(tmp_path: Path, step: Step, *, array: bool = False) -> tuple[Path, Path]:
    """A job script of `step` (task 0, key k0) whose container is the host; (script, taskdir)."""
    fake = tmp_path / "fake-apptainer"
    fake.write_text(FAKE_APPTAINER)
    fake.chmod(0o755)
    run_dir, run_root = tmp_path / ".hpcml", tmp_path / ".hpcml" / "runs" / RUN
    (run_root / "jobs").mkdir(parents=True)
    (run_root / "jobs" / f"{step.name}.tasks").write_text("0 k0\n")
    taskdir = run_dir / "tasks" / step.name / "k0"
    taskdir.mkdir(parents=True)
    (taskdir / "cmd.sh").write_text(render_task_command(step.run, "bash", step, 0))
    spec = _spec(step, sif=str(tmp_path / "img.sif"), run_dir=str(run_dir), workflow_root=str(tmp_path),
                 run_root=str(run_root), apptainer=str(fake), exec_flags=(), array=array)
    script = run_root / "jobs" / f"{step.name}.sbatch"
    script.write_text(render_step_script(spec))
    return script, taskdir


def _fake_bin(tmp_path: Path, name: str, body: str) -> Path:
    """A directory holding one fake command `name` (for PATH)."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bindir / name).chmod(0o755)
    return bindir


def _requeues(calls: Path) -> list[str]:
    """The `scontrol requeue` calls a fake scontrol saw (the wrapper also asks `show job`)."""
    return [line for line in calls.read_text().splitlines() if line.startswith("requeue")]


def test_a_signal_before_the_task_started_keeps_it_from_starting(tmp_path: Path) -> None:
    # Regression: the loop cleared the signal flag before each attempt, so a scancel (or the
    # time limit) arriving while the wrapper set up, or between two attempts, was forgotten:
    # the task then ran to the end and wrote exit code 0 under a `cause: cancelled`.
    step = Step(name="s", image="i", run="echo task-ran", resources=Resources())
    script, taskdir = _runnable(tmp_path, step)
    started = tmp_path / "hostname-started"
    # `hostname` runs in the wrapper just before the attempt: the fake one holds it there.
    bindir = _fake_bin(tmp_path, "hostname", f"touch {started}; sleep 1; echo fake-host")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HPCML_EXECUTOR": "local"}
    proc = subprocess.Popen(["bash", str(script)], env=env)
    for _ in range(200):
        if started.exists():
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(15)
    assert proc.wait(timeout=30) == 143
    log = (taskdir / "log").read_text()
    assert "task-ran" not in log and "arrived before attempt 1 started" in log
    assert (taskdir / "exitcode").read_text() == "143\n"
    assert (taskdir / "cause").read_text() == "cancelled\n"


def test_a_plain_job_ignores_array_ids_inherited_from_its_submitter(tmp_path: Path) -> None:
    # Regression: sbatch exports the submitter's environment and sets SLURM_ARRAY_* only for
    # arrays (seen on SLURM 22.05), so `hpcml run` started inside an array task gave a plain
    # job that task's ids: it ran task 7 (not in the manifest: exit 3), and would have
    # requeued `99_7`, somebody else's job.
    step = Step(name="s", image="i", run="trap 'exit 9' USR2; touch started; while :; do sleep 0.05; done",
                resources=Resources(), retries=1, checkpoint=Checkpoint("USR2", 10))
    script, taskdir = _runnable(tmp_path, step)
    calls = tmp_path / "scontrol-calls"
    bindir = _fake_bin(tmp_path, "scontrol", f'echo "$@" >>{calls}')
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500", "SLURM_ARRAY_JOB_ID": "99",
           "SLURM_ARRAY_TASK_ID": "7"}
    proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    for _ in range(200):
        if (tmp_path / "started").exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(12)  # the checkpoint signal: requeue this job
    assert proc.wait(timeout=30) == 0
    assert _requeues(calls) == ["requeue 500"]
    assert "task s/0 key k0" in (taskdir / "log").read_text()


def test_an_array_task_requeues_itself_by_array_id(tmp_path: Path) -> None:
    step = Step(name="s", image="i", run="trap 'exit 9' USR2; touch started; while :; do sleep 0.05; done",
                resources=Resources(), retries=1, checkpoint=Checkpoint("USR2", 10))
    script, _taskdir = _runnable(tmp_path, step, array=True)
    calls = tmp_path / "scontrol-calls"
    bindir = _fake_bin(tmp_path, "scontrol", f'echo "$@" >>{calls}')
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "501", "SLURM_ARRAY_JOB_ID": "500",
           "SLURM_ARRAY_TASK_ID": "0"}
    proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    for _ in range(200):
        if (tmp_path / "started").exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(12)
    assert proc.wait(timeout=30) == 0
    assert _requeues(calls) == ["requeue 500_0"]


# A fake scontrol for what a real preemption cannot be made to do inside a unit test:
# `show job` answers as SLURM 22.05 does for a job it is preempting (PreemptTime after the
# instance's StartTime) or not (PreemptTime=None); every call is logged. The real thing is
# tests/integration/test_preemption_slurm.py.
def _fake_scontrol(tmp_path: Path, preempt_time: str, job_state: str = "RUNNING",
                   requeue_ok: bool = True, restarts: int = 0) -> tuple[Path, Path]:
    calls = tmp_path / "scontrol-calls"
    show = (f"JobId=500 JobName=s\\n   JobState={job_state} Reason=None Dependency=(null)\\n"
            f"   Requeue=1 Restarts={restarts} BatchFlag=1 Reboot=0 ExitCode=0:0\\n"
            "   SubmitTime=2026-12-02T10:00:00 EligibleTime=2026-12-02T10:00:00\\n"
            "   StartTime=2026-12-02T10:00:01 EndTime=Unknown Deadline=N/A\\n"
            f"   PreemptEligibleTime=2026-12-02T10:00:01 PreemptTime={preempt_time}\\n")
    body = (f'echo "$@" >>{calls}\nif [ "$1" = show ]; then printf "{show}"; fi\n'
            f'if [ "$1" = requeue ]; then exit {0 if requeue_ok else 1}; fi')
    return _fake_bin(tmp_path, "scontrol", body), calls


def _signal_when_started(proc: subprocess.Popen, started: Path, signum: int) -> None:
    for _ in range(200):
        if started.exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(signum)


def test_a_preempted_checkpointing_task_requeues_without_spending_a_retry(tmp_path: Path) -> None:
    # retries 0: a checkpoint requeue at the time limit would be refused; a preemption is not
    # the task's failure, so the wrapper hands the job back to SLURM anyway and counts it.
    step = Step(name="s", image="i", run="trap 'exit 9' USR2; touch started; while :; do sleep 0.05; done",
                resources=Resources(), retries=0, checkpoint=Checkpoint("USR2", 10))
    script, taskdir = _runnable(tmp_path, step)
    bindir, calls = _fake_scontrol(tmp_path, "2026-12-02T10:05:00")
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500"},
                            cwd=tmp_path)
    _signal_when_started(proc, tmp_path / "started", 12)
    assert proc.wait(timeout=30) == 0
    assert _requeues(calls) == ["requeue 500"]
    assert (taskdir / protocol.TASK_PREEMPTED).read_text() == "1\n"
    assert (taskdir / protocol.TASK_REQUEUE).exists()
    for name in (protocol.TASK_EXITCODE, protocol.TASK_CAUSE, protocol.TASK_TRIES):
        assert not (taskdir / name).exists(), name
    assert (taskdir / protocol.TASK_ATTEMPTS).read_text().splitlines()[-1].endswith(" 9 USR2 preempted")
    assert "SLURM is preempting or requeueing job 500" in (taskdir / "log").read_text()


def test_the_checkpoint_signal_without_a_preemption_spends_a_retry(tmp_path: Path) -> None:
    # PreemptTime=None: the signal is the time limit's; with retries 0 the task ends there.
    step = Step(name="s", image="i", run="trap 'exit 9' USR2; touch started; while :; do sleep 0.05; done",
                resources=Resources(), retries=0, checkpoint=Checkpoint("USR2", 10))
    script, taskdir = _runnable(tmp_path, step)
    bindir, calls = _fake_scontrol(tmp_path, "None")
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500"},
                            cwd=tmp_path)
    _signal_when_started(proc, tmp_path / "started", 12)
    assert proc.wait(timeout=30) == 9
    assert _requeues(calls) == []
    assert (taskdir / protocol.TASK_EXITCODE).read_text() == "9\n"
    assert (taskdir / protocol.TASK_TRIES).read_text() == "1\n"
    assert not (taskdir / protocol.TASK_PREEMPTED).exists()


def test_a_preemption_of_an_earlier_instance_is_not_this_ones(tmp_path: Path) -> None:
    # The second instance of a requeued job (SLURM_RESTART_COUNT=1, Restarts=1), with a
    # PreemptTime before its StartTime: a scancel now is a cancel, not a preemption.
    step = Step(name="s", image="i", run="touch started; while :; do sleep 0.05; done", resources=Resources())
    script, taskdir = _runnable(tmp_path, step)
    bindir, _calls = _fake_scontrol(tmp_path, "2026-12-02T09:00:00", job_state="COMPLETING", restarts=1)
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500",
                                                        "SLURM_RESTART_COUNT": "1"},
                            cwd=tmp_path)
    _signal_when_started(proc, tmp_path / "started", 15)
    assert proc.wait(timeout=30) == 143
    assert (taskdir / protocol.TASK_CAUSE).read_text() == "cancelled\n"
    assert not (taskdir / protocol.TASK_PREEMPTED).exists()


def test_a_preempted_task_leaves_when_slurm_ends_the_job_and_writes_no_end(tmp_path: Path) -> None:
    # The SIGTERM at the end of GraceTime, as SLURM 22.05 shows the job then (measured): no
    # PreemptTime any more, Restarts already 1 above this instance's, COMPLETING. No exit
    # code, no `cancelled`, no retry spent, no requeue of its own; SLURM requeues the job.
    step = Step(name="s", image="i", run="touch started; while :; do sleep 0.05; done", resources=Resources(),
                retries=0)
    script, taskdir = _runnable(tmp_path, step)
    bindir, calls = _fake_scontrol(tmp_path, "None", job_state="COMPLETING", restarts=1)
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500"},
                            cwd=tmp_path)
    _signal_when_started(proc, tmp_path / "started", 15)
    assert proc.wait(timeout=30) == 0
    assert _requeues(calls) == []
    assert (taskdir / protocol.TASK_PREEMPTED).read_text() == "1\n"
    for name in (protocol.TASK_EXITCODE, protocol.TASK_CAUSE, protocol.TASK_TRIES):
        assert not (taskdir / name).exists(), name


def test_a_preempted_task_stays_while_slurm_still_runs_its_job(tmp_path: Path) -> None:
    # Still RUNNING and the requeue refused: leaving now would make the job COMPLETED (never
    # requeued), so the wrapper stays, ignoring SIGTERM, until SLURM kills it (here the test).
    step = Step(name="s", image="i", run="touch started; while :; do sleep 0.05; done", resources=Resources(),
                retries=0)
    script, taskdir = _runnable(tmp_path, step)
    bindir, calls = _fake_scontrol(tmp_path, "2026-12-02T10:05:00", requeue_ok=False)
    proc = subprocess.Popen(["bash", str(script)], env={"PATH": f"{bindir}:/usr/bin:/bin", "SLURM_JOB_ID": "500"},
                            cwd=tmp_path, start_new_session=True)
    _signal_when_started(proc, tmp_path / "started", 15)
    for _ in range(200):
        if "waiting for SLURM to requeue" in (taskdir / "log").read_text():
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(15)
    subprocess.run(["sleep", "0.3"])
    assert proc.poll() is None
    os.killpg(proc.pid, 9)
    proc.wait(timeout=30)
    assert _requeues(calls) == ["requeue 500"]
    assert (taskdir / protocol.TASK_PREEMPTED).read_text() == "1\n"
    for name in (protocol.TASK_EXITCODE, protocol.TASK_CAUSE, protocol.TASK_TRIES):
        assert not (taskdir / name).exists(), name


def test_locally_a_checkpointed_task_asks_for_a_requeue(tmp_path: Path) -> None:
    # The local executor requeues a task that exits with REQUEUE_EXIT after writing the
    # TASK_REQUEUE marker (executors/local/scheduler.py reads the same two constants).
    step = Step(name="s", image="i", run="trap 'exit 9' USR2; touch started; while :; do sleep 0.05; done",
                resources=Resources(), retries=1, checkpoint=Checkpoint("USR2", 10))
    script, taskdir = _runnable(tmp_path, step)
    env = {"PATH": "/usr/bin:/bin", protocol.EXECUTOR_ENV: protocol.LOCAL_EXECUTOR}
    proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    for _ in range(200):
        if (tmp_path / "started").exists() or proc.poll() is not None:
            break
        subprocess.run(["sleep", "0.05"])
    proc.send_signal(12)
    assert proc.wait(timeout=30) == protocol.REQUEUE_EXIT
    assert (taskdir / protocol.TASK_REQUEUE).exists() and not (taskdir / protocol.TASK_EXITCODE).exists()
    assert (taskdir / protocol.TASK_ATTEMPT).read_text() == "1\n"


def test_a_gpu_task_sees_every_device_variable_it_was_given(tmp_path: Path) -> None:
    step = Step(name="s", image="i", run="env", resources=Resources(gpus=1))
    script, taskdir = _runnable(tmp_path, step)
    env = {"PATH": "/usr/bin:/bin", **{name: f"{i}" for i, name in enumerate(protocol.DEVICE_ENV_VARS)}}
    assert subprocess.run(["bash", str(script)], env=env, cwd=tmp_path).returncode == 0
    log = (taskdir / protocol.TASK_LOG).read_text()
    for i, name in enumerate(protocol.DEVICE_ENV_VARS):
        assert f"APPTAINERENV_{name}={i}\n" in log
