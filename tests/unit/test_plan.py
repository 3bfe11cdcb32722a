"""plan: DAG order, matrix expansion, placeholders, and the content keys of images and tasks."""

from __future__ import annotations

import re

import os
import shutil
from pathlib import Path

import pytest

from hpcml import plan
from hpcml.spec import checker as spec
from hpcml.errors import SpecError
from hpcml.model import Matrix

WORKFLOW = """\
hpcml: 1
name: demo
images:
  base:
    from: debootstrap:bookworm
    apt: [python3-minimal]
  torch:
    from: base
    pip: [numpy]
    requirements: requirements.txt
    files: {src: /opt/src}
  side:
    from: catalog:cuda:12.4
steps:
  prepare:
    image: base
    run: python3 /opt/src/prepare.py --out {out}
  train:
    image: torch
    needs: [prepare]
    matrix: {lr: [0.1, 0.01], seed: [1, 2, 3]}
    run: python3 /opt/src/train.py --data {in.prepare} --lr {lr} --seed {seed} --out {out}
  evaluate:
    image: torch
    needs: [train]
    run: python3 /opt/src/evaluate.py --runs {in.train} --out {out}
"""


def make(root: Path, text: str = WORKFLOW) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "train.py").write_text("print('train')\n")
    (root / "requirements.txt").write_text("six\n")
    (root / "workflow.yaml").write_text(text)
    return root / "workflow.yaml"


def planned(root: Path, text: str = WORKFLOW, **kw) -> plan.Plan:
    return plan.build(spec.load(make(root, text)), **kw)


def keys(p: plan.Plan) -> dict[str, list[str]]:
    out = {name: [ip.key] for name, ip in p.images.items()}
    out.update({name: [t.key for t in sp.tasks] for name, sp in p.steps.items()})
    return out


# ---- order and expansion ----------------------------------------------------------------


def test_orders_and_tasks(tmp_path: Path) -> None:
    p = planned(tmp_path)
    assert p.step_order == ("prepare", "train", "evaluate")
    assert p.image_order.index("base") < p.image_order.index("torch")
    train = p.steps["train"]
    assert train.is_array and len(train.tasks) == 6
    assert [t.index for t in train.tasks] == list(range(6))
    assert train.tasks[0].point == (("lr", 0.1), ("seed", 1))
    assert train.tasks[1].command == "python3 /opt/src/train.py --data {in.prepare} --lr 0.1 --seed 2 --out {out}"
    assert p.steps["evaluate"].tasks[0].upstream == tuple(sorted(t.key for t in train.tasks))
    assert p.images["torch"].parent == "base" and p.images["torch"].parent_key == p.images["base"].key
    assert dict(p.images["torch"].inputs).keys() == {"requirements.txt", "src"}


def test_topological_order_keeps_written_order_where_free(tmp_path: Path) -> None:
    text = WORKFLOW.replace("steps:\n", "steps:\n  zfirst:\n    image: base\n    needs: [evaluate]\n    run: 'true'\n")
    p = planned(tmp_path, text)
    assert p.step_order == ("prepare", "train", "evaluate", "zfirst")


def m(axes, include=(), exclude=()):
    return Matrix(tuple((k, tuple(v)) for k, v in axes),
                  tuple(tuple(e.items()) for e in include), tuple(tuple(e.items()) for e in exclude))


def test_matrix_cartesian_first_axis_slowest() -> None:
    points = plan.expand_matrix(m([("a", [1, 2]), ("b", ["x", "y"])]))
    assert points == [(("a", 1), ("b", "x")), (("a", 1), ("b", "y")), (("a", 2), ("b", "x")), (("a", 2), ("b", "y"))]


def test_matrix_exclude_partial_match() -> None:
    points = plan.expand_matrix(m([("a", [1, 2]), ("b", ["x", "y"])], exclude=[{"a": 1}]))
    assert points == [(("a", 2), ("b", "x")), (("a", 2), ("b", "y"))]


def test_matrix_include_github_semantics() -> None:
    # The example of GitHub's documentation ("Expanding or adding matrix configurations").
    matrix = m(
        [("fruit", ["apple", "pear"]), ("animal", ["cat", "dog"])],
        include=[
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    )
    assert [dict(p) for p in plan.expand_matrix(matrix)] == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_matrix_bool_is_not_int() -> None:
    points = plan.expand_matrix(m([("flag", [True, 1])], exclude=[{"flag": 1}]))
    assert points == [(("flag", True),)]


def test_matrix_empty_after_exclude(tmp_path: Path) -> None:
    text = WORKFLOW.replace("matrix: {lr: [0.1, 0.01], seed: [1, 2, 3]}",
                            "matrix: {lr: [0.1], seed: [1], exclude: [{lr: 0.1}]}")
    with pytest.raises(SpecError, match=r"workflow.yaml:\d+:\d+: matrix of step .train. is empty after applying exclude"):
        planned(tmp_path, text)


@pytest.mark.parametrize(
    "matrix, message",
    [
        # Two tasks with one point get one key and would share one output directory.
        ("{x: [1.0, 1, 1]}", "value 1 appears twice in matrix axis 'x'"),
        ("{x: [1, 2], include: [{x: 5}, {x: 5}]}", "matrix of step 'train' has the point {x=5} twice (points 2 and 3)"),
    ],
)
def test_matrix_repeating_a_point_is_a_spec_error(tmp_path: Path, matrix: str, message: str) -> None:
    text = WORKFLOW.replace("matrix: {lr: [0.1, 0.01], seed: [1, 2, 3]}", f"matrix: {matrix}").replace(
        "--lr {lr} --seed {seed} ", "")
    with pytest.raises(SpecError, match=re.escape(message)):
        planned(tmp_path, text)


def test_include_only_matrix_has_one_point_per_entry() -> None:
    # As in GitHub Actions; the entries were merged into one point, the last value winning.
    assert plan.expand_matrix(m([], include=[{"a": 1}, {"a": 2, "b": "x"}])) == [(("a", 1),), (("a", 2), ("b", "x"))]
    with pytest.raises(SpecError, match=re.escape("has the point {b=x, a=1} twice (points 0 and 1)")):
        plan.expand_matrix(m([], include=[{"a": 1, "b": "x"}, {"b": "x", "a": 1}]))


def test_matrix_values_of_different_types_are_distinct_points() -> None:
    points = plan.expand_matrix(m([("x", [1, 1.0, True, "1"])]))
    assert len(points) == 4


def test_include_point_without_axis_used_in_command() -> None:
    with pytest.raises(SpecError, match=r"matrix point 1 has no value for \{lr\}"):
        plan.substitute("x {lr}", (("seed", 1),), "train", 1)


# ---- placeholders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [(True, "true"), (False, "false"), (0.1, "0.1"), (1e-05, "1e-05"), (3, "3"),
     ("a b", "'a b'"), ("$(rm -rf /)", "'$(rm -rf /)'"), ("{out}", "'{out}'")],
)
def test_values_are_quoted_and_never_become_placeholders(value, text) -> None:
    command = plan.substitute("run {v}", (("v", value),), "s", 0)
    assert plan.fill_paths(command, "/o", {}) == f"run {text}"


def test_step_task_and_escapes_and_shell_variables() -> None:
    command = plan.substitute("echo {step} {task} ${HOME} $X {{lit}} {out}", (), "my-step", 4)
    assert command == "echo my-step 4 ${HOME} $X {{lit}} {out}"
    assert plan.fill_paths(command, "/runs/o 1", {}) == "echo my-step 4 ${HOME} $X {lit} '/runs/o 1'"


def test_fill_paths_keeps_braces_in_paths() -> None:
    # The workflow directory may contain braces; only the template's escapes are undone.
    command = plan.substitute("cat {in.prep} > {out}; echo {{x}}", (), "s", 0)
    assert plan.fill_paths(command, "/w/a{{b}}/o", {"prep": "/w/a}}{p"}) == "cat '/w/a}}{p' > '/w/a{{b}}/o'; echo {x}"


def test_fill_paths_requires_every_input() -> None:
    with pytest.raises(ValueError, match=r"\{in.prep\}"):
        plan.fill_paths("cat {in.prep}", "/o", {})


# ---- keys -------------------------------------------------------------------------------


def test_keys_are_stable_across_locations_and_cwd(tmp_path: Path, monkeypatch) -> None:
    first = keys(planned(tmp_path / "a"))
    monkeypatch.chdir(tmp_path)
    second = keys(planned(tmp_path / "elsewhere" / "b"))
    assert first == second


def test_changing_evaluate_changes_only_evaluate(tmp_path: Path) -> None:
    before = keys(planned(tmp_path / "a"))
    after = keys(planned(tmp_path / "b", WORKFLOW.replace("evaluate.py --runs", "evaluate.py --top 3 --runs")))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"evaluate"}


def test_resources_do_not_change_keys(tmp_path: Path) -> None:
    before = keys(planned(tmp_path / "a"))
    text = WORKFLOW.replace("    image: torch\n    needs: [prepare]",
                            "    image: torch\n    resources: {time: 4h, partition: gpu}\n    needs: [prepare]")
    assert keys(planned(tmp_path / "b", text)) == before


def test_input_file_change_propagates_to_children_and_tasks(tmp_path: Path) -> None:
    before = keys(planned(tmp_path))
    (tmp_path / "src" / "train.py").write_text("print('changed')\n")
    after = keys(plan.build(spec.load(tmp_path / "workflow.yaml")))
    assert before["base"] == after["base"] and before["prepare"] == after["prepare"]
    assert all(before[n] != after[n] for n in ("torch", "train", "evaluate"))
    assert set(before["train"]).isdisjoint(after["train"])


def test_executable_bit_counts_but_not_other_mode_bits(tmp_path: Path) -> None:
    before = keys(planned(tmp_path))["torch"]
    script = tmp_path / "src" / "train.py"
    os.chmod(script, 0o664)
    assert keys(plan.build(spec.load(tmp_path / "workflow.yaml")))["torch"] == before
    os.chmod(script, 0o755)
    assert keys(plan.build(spec.load(tmp_path / "workflow.yaml")))["torch"] != before


def test_catalog_resolver_feeds_parent_key(tmp_path: Path) -> None:
    literal = planned(tmp_path)
    assert literal.images["side"].parent_key == "catalog:cuda:12.4"
    seen = []

    def resolve(name: str, tag: str | None) -> str:
        seen.append((name, tag))
        return "f" * 64

    resolved = plan.build(spec.load(tmp_path / "workflow.yaml"), resolve)
    assert seen == [("cuda", "12.4")]
    assert resolved.images["side"].parent_key == "f" * 64
    assert resolved.images["side"].key != literal.images["side"].key


def test_directory_manifest_cannot_be_forged_by_names(tmp_path: Path) -> None:
    # A name holding a newline could spell another tree's manifest lines (same key, other files).
    from hpcml.hashing import InputError, hash_input

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x\nf- y").write_text("x")
    with pytest.raises(InputError, match="newline"):
        hash_input(str(tmp_path), "d")


def test_symlinked_input_is_refused(tmp_path: Path) -> None:
    make(tmp_path)
    # A link that stays inside the directory passes the spec's escape check; the hash refuses it.
    os.symlink("train.py", tmp_path / "src" / "link")
    with pytest.raises(SpecError, match=r"src/link: is a symbolic link"):
        plan.build(spec.load(tmp_path / "workflow.yaml"))


def test_deffile_and_dockerfile_images(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    make(tmp_path)
    shutil.copytree(repo / "definitions", tmp_path / "definitions")
    text = WORKFLOW.replace("images:\n", "images:\n  custom:\n    deffile: definitions/custom.def\n"
                            "  dock:\n    dockerfile: definitions/Dockerfile\n")
    p = planned(tmp_path, text)
    assert p.images["custom"].definition == (repo / "definitions/custom.def").read_text()
    assert dict(p.images["custom"].inputs).keys() == {"definitions/requirements.txt"}
    assert dict(p.images["dock"].inputs).keys() == {"definitions/requirements.txt"}
    before = p.images["custom"].key
    (tmp_path / "definitions" / "requirements.txt").write_text("six==1.17.0\n")
    assert plan.build(spec.load(tmp_path / "workflow.yaml")).images["custom"].key != before


def test_deffile_errors_point_into_the_def_file(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "bad.def").write_text("Bootstrap: docker\nFrom: x\n%setup\n  cp /etc/shadow $APPTAINER_ROOTFS\n")
    text = WORKFLOW.replace("images:\n", "images:\n  bad:\n    deffile: bad.def\n")
    with pytest.raises(SpecError, match=r"(?m)^\S*/bad\.def:3:1: section %setup runs on the build host"):
        planned(tmp_path, text)


def test_deffile_files_pattern_is_refused(tmp_path: Path) -> None:
    # Apptainer globs %files sources; the key can only hash files named outright.
    make(tmp_path)
    (tmp_path / "d[1].txt").write_text("hashed\n")
    (tmp_path / "g.def").write_text("Bootstrap: scratch\n%files\nd[1].txt /x\n")
    text = WORKFLOW.replace("images:\n", "images:\n  g:\n    deffile: g.def\n")
    with pytest.raises(SpecError, match=r"g\.def:3:1: %files source 'd\[1\]\.txt' is a pattern"):
        planned(tmp_path, text)


def test_image_key_is_versioned() -> None:
    assert plan.IMAGE_KEY_TAG.endswith("-v1") and plan.TASK_KEY_TAG.endswith("-v1")
    assert plan.image_key("a", [("f", "1")], None) != plan.image_key("a", [], None)


# ---- CLI: plan and compile ------------------------------------------------------------


def test_cli_plan_json_is_stable(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from hpcml.cli.app import main

    path = make(tmp_path)
    first = CliRunner().invoke(main, ["plan", str(path), "--json"])
    second = CliRunner().invoke(main, ["plan", str(path), "--json"])
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    doc = json.loads(first.output)
    assert doc["format"] == 1
    assert [s["name"] for s in doc["steps"]] == ["prepare", "train", "evaluate"]
    assert doc["steps"][1]["tasks"][5]["point"] == {"lr": 0.01, "seed": 3}
    assert {i["name"]: i["base"] for i in doc["images"]}["side"] == "catalog:cuda:12.4"


def test_cli_plan_human(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hpcml.cli.app import main

    result = CliRunner().invoke(main, ["plan", str(make(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "debootstrap:bookworm" in result.output


def test_cli_compile_writes_defs_and_keys(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from hpcml.render import deffile
    from hpcml.cli.app import main

    out = tmp_path / "defs"
    result = CliRunner().invoke(main, ["compile", str(make(tmp_path / "wf")), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["base.def", "keys.json", "side.def", "torch.def"]
    keys_doc = json.loads((out / "keys.json").read_text())
    torch = (out / "torch.def").read_text()
    assert f"From: {out}/base.sif\n" in torch
    assert f"org.hpcml.key {keys_doc['images']['torch']['key']}\n" in torch
    assert "From: " + str(out / "catalog-cuda-12.4.sif") in (out / "side.def").read_text()
    for name in ("base", "side", "torch"):
        deffile.parse_definition((out / f"{name}.def").read_text(), f"{name}.def")


def test_cli_compile_writes_nothing_for_invalid_spec(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hpcml.cli.app import main

    path = make(tmp_path, WORKFLOW.replace("--lr {lr}", "--lr {lrr}"))
    out = tmp_path / "defs"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(out)])
    assert result.exit_code == 2
    assert "unknown placeholder {lrr}" in result.output
    assert not out.exists()


@pytest.mark.parametrize("example", ["quickstart.yaml", "sweep.yaml"])
def test_examples_compile_to_parseable_definitions(example: str, tmp_path: Path) -> None:
    from hpcml import api
    from hpcml.render import deffile

    repo = Path(__file__).resolve().parents[2]
    result = api.compile(repo / "workflows" / example, tmp_path)
    assert result.files
    for path in result.files:
        parsed = deffile.parse_definition(Path(path).read_text(), path)
        assert parsed.bootstrap in {"debootstrap", "localimage", "scratch"}


LAUNCH = """\
hpcml: 1
name: dist
images:
  b: {from: scratch}
defaults:
  image: b
steps:
  one:
    resources: {gpus: 2}
    run: echo {nodes} {gpus_per_node}
  torchrun:
    resources: {nodes: 2, gpus: 4}
    run: torchrun --nnodes {nodes} --nproc-per-node {gpus_per_node} t.py
  ddp:
    resources: {nodes: 3, gpus: 2, launch: per_gpu}
    run: python3 t.py
"""


def test_launch_defaults_ranks_and_launcher_placeholders(tmp_path: Path) -> None:
    wf = tmp_path / "w.yaml"
    wf.write_text(LAUNCH)
    p = plan.build(spec.load(str(wf)))
    res = {name: sp.step.resources for name, sp in p.steps.items()}
    assert (res["one"].launch, res["one"].ranks) == ("single", 1)
    assert (res["torchrun"].launch, res["torchrun"].ranks, res["torchrun"].ranks_per_node) == ("per_node", 2, 1)
    assert (res["ddp"].launch, res["ddp"].ranks, res["ddp"].ranks_per_node) == ("per_gpu", 6, 2)
    assert p.steps["one"].tasks[0].command == "echo 1 2"
    assert p.steps["torchrun"].tasks[0].command == "torchrun --nnodes 2 --nproc-per-node 4 t.py"
