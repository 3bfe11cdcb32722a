"""Images built as SLURM jobs (build_on = "slurm") on the real testbed.

Every scenario's runs are submitted at once, detached, by one module fixture, then waited
for together (the tests only read what happened):

- new: an image no catalog has; the run returns once submitted, squeue shows the build
  job and the task jobs waiting on it, the run completes, the image is then in the
  catalog, and a second workflow using it submits no build job;
- chain: a child image and its parent both missing: the child's build job waits for the
  parent's, the tasks for both;
- pair: two runs started together need the same new image: one build job (sacct);
- broken: a build whose %post exits 1: its tasks are `image failed` with the image's name
  and the build log's tail, `logs image:bb` shows the job's output, and the fixed
  workflow's rerun completes;
- cancelled: `hpcml cancel` right after submission cancels the build job too;
- built: `hpcml build --build-on slurm` submits the build job, prints it and returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_run_slurm import BUSYBOX, catalog, settings_env  # noqa: F401 - fixtures

from hpcml import api, config
from hpcml.clients.slurm import Slurm
from hpcml.config import Settings
from hpcml.results import RunOutcome, RunStatus
from hpcml.run.buildjobs import settings_json
from hpcml.run.journal import read_journal
from hpcml.run.rundir import RunDir

pytestmark = pytest.mark.testbed
REPO = Path(__file__).resolve().parents[2]

WORKFLOW = """\
hpcml: 1
name: {name}
images:
  bb:
    from: scratch
    shell: sh
    files: {{busybox: /bin/sh}}
    post: |
      /bin/sh --install -s /bin
      echo {token}
      {fail}
defaults:
  image: bb
  resources: {{time: 5m, cpus: 1, mem: 100M}}
steps:
  first:
    run: echo one > {{out}}/r
  second:
    needs: [first]
    run: cat {{in.first}}/r > {{out}}/r
"""


CHILD = """\
  kid:
    from: bb
    shell: sh
    post: echo kid > /kid
defaults:
  image: kid"""


def workflow(root: Path, name: str, token: str, fail: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "busybox").write_bytes(Path(BUSYBOX).read_bytes())
    (root / "busybox").chmod(0o755)
    path = root / "workflow.yaml"
    path.write_text(WORKFLOW.format(name=name, token=token, fail="exit 1" if fail else ""))
    return path


def builds_of(wf: Path, run_id: str) -> list[dict[str, object]]:
    return [r for r in read_journal(RunDir.for_workflow(wf).run(run_id).journal) if r["event"] == "build"]


def wait(wf: Path, timeout: float = 300) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = api.status(workflow=str(wf))
        if st.finished or time.monotonic() > deadline:
            return st
        time.sleep(2)


@dataclass
class Scenario:
    settings: Settings
    new: Path
    new_run: RunOutcome
    squeue_after_submit: list[tuple[str, str, str]]  # (job id, name, reason)
    chain: Path
    chain_run: RunOutcome
    pair: tuple[Path, Path]
    pair_runs: tuple[str, ...]  # run ids
    broken: Path
    broken_run: RunOutcome
    cancelled: Path
    cancelled_jobs: list[str]
    cancelled_run: RunOutcome
    built: str  # `hpcml build --build-on slurm`'s output


@pytest.fixture(scope="module")
def scenario(apptainer, catalog: Path, slurm_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:  # noqa: ANN001
    env = {"HOME": str(catalog), **settings_env(apptainer, catalog), "HPCML_BUILD_ON": "slurm",
           "HPCML_BUILD_CPUS": "1", "HPCML_BUILD_MEM": "500M", "HPCML_BUILD_TIME": "00:10:00"}
    settings = config.load(env=env)
    root = tmp_path_factory.mktemp("build-slurm")

    def run(wf: Path) -> RunOutcome:
        return api.run(wf, executor="slurm", settings=settings, watch=False, detach=True)

    new = workflow(root / "new", "bnew", uuid.uuid4().hex)
    new_run = run(new)
    chain = workflow(root / "chain", "bchain", uuid.uuid4().hex)
    chain.write_text(chain.read_text().replace("defaults:\n  image: bb", CHILD))
    chain_run = run(chain)
    rows = [(r.job_id, r.name, r.reason) for r in Slurm().squeue() if r.live]

    # Two processes at once, through the CLI and its --build-on flag.
    token = uuid.uuid4().hex
    pair = (workflow(root / "pair1", "bpair1", token), workflow(root / "pair2", "bpair2", token))
    cli_env = {**os.environ, **env, "HPCML_BUILD_ON": "login"}
    procs = [subprocess.Popen([sys.executable, "-m", "hpcml.cli", "run", str(wf), "--executor", "slurm", "--detach",
                               "--build-on", "slurm"], cwd=REPO, env=cli_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for wf in pair]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    pair_runs = tuple(str(RunDir.for_workflow(wf).latest_run()) for wf in pair)

    broken = workflow(root / "broken", "bbroken", uuid.uuid4().hex, fail=True)
    broken_run = run(broken)

    cancelled = workflow(root / "cancel", "bcancel", uuid.uuid4().hex)
    cancelled_run = run(cancelled)
    _, jobs = api.cancel(workflow=str(cancelled))

    only_built = workflow(root / "built", "bbuilt", uuid.uuid4().hex)
    built = subprocess.run([sys.executable, "-m", "hpcml.cli", "build", str(only_built), "--build-on", "slurm"],
                           cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=120, check=True).stdout
    yield Scenario(settings, new, new_run, rows, chain, chain_run, pair, pair_runs, broken, broken_run,
                   cancelled, jobs, cancelled_run, built)


def test_a_new_image_is_built_by_a_job_the_tasks_wait_for(scenario: Scenario, tmp_path: Path) -> None:
    (build,) = builds_of(scenario.new, scenario.new_run.run_id)
    assert build["image"] == "bb" and not build["adopted"]
    by_id = {job: (name, reason) for job, name, reason in scenario.squeue_after_submit}
    assert by_id[str(build["job_id"])][0].startswith("hpcml-build.bb.")
    task_jobs = [j for js in scenario.new_run.jobs.values() for j in js]
    assert task_jobs and all(by_id[j][1] == "Dependency" for j in task_jobs), scenario.squeue_after_submit

    st = wait(scenario.new)
    assert st.ok, st.as_dict()
    assert [(i.image, i.state) for i in st.images] == [("bb", "done")]
    assert Path(str(build["sif"])).is_file()
    # What a second build job of that key would do: find it published and exit 0 at once.
    again_job = subprocess.run([sys.executable, "-m", "hpcml.cli", "_build-image", str(scenario.new), "bb", "--key",
                                str(build["key"]), "--settings", settings_json(scenario.settings)],
                               cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert again_job.returncode == 0 and "hpcml: image bb: cached" in again_job.stdout, again_job.stderr

    again = workflow(tmp_path / "again", "bagain", "unused")
    again.write_text(scenario.new.read_text().replace("echo one", "echo two").replace("name: bnew", "name: bagain"))
    outcome = api.run(again, executor="slurm", settings=scenario.settings, watch=False, detach=True)
    assert builds_of(again, outcome.run_id) == []  # the image is in the catalog: no build job
    assert wait(again).ok


def test_a_child_image_waits_for_its_parent(scenario: Scenario) -> None:
    parent, child = builds_of(scenario.chain, scenario.chain_run.run_id)
    assert (parent["image"], child["image"], child["parent"]) == ("bb", "kid", "bb")
    by_id = {job: reason for job, _, reason in scenario.squeue_after_submit}
    assert by_id[str(child["job_id"])] == "Dependency"
    st = wait(scenario.chain)
    assert st.ok and [(i.image, i.state) for i in st.images] == [("bb", "done"), ("kid", "done")]


def test_two_runs_at_once_share_one_build_job(scenario: Scenario) -> None:
    records = [builds_of(wf, run_id) for wf, run_id in zip(scenario.pair, scenario.pair_runs, strict=True)]
    assert [len(r) for r in records] == [1, 1]
    assert records[0][0]["job_id"] == records[1][0]["job_id"]
    assert sorted(bool(r[0]["adopted"]) for r in records) == [False, True]
    for wf in scenario.pair:
        assert wait(wf).ok
    key12 = str(records[0][0]["key"])[:12]
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", f"--name=hpcml-build.bb.{key12}", "-o", "JobID"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(records[0][0]["job_id"])]


def test_a_failed_build_fails_its_tasks_with_the_log_then_the_fix_runs(scenario: Scenario) -> None:
    st = wait(scenario.broken)
    assert st.finished and not st.ok
    (image,) = st.images
    assert image.state == "failed" and "build failed" in image.detail, image
    assert {t.state for t in st.tasks} == {"image_failed"}
    assert all(t.detail == f"image bb, build job {image.job}" for t in st.tasks)
    ((label, log),) = api.logs("image:bb", workflow=str(scenario.broken))
    assert label == "image:bb" and "exit" in Path(log).read_text()

    scenario.broken.write_text(scenario.broken.read_text().replace("exit 1", ""))
    outcome = api.run(scenario.broken, executor="slurm", settings=scenario.settings, watch=False, detach=True)
    assert len(builds_of(scenario.broken, outcome.run_id)) == 1
    assert wait(scenario.broken).ok


def test_cancel_cancels_the_build_job(scenario: Scenario) -> None:
    (build,) = builds_of(scenario.cancelled, scenario.cancelled_run.run_id)
    assert str(build["job_id"]) in scenario.cancelled_jobs
    st = wait(scenario.cancelled, timeout=120)
    assert st.finished and [i.state for i in st.images] == ["cancelled"]
    assert {t.state for t in st.tasks} == {"cancelled"}


def test_build_on_slurm_submits_and_returns(scenario: Scenario) -> None:
    ((image, job, sif),) = [line.split("\t") for line in scenario.built.splitlines()]
    assert image == "bb" and job.startswith("job ")
    deadline = time.monotonic() + 240
    while Slurm().job_live(job.split()[1]) and time.monotonic() < deadline:
        time.sleep(2)
    assert Path(sif).is_file()
