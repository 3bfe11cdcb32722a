"""`hpcml run` on the real SLURM testbed with tiny busybox images.

What is shown: the DAG runs in order with GPU binding; resume submits nothing, and a
changed step reruns alone; a failing task leaves its downstream "upstream failed" and a
non-zero exit; a retry in the allocation; an ambiguous sbatch failure (fake sbatches that
submit and then report an unknown error, hang past `sbatch_timeout_s`, or report a socket
time-out) does not duplicate the job; `kill -9` of
`hpcml run` at several points of the submission, then a rerun, runs every task once.
The time-limit and checkpoint/requeue tests are in test_run_slurm_limits.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpcml import api, config
from hpcml.config import Settings
from hpcml.errors import SubmitError
from testbed import BUSYBOX, write_busybox_workflow

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]

DAG = """\
  prepare:
    run: echo data > {out}/data.txt; echo x >> {out}/ran
  sweep:
    needs: [prepare]
    matrix: {x: [1, 2, 3]}
    max_parallel: 2
    run: |
      cat {in.prepare}/data.txt > {out}/r.txt
      echo {x} >> {out}/r.txt
      echo x >> {out}/ran
  gpu:
    needs: [prepare]
    matrix: {i: [0, 1]}
    resources: {partition: gpu, gpus: 1}
    run: echo "${CUDA_VISIBLE_DEVICES:-unset}" > {out}/devices; echo x >> {out}/ran
  evaluate:
    needs: [sweep, gpu]
    run: cat {in.sweep}/*/r.txt > {out}/all.txt; echo "${CUDA_VISIBLE_DEVICES:-unset}" > {out}/devices; echo x >> {out}/ran
"""


def write_workflow(root: Path, name: str, steps: str) -> Path:
    return write_busybox_workflow(root, name, steps)


def settings_env(apptainer, catalog: Path) -> dict[str, str]:  # noqa: ANN001 - testbed.Apptainer
    """HPCML_* settings for a test: its own catalog, the testbed's apptainer flags."""
    return {
        "HPCML_CATALOGS": str(catalog / "cat"),
        "HPCML_CACHE_DIR": str(catalog / "cache"),
        "HPCML_BUILD_FLAGS": " ".join(apptainer.build_flags),
        "HPCML_EXEC_FLAGS": " ".join(apptainer.exec_flags),
        "HPCML_APPTAINER": apptainer.binary,
        "HPCML_SITE_CONFIG": "/nonexistent",
        "HPCML_CONFIG": "/nonexistent",
    }


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture
def settings(apptainer, catalog: Path, slurm_cluster) -> Settings:  # noqa: ANN001
    return config.load(env={"HOME": str(catalog), **settings_env(apptainer, catalog)})


def ran(task_out: Path) -> int:
    """How many times a task's command ran (each appends a line to out/ran)."""
    try:
        return len((task_out / "ran").read_text().splitlines())
    except FileNotFoundError:
        return 0


def outs(wf: Path, step: str) -> list[Path]:
    st = api.status(workflow=str(wf))
    return [wf.parent / ".hpcml" / "tasks" / step / t.key / "out" for t in st.tasks if t.step == step]


def host_devices(log: Path) -> str:
    """The devices SLURM gave the job, as the wrapper logged them on the host."""
    line = next(l for l in log.read_text().splitlines() if l.startswith("hpcml:") and " devices " in l)
    return line.rsplit(" devices ", 1)[1].strip()


def test_dag_in_order_with_gpus_then_resume(tmp_path: Path, settings: Settings) -> None:
    wf = write_workflow(tmp_path / "dag", "dag", DAG)
    first = api.run(wf, executor="slurm", settings=settings, poll_s=1)
    assert first.ok, first.status and first.status.as_dict()
    assert first.submitted == 7 and set(first.jobs) == {"prepare", "sweep", "gpu", "evaluate"}
    # evaluate ran after every sweep task: its input holds all three results
    all_txt = outs(wf, "evaluate")[0] / "all.txt"
    assert all_txt.read_text().split() == ["data", "1", "data", "2", "data", "3"]

    # each GPU task's container saw exactly the device SLURM gave that job
    for out in outs(wf, "gpu"):
        inside = (out / "devices").read_text().strip()
        assert inside in ("0", "1") and inside == host_devices(out.parent / "log")
    # the CPU step got no --nv and no device
    run_root = wf.parent / ".hpcml" / "runs" / first.run_id / "jobs"
    assert "--nv" not in (run_root / "evaluate.sbatch").read_text()
    assert " --nv " in (run_root / "gpu.sbatch").read_text()
    assert (outs(wf, "evaluate")[0] / "devices").read_text().strip() == "unset"

    # resume: nothing to do
    again = api.run(wf, executor="slurm", settings=settings, poll_s=1)
    assert again.submitted == 0 and again.jobs == {} and again.cached == 7 and again.ok
    assert {t.state for t in again.status.tasks} == {"cached"}

    # change evaluate only: only evaluate runs again
    text = wf.read_text().replace("cat {in.sweep}/*/r.txt", "cat {in.sweep}/*/r.txt {in.sweep}/0/r.txt")
    wf.write_text(text)
    third = api.run(wf, executor="slurm", settings=settings, poll_s=1)
    assert third.ok and third.submitted == 1 and list(third.jobs) == ["evaluate"] and third.cached == 6
    for step in ("prepare", "sweep", "gpu"):
        assert all(ran(o) == 1 for o in outs(wf, step)), step


FAILING = """\
  prepare:
    run: echo ok > {out}/x
  sweep:
    needs: [prepare]
    matrix: {x: [1, 2, 3]}
    run: |
      if [ {x} = 2 ]; then echo "task two fails" >&2; exit 3; fi
      echo {x} > {out}/r
  flaky:
    needs: [prepare]
    retries: 1
    run: |
      if [ ! -f {out}/tried ]; then touch {out}/tried; exit 1; fi
      echo fine > {out}/r
  evaluate:
    needs: [sweep]
    run: cat {in.sweep}/*/r > {out}/all
"""


def test_failure_cancels_downstream_and_exit_code(tmp_path: Path, apptainer, catalog: Path, slurm_cluster) -> None:  # noqa: ANN001
    wf = write_workflow(tmp_path / "fail", "failing", FAILING)
    env = {**os.environ, **settings_env(apptainer, catalog)}
    done = subprocess.run(
        [sys.executable, "-m", "hpcml.cli", "run", str(wf), "--executor", "slurm", "--watch"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sweep/1: failed (exit 3)" in done.stdout
    assert "evaluate/0: upstream failed" in done.stdout
    st = json.loads(subprocess.run(
        [sys.executable, "-m", "hpcml.cli", "status", "--json", "--workflow", str(wf)],
        capture_output=True, text=True, env=env,
    ).stdout)
    states = {f"{t['step']}/{t['index']}": t for t in st["tasks"]}
    assert states["sweep/1"]["state"] == "failed" and states["sweep/1"]["exit_code"] == 3
    assert states["evaluate/0"]["state"] == "upstream_failed"
    assert states["flaky/0"]["state"] == "completed" and states["flaky/0"]["attempt"] == 2
    assert states["sweep/0"]["state"] == "completed"
    logs = subprocess.run([sys.executable, "-m", "hpcml.cli", "logs", "sweep/1", "--workflow", str(wf)],
                          capture_output=True, text=True, env=env).stdout
    assert "task two fails" in logs


#: Fakes of an sbatch whose job is queued but whose answer goes wrong (first call only): the
#: real sbatch cannot do this on demand. Each passes the call to the real one, then fails.
LYING_SBATCH = {
    "fake_sbatch_error": 'echo "sbatch: error: Batch job submission failed: Unexpected message received" >&2; exit 1',
    "fake_sbatch_hang": "exec sleep 300",  # past HPCML_SBATCH_TIMEOUT_S: hpcml stops it
    "fake_sbatch_socket_timeout":
        'echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2; exit 1',
}


def lying_sbatch(where: Path, name: str) -> Path:
    """A directory holding the fake sbatch `name` (see LYING_SBATCH), to put first on PATH."""
    fake_dir = where / name
    fake_dir.mkdir(parents=True)
    (fake_dir / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/bash
        # {name}: the job is created, but the answer is lost (first call only)
        if [[ " $* " == *" --parsable "* && ! -e {fake_dir}/tripped ]]; then
          touch {fake_dir}/tripped
          {shutil.which("sbatch")} "$@" >/dev/null
          {LYING_SBATCH[name]}
        fi
        exec {shutil.which("sbatch")} "$@"
        """))
    (fake_dir / "sbatch").chmod(0o755)
    return fake_dir


def test_ambiguous_sbatch_failures_are_not_duplicated(tmp_path: Path, apptainer, catalog: Path, slurm_cluster) -> None:  # noqa: ANN001
    """Three lying sbatch fakes, one run each, concurrently: each job is found by name and
    adopted, runs once, and the run completes."""
    base = {**os.environ, "HOME": str(catalog), **settings_env(apptainer, catalog), "HPCML_SBATCH_TIMEOUT_S": "10"}
    runs = {}
    for name in LYING_SBATCH:
        fake_dir = lying_sbatch(tmp_path / "fakes", name)
        wf = write_workflow(tmp_path / name, f"amb-{name.removeprefix('fake_sbatch_').replace('_', '-')}",
                            "one:\n  run: echo x >> {out}/ran; sleep 2\n")
        env = {**base, "PATH": f"{fake_dir}:{os.environ['PATH']}"}
        runs[name] = (fake_dir, wf, subprocess.Popen(
            [str(Path(sys.executable).with_name("hpcml")), "run", str(wf), "--watch", "--executor", "slurm"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    names = ""
    for name, (fake_dir, wf, proc) in runs.items():
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0 and (fake_dir / "tripped").exists(), f"{name}: {out}{err}"
        assert "exists: adopting it" in err, f"{name}: {err}"
        assert ran(outs(wf, "one")[0]) == 1, name
        names = names or subprocess.run(["squeue", "-h", "-t", "all", "--me", "-o", "%i %j"], capture_output=True,
                                        text=True).stdout
        run_id = api.status(workflow=str(wf)).run_id
        assert sum(1 for l in names.splitlines() if l.endswith(f".{run_id}.one")) == 1, (name, names)


KILL_DAG = """\
  prepare:
    run: echo x >> {out}/ran; sleep 3
  sweep:
    needs: [prepare]
    matrix: {x: [1, 2, 3]}
    run: echo x >> {out}/ran
  evaluate:
    needs: [sweep]
    run: echo x >> {out}/ran
"""

# Runs `hpcml run --detach` in a child that SIGKILLs itself at a chosen point of the
# submission (test-only patching; nothing in hpcml knows about it).
KILLER = """
import os, signal, sys
from hpcml import api
from hpcml.run.journal import Journal
from hpcml.clients import slurm
point, path = sys.argv[1], sys.argv[2]
seen = {"intent": 0, "submitted": 0}
real_append = Journal.append
def append(self, event, **fields):
    rec = real_append(self, event, **fields)
    if event in seen:
        seen[event] += 1
        if (point, event, seen[event]) in {("after-intent", "intent", 2), ("after-submitted", "submitted", 2)}:
            os.kill(os.getpid(), signal.SIGKILL)
    return rec
Journal.append = append
real_sbatch = slurm.Slurm.sbatch
def sbatch(self, *a, **k):
    job = real_sbatch(self, *a, **k)
    if point == "after-sbatch" and seen["intent"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)   # the job exists; the journal does not know
    return job
slurm.Slurm.sbatch = sbatch
api.run(path, executor="slurm", watch=False)
"""


@pytest.mark.parametrize("point", ["after-intent", "after-sbatch", "after-submitted"])
def test_kill9_during_submission_then_rerun(tmp_path: Path, apptainer, catalog: Path, settings: Settings, point: str) -> None:  # noqa: ANN001
    wf = write_workflow(tmp_path / "k", f"kill-{point}", KILL_DAG)
    env = {**os.environ, **settings_env(apptainer, catalog)}
    child = subprocess.run([sys.executable, "-c", KILLER, point, str(wf)], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=1)
    assert outcome.ok, outcome.status and outcome.status.as_dict()
    if point != "after-intent":
        assert outcome.adopted + outcome.cached >= 4  # prepare and sweep of the dead run were kept
    for step in ("prepare", "sweep", "evaluate"):
        assert [ran(o) for o in outs(wf, step)] == [1] * len(outs(wf, step)), step


def test_detach_status_then_cancel(tmp_path: Path, settings: Settings) -> None:
    wf = write_workflow(tmp_path / "c", "cancelme", "long:\n  run: sleep 300\nafter:\n  needs: [long]\n  run: echo x >> {out}/ran\n")
    outcome = api.run(wf, executor="slurm", settings=settings, watch=False)
    assert outcome.status is None and outcome.submitted == 2
    st = api.status(workflow=str(wf))
    assert not st.finished and {t.state for t in st.tasks} <= {"pending", "running"}
    with pytest.raises(SubmitError, match=r"still queued or running on SLURM .* --executor slurm"):
        api.run(wf, executor="local", settings=settings)  # would run `long` a second time
    run_id, jobs = api.cancel(workflow=str(wf))
    assert run_id == outcome.run_id and sorted(jobs) == sorted(j for js in outcome.jobs.values() for j in js)
    import time

    for _ in range(60):  # scancel is asynchronous: wait for the wrapper to record it
        st = api.status(workflow=str(wf))
        if st.finished:
            break
        time.sleep(1)
    states = {t.step: t.state for t in st.tasks}
    assert states["long"] == "cancelled" and states["after"] in ("cancelled", "upstream_failed"), states
    assert [r.run_id for r in api.runs_history(workflow=str(wf))] == [outcome.run_id]


def test_cancel_names_an_array_by_its_job_id(tmp_path: Path, settings: Settings) -> None:
    # A sweep is cancelled with one word per array job, not one per task; every task ends
    # cancelled, and squeue's rows of the cancelled array (one per task with -r) stay readable.
    steps = "sweep:\n  matrix: {i: {range: [0, 6]}}\n  max_parallel: 1\n  run: sleep 300\n"
    wf = write_workflow(tmp_path / "arr", "cancelarr", steps)
    outcome = api.run(wf, executor="slurm", settings=settings, watch=False)
    (array_job,) = outcome.jobs["sweep"]
    run_id, jobs = api.cancel(workflow=str(wf))
    assert run_id == outcome.run_id and jobs == [array_job]
    import time

    for _ in range(60):  # scancel is asynchronous
        st = api.status(workflow=str(wf))
        if st.finished:
            break
        time.sleep(1)
    assert [t.state for t in st.tasks] == ["cancelled"] * 6
