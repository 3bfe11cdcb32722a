"""The Snakemake renderer (resources, container command, exported Snakefile) and the helpers'
pure parts: golden files, `bash -n` of the commands Snakemake would run, quoting."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcml import api
from hpcml.errors import HpcmlError
from hpcml.model import Resources
from hpcml.render.snakefile import (
    CWD,
    ContainerCall,
    ExportSpec,
    Raw,
    container_command,
    render_snakefile,
    slurm_resources,
    snakemake_command,
)
from hpcml.snakemake import _build_allowed, is_dry_run

REPO = Path(__file__).resolve().parents[2]


def smk_format(text: str, **values: object) -> str:
    """Format `text` the way Snakemake formats a rule's shell command (`:q` included)."""
    from snakemake.utils import format as snakemake_format

    return snakemake_format(text, **{k: SimpleNamespace(**v) if isinstance(v, dict) else v for k, v in values.items()})


def bash_n(script: str) -> None:
    done = subprocess.run(["bash", "-n"], check=False, input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr + script


# ---- resources ---------------------------------------------------------------------------


def test_resources_in_the_plugin_names() -> None:
    res = Resources(partition="gpu", account="lab", qos="high", time_s=3601, cpus=4, mem_mb=32768,
                    gpus=2, gpu_type="a100", constraint="ib")
    assert slurm_resources(res, "gres") == {
        "slurm_partition": "gpu", "slurm_account": "lab", "qos": "high", "runtime": 61, "mem_mb": 32768,
        "cpus_per_task": 4, "constraint": "ib", "gres": "gpu:a100:2",
    }
    per_node = slurm_resources(Resources(gpus=1, nodes=2, cpus=8, cpus_per_gpu=4), "gpus-per-node")
    # CPUs per GPU win over CPUs per task, as in hpcml's own sbatch flags; --gpus counts all nodes.
    assert per_node == {"nodes": 2, "cpus_per_gpu": 4, "gpu": 2}
    assert slurm_resources(Resources(), "gres") == {}
    assert "gres" not in slurm_resources(Resources(cpus=2), "gres")


def test_resources_of_the_sweep_example() -> None:
    plan = api.plan(REPO / "workflows" / "sweep.yaml")
    train = slurm_resources(plan.steps["train"].step.resources)
    assert train == {"slurm_partition": "gpu", "runtime": 120, "mem_mb": 8192, "cpus_per_gpu": 2, "gres": "gpu:1"}


# ---- the container command ---------------------------------------------------------------


def test_gpu_command_binds_devices_and_quotes_everything() -> None:
    call = ContainerCall(sif="/cat/my image.sif", gpus=1, exec_flags=("--userns", "--bind=/a b"),
                         env=(("MSG", "it's $HOME `x` \\n {braces}"),), secrets=("TOKEN",))
    text = container_command(call, "python3 train.py --out {output:q}")
    run = smk_format(text, output=["out dir/x"])
    bash_n(run)
    assert "apptainer --quiet exec --userns '--bind=/a b' --cleanenv --nv " in run
    assert "'/cat/my image.sif' bash -c \"$hpcml_command\"" in run
    assert 'export APPTAINERENV_CUDA_VISIBLE_DEVICES="$CUDA_VISIBLE_DEVICES"' in run
    assert "python3 train.py --out 'out dir/x'\nHPCML_COMMAND\n" in run
    assert "hpcml_secret TOKEN" in run and "TOKEN=" not in run  # the value is read at run time
    # The env value reaches apptainer escaped for its second evaluation, braces intact.
    assert "export APPTAINERENV_MSG='it'\"'\"'s \\$HOME \\`x\\` \\\\n {braces}'" in run


def test_cpu_command_has_no_gpu_flags_and_sh_images_get_sh() -> None:
    run = smk_format(container_command(ContainerCall(sif="/c/bb.sif", shell="sh"), "echo {output:q}"),
                     output=["o"])
    bash_n(run)
    assert "--nv" not in run and "--rocm" not in run and "CUDA_VISIBLE_DEVICES" not in run
    assert "\nset -e\necho o\n" in run and ' sh -c "$hpcml_command"' in run
    assert '--bind "$PWD":"$PWD" --pwd "$PWD"' in run
    amd = container_command(ContainerCall(sif="/c/x.sif", gpus=2, gpu_vendor="amd"), "true")
    assert " --rocm " in amd and " --nv " not in amd


def test_raw_values_keep_snakemake_placeholders() -> None:
    call = ContainerCall(sif=Raw("{params.image:q}"), binds=((Raw("{params.wd:q}"), Raw("{params.wd:q}"), True),),
                         pwd=CWD, redirect=">{log:q} 2>&1")
    run = smk_format(container_command(call, "true"), params={"image": "/i/a b.sif", "wd": "/w"}, log=["l.log"])
    assert "--bind /w:/w:ro --pwd \"$PWD\" '/i/a b.sif' bash -c \"$hpcml_command\" >l.log 2>&1" in run
    bash_n(run)


def test_secrets_arrive_byte_for_byte_in_bash(tmp_path: Path) -> None:
    """The bash half of the secret path: what apptainer gets once its own `export NAME="…"`
    evaluation is undone must be the value (checked here by doing that evaluation)."""
    secret = "a$b `c` \\d \"e\" 'f' {g}"
    text = smk_format(container_command(ContainerCall(sif="/x.sif", secrets=("S",)), "true"))
    head = text.split("IFS=")[0]
    env = {"S": secret, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", head + 'printf %s "$APPTAINERENV_S"'], check=False, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Apptainer writes `export S="<value, its double quotes escaped>"` and sources it.
    escaped = done.stdout.replace('"', '\\"')
    sourced = f'export OUT="{escaped}"; printf %s "$OUT"'
    assert subprocess.run(["sh", "-c", sourced], check=False, capture_output=True, text=True).stdout == secret


def test_a_command_cannot_end_the_heredoc() -> None:
    with pytest.raises(HpcmlError, match="HPCML_COMMAND"):
        container_command(ContainerCall(sif="/x.sif"), "echo\nHPCML_COMMAND\necho")


def test_step_commands_in_snakemake_syntax(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "hpcml: 1\nname: t\nimages:\n  bb:\n    from: scratch\n    shell: sh\ndefaults:\n  image: bb\nsteps:\n"
        "  prep:\n    run: echo {step} {task} > {out}/x\n"
        "  sweep:\n    needs: [prep]\n    matrix: {lr: [0.1, 1], tag: ['a b']}\n"
        "    run: echo {lr} {tag} ${HOME} {a,b} {{x}} {task} $(cat {in.prep}/x) > {out}/y\n"
    )
    plan = api.plan(wf)
    assert snakemake_command(plan.steps["prep"]) == "echo prep 0 > {params.out:q}/x"
    sweep = snakemake_command(plan.steps["sweep"])
    assert sweep == ("echo {params.lr:q} {params.tag:q} ${{HOME}} {{a,b}} {{x}} {wildcards.task} "
                     "$(cat {params.in_prep:q}/x) > {params.out:q}/y")
    # Formatted as Snakemake would, it is hpcml's own command for that point.
    filled = smk_format(sweep, params={"lr": "1", "tag": "a b", "in_prep": "/p", "out": "/o"}, wildcards={"task": "1"})
    assert filled == "echo 1 'a b' ${HOME} {a,b} {x} 1 $(cat /p/x) > /o/y"
    hpcml_own = plan.steps["sweep"].tasks[1].command
    assert hpcml_own.replace("{in.prep}", "/p").replace("{out}", "/o").replace("{{", "{").replace("}}", "}") == filled


# ---- the exported Snakefile --------------------------------------------------------------


@pytest.mark.parametrize("name", ["quickstart", "sweep"])
def test_golden_snakefiles(name: str, golden: Callable[[str, str], None]) -> None:
    plan = api.plan(REPO / "workflows" / f"{name}.yaml")
    spec = ExportSpec(plan, "../workflows", f"hpcml export snakemake workflows/{name}.yaml -o Snakefile",
                      "apptainer", ("--userns",), "gres")
    text = render_snakefile(spec).text
    for image in plan.images.values():  # keys follow the definition renderer: keep them out of the file
        text = text.replace(image.key, f"<key of {image.name}>")
    golden(f"{name}.smk", text)


def test_export_notes_what_snakemake_cannot_do() -> None:
    plan = api.plan(REPO / "workflows" / "sweep.yaml")
    exported = render_snakefile(ExportSpec(plan, ".", "x"))
    assert len(exported.notes) == 2
    assert any("SIGUSR2" in n for n in exported.notes) and any("max_parallel" in n for n in exported.notes)
    assert exported.text.count("    # NOTE step train:") == 2
    assert "WANDB_API_KEY" in exported.text and "envvars:" in exported.text


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  all:\n    run: 'true'\n", "step 'all' would be rule 'all', like the target rule"),
        ("  a-b:\n    run: 'true'\n  a_b:\n    run: 'true'\n", "step 'a_b' would be rule 'a_b', like step 'a-b'"),
        ("  s:\n    matrix: {image: [1]}\n    run: echo {image}\n", "matrix axis 'image' clashes"),
        # one rule runs one command: a multi-process step has no rank launcher there
        ("  ddp:\n    resources: {nodes: 2, gpus: 4, launch: per_gpu}\n    run: 'true'\n",
         r"step 'ddp' starts 8 processes \(launch: per_gpu\); the Snakemake export runs one per rule"),
    ],
)
def test_export_refuses_names_that_would_clash(tmp_path: Path, steps: str, message: str) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("hpcml: 1\nname: t\nimages:\n  bb:\n    from: scratch\ndefaults:\n  image: bb\nsteps:\n" + steps)
    with pytest.raises(HpcmlError, match=message):
        render_snakefile(ExportSpec(api.plan(wf), ".", "x"))


def test_launch_placeholders_become_numbers(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("hpcml: 1\nname: t\nimages:\n  bb:\n    from: scratch\ndefaults:\n  image: bb\nsteps:\n"
                  "  one:\n    resources: {gpus: 2}\n    run: echo {nodes} {gpus_per_node}\n")
    assert "echo 1 2" in render_snakefile(ExportSpec(api.plan(wf), ".", "x")).text


def test_keyword_step_names_become_identifiers(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("hpcml: 1\nname: t\nimages:\n  bb:\n    from: scratch\ndefaults:\n  image: bb\nsteps:\n"
                  "  import:\n    run: 'true'\n  use:\n    needs: [import]\n    run: ls {in.import}\n")
    text = render_snakefile(ExportSpec(api.plan(wf), ".", "x")).text
    assert "rule import_:" in text and "        import_='results/import'," in text
    assert "{params.in_import_:q}" in text


def test_export_writes_nothing_for_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hpcml: 1\nname: x\nstepz: {}\n")
    out = tmp_path / "Snakefile"
    with pytest.raises(HpcmlError, match=r"bad.yaml:3:1: unknown key 'stepz'"):
        api.export_snakemake(bad, out, build=False, settings=api.load_settings({"catalogs": [str(tmp_path / "c")]}))
    assert list(tmp_path.iterdir()) == [bad]


def test_export_without_building_names_the_missing_image(tmp_path: Path) -> None:
    out = tmp_path / "Snakefile"
    settings = api.load_settings({"catalogs": [str(tmp_path / "empty")], "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(HpcmlError, match=r"image 'numpy' of .*quickstart.yaml \(key [0-9a-f]{12}\) is in no catalog"):
        api.export_snakemake(REPO / "workflows" / "quickstart.yaml", out, build=False, settings=settings)
    assert not out.exists()


def test_the_workflow_is_parsed_once_until_it_changes(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("hpcml: 1\nname: t\nimages:\n  bb:\n    from: scratch\ndefaults:\n  image: bb\nsteps:\n"
                  "  s:\n    run: 'true'\n")
    settings = api.load_settings({"catalogs": [str(tmp_path / "c")], "cache_dir": str(tmp_path / "cache")})
    first = api.cached_plan(wf, settings)
    assert api.cached_plan(str(wf), settings) is first  # every rule's helper call gets the one parse
    assert api.step_resources("s", workflow=wf, settings=settings) == {}
    wf.write_text(wf.read_text().replace("'true'", "'false'"))
    os.utime(wf, ns=(first_ns := wf.stat().st_mtime_ns + 10**9, first_ns))
    changed = api.cached_plan(wf, settings)
    assert changed is not first and changed.steps["s"].step.run == "false"


# ---- when the helpers may build ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "dry"),
    [
        (["-n"], True), (["-np"], True), (["-pn", "-c1"], True), (["--dry-run"], True), (["--dryrun"], True),
        (["-c1"], False), (["-j2"], False), (["--cores", "1"], False), (["-s", "nfile"], False),
        (["--", "-n"], False), (["--config", "n=1"], False), (["-Cn=1"], False),
        (["-nj4"], True), (["-j4n"], False), (["-Fpn"], True),
    ],
)
def test_dry_run_is_read_from_the_command_line(argv: list[str], dry: bool) -> None:
    assert is_dry_run(argv) is dry


def test_building_is_off_with_hpcml_no_build_or_a_dry_run() -> None:
    assert _build_allowed(["-c1"], {}) is True
    assert _build_allowed(["-c1"], {"HPCML_NO_BUILD": "1"}) is False
    assert _build_allowed(["-c1"], {"HPCML_NO_BUILD": "0"}) is True
    assert _build_allowed(["-n"], {}) is False


def test_rendered_commands_pass_bash_n_for_the_examples() -> None:
    for name in ("quickstart", "sweep"):
        plan = api.plan(REPO / "workflows" / f"{name}.yaml")
        for sp in plan.steps.values():
            text = container_command(ContainerCall(sif="/x.sif", gpus=sp.step.resources.gpus, env=sp.step.env,
                                                   secrets=sp.step.secrets), snakemake_command(sp))
            params = {"out": "/o", "image": "/i", **{f"in_{u}": "/u" for u in sp.step.needs},
                      **{k: "1" for t in sp.tasks for k, _ in t.point}}
            bash_n(smk_format(text, params=params, wildcards={"task": "0"}))
    assert shlex.split("a 'b c'") == ["a", "b c"]
