"""The run report opened in a real headless Chromium, for a local run (no accounting):
every task has its row and (when it ran) its timeline bar, the failure comes first, and
the page says which columns are missing without SLURM accounting. The SLURM run with a
requeue, a failure and GPU-hours checked against sacct is in test_run_slurm_limits.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from browser import dump_dom, read_report, screenshot
from test_run_local import hpcml, hpcml_env, workflow  # noqa: F401 - fixture

pytestmark = pytest.mark.testbed

STEPS = """\
prepare:
  run: echo data > {out}/data.txt
sweep:
  needs: [prepare]
  matrix: {lr: [1, 2, 3]}
  resources: {partition: gpu, gpus: 1}
  run: |
    if [ {lr} = 2 ]; then echo "loss is nan at lr={lr}" >&2; exit 3; fi
    sleep 1; cat {in.prepare}/data.txt > {out}/r.txt
evaluate:
  needs: [sweep]
  run: cat {in.sweep}/*/r.txt
"""


def test_local_report_in_chromium(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:  # noqa: F811
    wf = workflow(tmp_path / "wf", busybox_sif, "reportdemo", STEPS)
    done = hpcml("run", str(wf), "--executor", "local", env=hpcml_env, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    out = tmp_path / "report.html"
    hpcml("report", "--workflow", str(wf), "-o", str(out), env=hpcml_env)
    doc = json.loads(hpcml("report", "--workflow", str(wf), "--json", env=hpcml_env).stdout)
    assert doc["accounting"] is False and "cpu_hours" in doc["missing"]
    states = {f"{t['step']}/{t['index']}": t["state"] for t in doc["tasks"]}
    assert states == {"prepare/0": "completed", "sweep/0": "completed", "sweep/1": "failed",
                      "sweep/2": "completed", "evaluate/0": "upstream_failed"}
    ran = {f"{t['step']}/{t['index']}": t for t in doc["tasks"] if t["attempts"]}
    assert set(ran) == set(states) - {"evaluate/0"}
    # Without accounting, GPU-hours are the wrapper's devices × run time.
    assert all(len(t["attempts"][0]["devices"]) == 1 for k, t in ran.items() if k.startswith("sweep"))
    assert doc["gpu_hours"] == pytest.approx(sum(t["gpu_hours"] for t in doc["tasks"])) and doc["gpu_hours"] > 0

    page = read_report(dump_dom(out))
    assert [task for task, _ in page.rows] == ["sweep/1", "evaluate/0", "prepare/0", "sweep/0", "sweep/2"]
    assert dict(page.rows) == states
    assert page.failures == ["sweep/1"]
    assert {task for task, _ in page.bars} == set(ran)
    assert ("sweep/1", "failed") in page.bars and ("sweep/0", "ok") in page.bars
    assert "cpu_hours" in page.missing_note
    assert "loss is nan" in out.read_text()
    screenshot(out, tmp_path / "report.png")


DIFF = """\
prepare:
  run: echo data > {out}/data.txt
sweep:
  needs: [prepare]
  matrix: {lr: [1, 2]}
  run: cat {in.prepare}/data.txt > {out}/r.txt
evaluate:
  needs: [sweep]
  run: cat {in.sweep}/*/r.txt > {out}/all.txt
"""


def test_runs_diff_names_exactly_the_task_whose_command_changed(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]  # noqa: F811
) -> None:
    wf = workflow(tmp_path / "wf", busybox_sif, "diffdemo", DIFF)
    hpcml("run", str(wf), "--executor", "local", env=hpcml_env)
    wf.write_text(wf.read_text().replace("> {out}/all.txt", "| sort > {out}/all.txt"))
    hpcml("run", str(wf), "--executor", "local", env=hpcml_env)
    runs = json.loads(hpcml("runs", "--json", "--workflow", str(wf), env=hpcml_env).stdout)
    first, second = runs[0]["run_id"], runs[1]["run_id"]

    d = json.loads(hpcml("runs", "diff", first, second, "--json", "--workflow", str(wf), env=hpcml_env).stdout)
    assert [(c["task"], c["change"], c["reasons"]) for c in d["tasks"]] == [("evaluate/0", "changed", ["command"])]
    assert d["unchanged"] == 3 and d["images"] == [] and "| sort" in d["spec"]
    text = hpcml("runs", "diff", first, second, "--workflow", str(wf), env=hpcml_env).stdout
    assert "changed  evaluate/0: command" in text

    shown = json.loads(hpcml("runs", "show", second, "--json", "--workflow", str(wf), env=hpcml_env).stdout)
    assert [s["name"] for s in shown["steps"]] == ["prepare", "sweep", "evaluate"]
    assert shown["cached"] == 3 and shown["provenance"]["hpcml"] and "| sort" in shown["spec"]
    assert "step evaluate: image bb" in hpcml("runs", "show", "--workflow", str(wf), env=hpcml_env).stdout


FAKE_NVIDIA_SMI = """\
#!/bin/sh
# fake_nvidia_smi: the testbed has no NVIDIA GPU; this prints what `nvidia-smi --query-gpu=...
# --format=csv,noheader,nounits -l N` prints, one sample a second, until it is killed.
while :; do echo "2026/12/02 15:00:00.000, 0, 87, 1234, 81920"; sleep 1; done
"""


def test_gpu_samples_while_an_attempt_runs_and_none_after(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]  # noqa: F811
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(FAKE_NVIDIA_SMI)
    fake.chmod(0o755)
    env = {**hpcml_env, "PATH": f"{bin_dir}:{hpcml_env['PATH']}"}
    wf = workflow(tmp_path / "wf", busybox_sif, "gpusamples",
                  "train:\n  resources: {gpus: 1}\n  run: sleep 3\ncpu:\n  run: sleep 1\n")
    hpcml("run", str(wf), "--executor", "local", env=env)
    doc = json.loads(hpcml("report", "--workflow", str(wf), "--json", env=env).stdout)
    samples = {t["step"]: t["gpu_samples"] for t in doc["tasks"]}
    assert samples["train"] >= 1 and samples["cpu"] == 0  # only GPU steps are sampled
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(fake) not in ps  # the sampler ended with its attempt
