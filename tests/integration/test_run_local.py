"""`hpcml run --executor local` end to end: real Apptainer, real processes, the real CLI.

The workflows use the tiny busybox image (`shell: sh`); each test runs `hpcml run` as a
user would (a subprocess, no terminal) with its own catalog, and checks what the run
directory, the containers and /proc show. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpcml.executors.local.executor import NAME_ENV
from hpcml.executors.local.procs import process_env, processes_with_env, session_members
from hpcml.executors.local.scheduler import REF_ENV
from testbed import Apptainer

pytestmark = pytest.mark.testbed


@pytest.fixture
def hpcml_env(tmp_path: Path, apptainer: Apptainer) -> dict[str, str]:
    """The environment of a new user's `hpcml run`: own catalog, no config files, 2 fake GPUs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCML_")}
    env.update(
        HPCML_CONFIG=str(tmp_path / "no-user-config.toml"),
        HPCML_SITE_CONFIG=str(tmp_path / "no-site-config.toml"),
        HPCML_CATALOGS=str(tmp_path / "catalog"),
        HPCML_CACHE_DIR=str(tmp_path / "cache"),
        HPCML_EXEC_FLAGS=" ".join(apptainer.exec_flags),
        HPCML_BUILD_FLAGS=" ".join(apptainer.build_flags),
        HPCML_LOCAL_GPUS="0,1",
        HPCML_LOCAL_CPUS="8",
    )
    return env


def workflow(directory: Path, busybox: Path, name: str, steps: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "workflow.yaml"
    path.write_text(
        f"hpcml: 1\nname: {name}\nimages:\n  bb:\n    from: localimage:{busybox}\n    shell: sh\n"
        f"defaults:\n  image: bb\nsteps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return path


def hpcml(*args: str, env: dict[str, str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hpcml.cli", *args], env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if check:
        assert done.returncode == 0, f"hpcml {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def status(path: Path, env: dict[str, str]) -> dict[str, str]:
    done = hpcml("status", "--json", "--workflow", str(path), env=env, check=False)
    doc = json.loads(done.stdout)
    return {f"{t['step']}/{t['index']}": t["state"] for t in doc["tasks"]}


SWEEP = """\
prepare:
  run: echo 'rows=1000' > {out}/data.txt
train:
  needs: [prepare]
  matrix: {lr: [1, 2, 3], seed: [1, 2]}
  max_parallel: 3
  resources: {partition: gpu, gpus: 1, time: 5m}
  run: |
    n=$(sed 's/rows=//' {in.prepare}/data.txt)
    echo "lr={lr} seed={seed} score=$(( n / ({lr} + {seed}) ))" > {out}/metrics.txt
    echo "$CUDA_VISIBLE_DEVICES" > {out}/devices.txt
evaluate:
  needs: [train]
  run: cat {in.train}/*/metrics.txt | sort > {out}/report.txt
"""


def outputs(path: Path, step: str, name: str) -> list[str]:
    return sorted(p.read_text() for p in (path.parent / ".hpcml" / "tasks" / step).glob(f"*/out/{name}"))


def test_realistic_sweep_runs_locally_and_resumes(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:
    path = workflow(tmp_path / "wf", busybox_sif, "sweep", SWEEP)
    first = hpcml("run", str(path), "--executor", "local", env=hpcml_env)
    assert "executor: local (chosen with --executor)" in first.stderr + first.stdout
    # The image (a localimage child of busybox) is built here, and `hpcml run` says so.
    assert "image bb: building (key " in first.stderr and "image bb: built in " in first.stderr
    assert set(status(path, hpcml_env).values()) == {"completed"}
    report = outputs(path, "evaluate", "report.txt")[0].splitlines()
    assert len(report) == 6 and report[0] == "lr=1 seed=1 score=500"
    # Each GPU task saw exactly one of the configured devices.
    assert set(outputs(path, "train", "devices.txt")) <= {"0\n", "1\n"}
    second = hpcml("run", str(path), "--executor", "local", env=hpcml_env)
    assert "8 cached" in second.stderr + second.stdout
    assert "image bb" not in second.stderr  # nothing to run: no image needed
    assert set(status(path, hpcml_env).values()) == {"cached"}


def test_same_states_and_outputs_as_on_slurm(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str], slurm_cluster: object
) -> None:
    results = {}
    for executor in ("local", "slurm"):
        # The workflow directory must be visible to the SLURM node: it is this machine.
        path = workflow(tmp_path / executor, busybox_sif, "sweepcmp", SWEEP)
        hpcml("run", str(path), "--executor", executor, "--watch", env=hpcml_env, timeout=300)
        results[executor] = (
            status(path, hpcml_env),
            outputs(path, "evaluate", "report.txt"),
            outputs(path, "train", "metrics.txt"),
        )
    assert results["local"] == results["slurm"]


def test_gpu_tasks_never_share_a_device_and_a_third_waits(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]
) -> None:
    path = workflow(tmp_path / "wf", busybox_sif, "gpus", """\
        train:
          matrix: {i: [0, 1, 2]}
          resources: {gpus: 1}
          run: sleep 2
    """)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcml.cli", "run", str(path), "--executor", "local"],
        env=hpcml_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen: dict[str, str] = {}  # task ref → device, from the live task processes
    most_at_once = 0
    while proc.poll() is None:
        live: dict[str, str] = {}
        for pid in processes_with_env(NAME_ENV, None):
            env = process_env(pid)
            if env.get(NAME_ENV, "").startswith("hpcml.gpus."):
                live[env[REF_ENV]] = env.get("CUDA_VISIBLE_DEVICES", "")
        assert len(set(live.values())) == len(live), f"tasks share a device: {live}"
        most_at_once = max(most_at_once, len(live))
        seen.update(live)
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    assert len(seen) == 3 and set(seen.values()) == {"0", "1"}
    assert most_at_once == 2  # the third task waited for a device


def test_time_limit_gives_timeout_and_checkpointing_requeues_to_completion(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]
) -> None:
    path = workflow(tmp_path / "wf", busybox_sif, "limits", """\
        overtime:
          resources: {time: 3s}
          run: sleep 60
        resumable:
          resources: {time: 6s}
          retries: 1
          checkpoint: {signal: USR2, grace: 3}
          run: |
            if [ -e {out}/checkpoint ]; then echo "resumed from $(cat {out}/checkpoint)" > {out}/result; exit 0; fi
            trap 'echo step-41 > {out}/checkpoint; exit 99' USR2
            sleep 60 & wait
    """)
    done = hpcml("run", str(path), "--executor", "local", env=hpcml_env, check=False)
    assert done.returncode == 1
    states = status(path, hpcml_env)
    assert states == {"overtime/0": "timeout", "resumable/0": "completed"}
    assert outputs(path, "resumable", "result") == ["resumed from step-41\n"]
    log = next((path.parent / ".hpcml" / "tasks" / "resumable").glob("*/log")).read_text()
    assert "asking the local executor to requeue" in log and "attempt 2 of 2" in log


def test_ctrl_c_leaves_no_orphans_and_a_rerun_finishes_only_what_was_left(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]
) -> None:
    wf = tmp_path / "wf"
    path = workflow(wf, busybox_sif, "interrupt", """\
        prepare:
          run: echo ok > {out}/data
        work:
          needs: [prepare]
          matrix: {i: [0, 1, 2, 3]}
          run: |
            if [ {i} -ge 2 ] && [ -e %s/block ]; then sleep 300; fi
            echo {i} > {out}/done
        evaluate:
          needs: [work]
          run: cat {in.work}/*/done > {out}/all
    """ % wf)
    (wf / "block").touch()
    env = {**hpcml_env, "HPCML_LOCAL_CPUS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcml.cli", "run", str(path), "--executor", "local"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sessions: set[int] = set()
    deadline = time.monotonic() + 120
    while len(sessions) < 2 and time.monotonic() < deadline:  # both blocking tasks running
        for pid in processes_with_env(NAME_ENV, None):
            env_of = process_env(pid)
            if env_of.get(NAME_ENV, "").startswith("hpcml.interrupt.") and env_of.get(REF_ENV, "").endswith(("_2", "_3")):
                sessions.add(os.getsid(pid))
        time.sleep(0.1)
    assert len(sessions) == 2, "the blocking tasks never started"
    time.sleep(1)  # let the containers start inside the tasks
    assert all(session_members(s) for s in sessions)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "hpcml: interrupted: the run's tasks were cancelled; `hpcml status` shows them" in out
    assert [s for s in sessions if session_members(s)] == []
    assert [p for p in processes_with_env(NAME_ENV, None) if "hpcml.interrupt." in process_env(p).get(NAME_ENV, "")] == []
    states = status(path, hpcml_env)
    assert states["work/0"] == states["work/1"] == states["prepare/0"] == "completed"
    assert states["work/2"] == states["work/3"] == "cancelled"
    assert states["evaluate/0"] in ("cancelled", "upstream_failed")

    (wf / "block").unlink()
    rerun = hpcml("run", str(path), "--executor", "local", env=env)
    assert "3 cached" in rerun.stderr + rerun.stdout
    assert set(status(path, hpcml_env).values()) == {"cached", "completed"}
    assert outputs(path, "evaluate", "all") == ["0\n1\n2\n3\n"]
    # The tasks that had completed ran once; the cancelled ones twice.
    logs = {p.parent.name: p.read_text().count(" attempt 1 of ") for p in (wf / ".hpcml" / "tasks" / "work").glob("*/log")}
    assert sorted(logs.values()) == [1, 1, 2, 2]


def test_refusals_come_before_anything_is_built_or_run(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]
) -> None:
    path = workflow(tmp_path / "wf", busybox_sif, "refused", """\
        big:
          resources: {gpus: 4}
          run: touch {out}/ran
    """)
    done = hpcml("run", str(path), "--executor", "local", env=hpcml_env, check=False)
    assert done.returncode == 1
    assert "step big: asks more than this machine offers: GPUs 4 > 2" in done.stderr
    assert "HPCML_LOCAL_GPUS" in done.stderr
    done = hpcml("run", str(path), "--executor", "local", "--detach", env=hpcml_env, check=False)
    assert done.returncode == 1 and "--detach: the local executor runs tasks inside `hpcml run`" in done.stderr
    assert not (tmp_path / "wf" / ".hpcml" / "runs").exists()
    assert not (tmp_path / "catalog").exists() or not any((tmp_path / "catalog").rglob("*.sif"))


ODD = ["it's", 'say "hi"', "$HOME", "`id`", "a\\b", "50% off, 2:1"]


def test_odd_values_reach_the_task_literally(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:
    # Regression: apptainer expanded `$HOME` in a step's env and dropped `$x` from a secret.
    env_yaml = json.dumps({f"V{i}": v for i, v in enumerate(ODD)})
    path = workflow(tmp_path / "odd", busybox_sif, "odd", f"""\
        show:
          matrix: {{word: {json.dumps(ODD[:3])}}}
          env: {env_yaml}
          secrets: [ODD_TOKEN]
          run: |
            printf '%s\\n' {{word}} > {{out}}/word
            for v in {' '.join(f'"$V{i}"' for i in range(len(ODD)))} "$ODD_TOKEN"; do printf '%s\\n' "$v"; done > {{out}}/env
        """)
    hpcml("run", str(path), "--executor", "local", env={**hpcml_env, "ODD_TOKEN": "t$x'`y`\"\\"})
    words = [w.strip() for w in outputs(path, "show", "word")]
    assert sorted(words) == sorted(ODD[:3])
    assert set(outputs(path, "show", "env")) == {"\n".join([*ODD, "t$x'`y`\"\\"]) + "\n"}
