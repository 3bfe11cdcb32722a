"""`hpcml.snakemake` helpers in a real Snakefile, run by real Snakemake 9 as a subprocess:
locally with `--sdm apptainer` and on the testbed with `--executor slurm`.

The workflow is the tiny busybox image (a `/bin/bash` shim added, since Snakemake's
`container:` runs `bash -c`); each test has its own catalog. No timing is asserted (the
dry-run cost is measured by bench/snakemake.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from testbed import Apptainer, SlurmCluster

pytestmark = pytest.mark.testbed

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

WORKFLOW = """\
hpcml: 1
name: smk
images:
  bb:
    from: localimage:{busybox}
    shell: sh
    post: |
      printf '#!/bin/sh\\nexec /bin/sh "$@"\\n' > /bin/bash
      /bin/busybox chmod 755 /bin/bash
defaults:
  image: bb
steps:
  prep:
    run: echo prep > {{out}}/x
    resources: {{partition: cpu, cpus: 1, mem: 300M, time: 5m}}
  train:
    run: echo train > {{out}}/x
    resources: {{partition: gpu, gpus: 1, cpus: 1, mem: 300M, time: 5m}}
"""

SNAKEFILE = """\
from hpcml.snakemake import image, resources, container_shell

WF = "wf/workflow.yaml"

rule all:
    input: "cpu.txt", "gpu.txt"

rule cpu:
    output: "cpu.txt"
    container: image("bb", workflow=WF)
    resources: **resources("prep", workflow=WF)
    shell: "echo cpu > {output}; ls /dev > {output}.dev"

rule gpu:
    output: "gpu.txt"
    resources: **resources("train", workflow=WF)
    shell:
        "echo ${{CUDA_VISIBLE_DEVICES:-unset}} > {output:q}.host; "
        + container_shell("bb", "echo ${{CUDA_VISIBLE_DEVICES:-unset}} > {output:q}", workflow=WF, gpus=1)
"""


@pytest.fixture
def project(tmp_path: Path, busybox_sif: Path, apptainer: Apptainer) -> tuple[Path, dict[str, str]]:
    """A Snakemake project using the helpers, and the environment to run snakemake in."""
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "workflow.yaml").write_text(WORKFLOW.format(busybox=busybox_sif))
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCML_", "CUDA_"))}
    env.update(
        HPCML_CONFIG=str(tmp_path / "none.toml"),
        HPCML_SITE_CONFIG=str(tmp_path / "none.toml"),
        HPCML_CATALOGS=str(tmp_path / "catalog"),
        HPCML_CACHE_DIR=str(tmp_path / "cache"),
        HPCML_EXEC_FLAGS=" ".join(apptainer.exec_flags),
        HPCML_BUILD_FLAGS=" ".join(apptainer.build_flags),
        HPCML_APPTAINER=apptainer.binary,
    )
    return tmp_path, env


def snakemake(cwd: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SNAKEMAKE, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def sifs(catalog: Path) -> list[Path]:
    return list(catalog.glob("sif/*/*.sif"))


@pytest.mark.slow
def test_helpers_locally_with_sdm_apptainer(project: tuple[Path, dict[str, str]], apptainer: Apptainer) -> None:
    root, env = project
    # The dry run comes first: it must not build, and must name the image it lacks.
    dry = snakemake(root, env, "-n")
    assert dry.returncode != 0
    out = dry.stdout + dry.stderr
    assert "image 'bb' of " in out and "building is off" in out, out
    assert sifs(root / "catalog") == []

    env_gpu = {**env, "CUDA_VISIBLE_DEVICES": "1"}  # stands in for what SLURM would give
    args = ("-c2", "-p", "--verbose", "--sdm", "apptainer", "--apptainer-args=" + " ".join(apptainer.exec_flags))
    done = snakemake(root, env_gpu, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    # image() built the missing image, with `hpcml build`'s progress lines.
    log = done.stdout + done.stderr
    assert "hpcml: image bb: building (key " in log and "hpcml: image bb: built in " in log, log
    assert len(sifs(root / "catalog")) == 1
    assert (root / "cpu.txt").read_text() == "cpu\n"
    # The GPU rule's container saw exactly the host's devices through --cleanenv.
    assert (root / "gpu.txt").read_text() == (root / "gpu.txt.host").read_text() == "1\n"
    gpu_exec = [line for line in log.splitlines() if " exec " in line and "--cleanenv" in line]
    cpu_exec = [line for line in log.splitlines() if " exec --home " in line]  # Snakemake's own container call
    assert gpu_exec and all(" --nv " in line for line in gpu_exec), log
    assert cpu_exec and not any("--nv" in line for line in cpu_exec), log

    # With the image cached, a dry run loads without building (and succeeds).
    again = snakemake(root, env, "-n", "-F")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "building" not in again.stdout + again.stderr


BAD_CASES = {
    "unknown image": ('image("nope", workflow=WF)', {}, "no image 'nope' in "),
    "unknown step": ('resources("nope", workflow=WF)', {}, "no step 'nope' in "),
    "workflow with errors": ('image("bb", workflow="wf/broken.yaml")', {}, "broken.yaml:3:1: unknown key 'stepz'"),
    "missing image, building off": ('image("bb", workflow=WF)', {"HPCML_NO_BUILD": "1"}, "building is off"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_a_clear_error_at_load_time(case: str, project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    call, extra, message = BAD_CASES[case]
    (root / "wf" / "broken.yaml").write_text("hpcml: 1\nname: x\nstepz: {}\n")
    (root / "Snakefile").write_text(textwrap.dedent(f"""\
        from hpcml.snakemake import image, resources

        WF = "wf/workflow.yaml"
        X = {call}

        rule all:
            output: "x"
            shell: "touch {{output}}"
        """))
    done = snakemake(root, {**env, **extra}, "-c1")
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert 'WorkflowError in file "' in out and 'Snakefile", line 4' in out, out
    assert "hpcml: " in out and message in out, out
    assert "Traceback (most recent call last)" not in out, out
    assert sifs(root / "catalog") == []


@pytest.mark.slow
def test_helpers_on_slurm(project: tuple[Path, dict[str, str]], apptainer: Apptainer,
                          slurm_cluster: SlurmCluster) -> None:
    root, env = project
    done = snakemake(root, env, "--executor", "slurm", "-j", "4", "-p", "--sdm", "apptainer",
                     "--apptainer-args=" + " ".join(apptainer.exec_flags),
                     "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    host = (root / "gpu.txt.host").read_text().strip()
    assert host in ("0", "1")  # SLURM gave the job one of the two GPUs ...
    assert (root / "gpu.txt").read_text().strip() == host  # ... and the container saw exactly that one
    logs = {p.parent.name: p.read_text() for p in (root / ".snakemake" / "slurm_logs").glob("rule_*/*.log")}
    assert " --nv " in logs["rule_gpu"], logs
    assert "Activating singularity image" in logs["rule_cpu"], logs  # it did run in the container ...
    assert "--nv" not in logs["rule_cpu"], logs  # ... without --nv
