"""spec.load/loads on valid input: what the Workflow holds, merge rules, the examples, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from hpcml.cli.app import main
from hpcml.model import Checkpoint, FileCopy, Matrix, Resources
from hpcml.spec.schema import json_schema
from hpcml.spec.checker import load, loads

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [REPO / "workflows" / "quickstart.yaml", REPO / "workflows" / "sweep.yaml"]

FULL = """\
hpcml: 1
name: full
defaults:
  image: torch
  resources: {partition: cpu, time: 2h, cpus: 4, mem: 16G, gpu_type: a100}
  env: {A: "1", B: two}
  shell: sh
  retries: 1
images:
  base:
    from: debootstrap:bookworm
    mirror: http://deb.debian.org/debian
    apt: [python3-minimal, "libc6:amd64", python3-numpy=1:1.24.2-1]
  torch:
    from: base
    pip: ["numpy==2.1.*", "scikit-learn>=1.4,<2", "torch[cuda]"]
    requirements: requirements.txt
    files: {src: /opt/src, data/x.csv: /opt/data/x.csv}
    env: {PYTHONUNBUFFERED: 1, VERSION: 1.10}
    post: python3 -c 'import sklearn'
    test: python3 -c 'import numpy'
    runscript: exec python3 "$@"
    labels: {org.example.team: vision, build: 7}
    shell: bash
  site: {from: "localimage:/shared/images/base.sif"}
  rel: {from: "localimage:images/base.sif"}
  dock: {from: "docker://nvcr.io/nvidia/pytorch:24.01-py3"}
  ora: {from: "oras://ghcr.io/lab/img:1"}
  cat: {from: "catalog:torch:2.3"}
  hand: {deffile: custom.def}
  dfile: {dockerfile: Dockerfile, shell: sh}
steps:
  prepare:
    image: base
    run: python3 /opt/src/prepare.py --out {out} # step {step} task {task}
    resources: {cpus: 2, time: 20m}
  train:
    needs: prepare
    matrix:
      lr: [0.1, 0.01]
      seed: [1, 2, 3]
      flag: [true]
      exclude: [{lr: 0.01, seed: 3}]
      include: [{lr: 0.1, seed: 1, extra: big}]
    max_parallel: 3
    run: |
      python3 train.py --data {in.prepare} --lr {lr} --seed {seed} --extra {extra} \\
        --home "${HOME}" --awk "{{print}}" --out {out}
    resources: {gpus: 2, cpus_per_gpu: 8, mem: 32G, time: 1-12:00:00, gpu_vendor: amd}
    retries: 2
    checkpoint: {signal: SIGUSR1, grace: 2m}
    secrets: [WANDB_API_KEY]
    env: {B: three, C: "4"}
  evaluate:
    needs: [train, prepare]
    run: python3 evaluate.py --runs {in.train} --data {in.prepare} --out {out}
    checkpoint: true
    shell: bash
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rel in ("requirements.txt", "src/prepare.py", "data/x.csv", "custom.def", "Dockerfile", "images/base.sif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    # validate parses hand-written files, so they must be real ones.
    (tmp_path / "custom.def").write_text("Bootstrap: docker\nFrom: debian:12\n%post\n    true\n")
    (tmp_path / "Dockerfile").write_text("FROM debian:12\nRUN true\n")
    return tmp_path


def test_full_spec(root: Path) -> None:
    wf = loads(FULL, "w.yaml", root=str(root))
    assert wf.name == "full" and wf.root == str(root) and wf.version == 1
    assert list(wf.images) == ["base", "torch", "site", "rel", "dock", "ora", "cat", "hand", "dfile"]
    assert list(wf.steps) == ["prepare", "train", "evaluate"]

    base, torch = wf.images["base"], wf.images["torch"]
    assert (base.base_kind, base.base_ref, base.mirror) == ("debootstrap", "bookworm", "http://deb.debian.org/debian")
    assert base.apt == ("python3-minimal", "libc6:amd64", "python3-numpy=1:1.24.2-1")
    assert (torch.base_kind, torch.parent) == ("image", "base")
    assert torch.pip == ("numpy==2.1.*", "scikit-learn>=1.4,<2", "torch[cuda]")
    assert torch.files == (FileCopy("src", "/opt/src"), FileCopy("data/x.csv", "/opt/data/x.csv"))
    assert torch.env == (("PYTHONUNBUFFERED", "1"), ("VERSION", "1.10"))  # numbers kept as written
    assert torch.labels == (("org.example.team", "vision"), ("build", "7"))
    assert (torch.requirements, torch.post, torch.runscript) == ("requirements.txt", "python3 -c 'import sklearn'", 'exec python3 "$@"')
    assert torch.pos is not None and (torch.pos.line, torch.pos.col) == (14, 3)
    kinds = {n: (i.base_kind, i.base_ref) for n, i in wf.images.items()}
    assert kinds["site"] == ("localimage", "/shared/images/base.sif")
    assert kinds["rel"] == ("localimage", "images/base.sif")
    assert kinds["dock"] == ("docker", "nvcr.io/nvidia/pytorch:24.01-py3")
    assert kinds["ora"] == ("oras", "ghcr.io/lab/img:1")
    assert kinds["cat"] == ("catalog", "torch:2.3")
    assert kinds["hand"] == ("deffile", "custom.def")
    assert kinds["dfile"] == ("dockerfile", "Dockerfile") and wf.images["dfile"].shell == "sh"


def test_merge_rules(root: Path) -> None:
    wf = loads(FULL, "w.yaml", root=str(root))
    prepare, train, evaluate = wf.steps["prepare"], wf.steps["train"], wf.steps["evaluate"]
    # Resources merge key by key; inherited GPU-only keys do not reach a CPU-only step.
    assert prepare.resources == Resources(partition="cpu", time_s=1200, cpus=2, mem_mb=16384)
    # A step's cpus_per_gpu replaces an inherited cpus (sbatch refuses both).
    assert train.resources == Resources(
        partition="cpu", time_s=129600, cpus=None, mem_mb=32768, gpus=2, gpu_type="a100", gpu_vendor="amd", cpus_per_gpu=8
    )
    assert train.env == (("A", "1"), ("B", "three"), ("C", "4"))
    assert prepare.env == (("A", "1"), ("B", "two"))
    assert (prepare.image, prepare.shell, prepare.retries) == ("base", "sh", 1)
    assert (train.image, train.retries, train.max_parallel) == ("torch", 2, 3)
    assert evaluate.shell == "bash" and evaluate.checkpoint == Checkpoint()
    assert train.checkpoint == Checkpoint(signal="USR1", grace_s=120)
    assert train.needs == ("prepare",) and evaluate.needs == ("train", "prepare")
    assert train.secrets == ("WANDB_API_KEY",)
    assert train.matrix == Matrix(
        axes=(("lr", (0.1, 0.01)), ("seed", (1, 2, 3)), ("flag", (True,))),
        include=((("lr", 0.1), ("seed", 1), ("extra", "big")),),
        exclude=((("lr", 0.01), ("seed", 3)),),
    )
    assert '"${HOME}"' in train.run and "{{print}}" in train.run  # left for the shell / escaped


def test_loads_defaults_root_to_the_file_directory(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo\n")
    text = "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {run.sh: /run.sh}}\nsteps:\n  a: {image: b, run: x}\n"
    wf = loads(text, str(tmp_path / "w.yaml"))
    assert wf.root == str(tmp_path)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    wf = load(path)
    assert wf.root == str(path.parent) and len(wf.steps) == 3


def test_sweep_example_exercises_the_realistic_features() -> None:
    train = load(EXAMPLES[1]).steps["train"]
    assert train.matrix is not None and train.checkpoint is not None and train.secrets
    assert train.resources.gpus >= 1 and train.retries >= 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_match_the_json_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), json_schema())


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "x", "steps": {"a": {"run": "x"}}},  # no version
        {"hpcml": 2, "name": "x", "steps": {"a": {"run": "x"}}},
        {"hpcml": 1, "name": "X", "steps": {"a": {"run": "x"}}},
        {"hpcml": 1, "name": "x", "steps": {"a": {"run": "x", "resorces": {}}}},
        {"hpcml": 1, "name": "x", "steps": {"a": {"run": "x", "resources": {"gpus": -1}}}},
        {"hpcml": 1, "name": "x", "steps": {"a": {"run": "x", "resources": {"time": "soon"}}}},
        {"hpcml": 1, "name": "x", "steps": {"a": {"run": "x", "secrets": ["A-B"]}}},
        {"hpcml": 1, "name": "x", "images": {"b": {"apt": ["x"]}}, "steps": {"a": {"run": "x"}}},
        {"hpcml": 1, "name": "x", "images": {"b": {"from": "scratch", "pip": ["x; rm"]}}, "steps": {"a": {"run": "x"}}},
        {"hpcml": 1, "name": "x", "steps": {}},
    ],
)
def test_schema_rejects_bad_documents(doc: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json_schema())


def test_cli_validate_ok() -> None:
    result = CliRunner().invoke(main, ["validate", str(EXAMPLES[0])])
    assert result.exit_code == 0, result.output
    assert result.output == f"{EXAMPLES[0]}: ok (3 steps, 1 image)\n"


def test_cli_validate_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("hpcml: 1\nname: t\nsteps:\n  a: {run: x, imag: y}\n  b: {run: x}\n")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    lines = result.output.splitlines()  # CliRunner mixes stderr in
    assert lines[0] == f"{bad}:4:6: step 'a' has no image: set 'image' in the step or in defaults"
    assert any(line.startswith(f"{bad}:4:15: unknown key 'imag'") for line in lines)
    assert len(lines) == 3


def test_cli_schema_to_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == json_schema()
    printed = CliRunner().invoke(main, ["schema"])
    assert json.loads(printed.output) == json_schema()
