"""The bad-input suite: every case asserts the message fragment and the exact line:col.

Each case is a whole workflow file (so positions can be read off the text). Files the
specs refer to live in a per-test workflow directory made by `root`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcml.errors import SpecError
from hpcml.spec import yamlpos
from hpcml.spec.checker import load, loads

# Lines 1-4 of most cases; steps start on line 5.
H = "hpcml: 1\nname: t\nimages:\n  b: {from: scratch}\n"
S = "steps:\n  a: {image: b, run: x}\n"

BOMB = "".join(
    [
        "a: &a [x,x,x,x,x,x,x,x,x,x]\n",
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n",
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    ]
)

CASES: list[tuple[str, str, str, str]] = [
    # (id, text, "line:col", message fragment)
    # ---- YAML level
    ("broken-yaml", "hpcml: 1\nname: [t\nsteps: {}\n", "3:6", "invalid YAML"),
    ("bad-indent", "hpcml: 1\n name: t\n", "2:6", "invalid YAML"),
    ("tab-indent", "hpcml: 1\nsteps:\n\ta: 1\n", "3:1", "invalid YAML"),
    ("duplicate-key", "hpcml: 1\nname: t\nname: u\n" + S, "3:1", "duplicate key 'name' (first defined at line 2, column 1)"),
    ("duplicate-step", H + "steps:\n  a: {image: b, run: x}\n  a: {image: b, run: y}\n", "7:3", "duplicate key 'a'"),
    ("alias-bomb", BOMB, "6:8", "alias *e expands the document beyond 250000 values"),
    ("too-many-aliases", "a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]\n", "2:405", "too many YAML aliases"),
    ("python-object-tag", "hpcml: 1\nname: !!python/object:os.system t\n", "2:7", "YAML tags are not allowed (found '!!python/object:os.system')"),
    ("custom-tag", H + "steps:\n  a: !step {image: b, run: x}\n", "6:6", "YAML tags are not allowed (found '!step')"),
    ("merge-key", H + "steps:\n  a:\n    <<: {image: b}\n    run: x\n", "7:5", "merge keys (<<) are not supported"),
    ("int-key", H + "steps:\n  1: {image: b, run: x}\n", "6:3", "keys must be strings"),
    # A plain `on:` is YAML 1.1's boolean, but as a key it can only mean the word (notify.on).
    ("bool-key", H + "steps:\n  a: {image: b, run: x, on: 1}\n", "6:25", "unknown key 'on' in step 'a'"),
    ("empty-file", "", "1:1", "the file is empty"),
    ("not-a-mapping", "- hpcml: 1\n", "1:1", "the workflow must be a mapping, found a list"),
    # ---- top level
    ("missing-version", "name: t\n" + "images:\n  b: {from: scratch}\n" + S, "1:1", "missing the required key 'hpcml'"),
    ("wrong-version", "hpcml: 2\nname: t\n" + S, "1:8", "unsupported spec version hpcml: 2; supported: 1"),
    ("version-string", "hpcml: '1'\nname: t\n" + S, "1:8", "unsupported spec version"),
    ("unknown-top-key", H + "stesp:\n  a: {run: x}\n", "5:1", "unknown key 'stesp' in the workflow (did you mean 'steps'?); allowed: hpcml, name"),
    ("missing-steps", H, "1:1", "missing the required key 'steps'"),
    ("empty-steps", H + "steps: {}\n", "5:8", "at least one step"),
    ("bad-workflow-name", "hpcml: 1\nname: My Flow\n" + S, "2:7", "invalid workflow name 'My Flow'"),
    ("long-workflow-name", "hpcml: 1\nname: " + "a" * 64 + "\n" + S, "2:7", "at most 63 characters"),
    # ---- names and injection
    ("step-name-injection", H + "steps:\n  a;rm -rf /: {image: b, run: x}\n", "6:3", "invalid step name 'a;rm -rf /'"),
    ("image-name-injection", "hpcml: 1\nname: t\nimages:\n  $(reboot): {from: scratch}\n" + S, "4:3", "invalid image name '$(reboot)'"),
    ("reserved-image-name", "hpcml: 1\nname: t\nimages:\n  scratch: {from: scratch}\n" + S, "4:3", "reserved image name"),
    ("env-name-injection", H + "steps:\n  a: {image: b, run: x, env: {'X;Y': 1}}\n", "6:31", "invalid environment variable name 'X;Y'"),
    ("env-value-bool", H + "steps:\n  a: {image: b, run: x, env: {X: yes}}\n", "6:34", "must be a string, found boolean true; quote it"),
    ("env-value-null", H + "steps:\n  a: {image: b, run: x, env: {X: }}\n", "6:33", "found null"),
    ("secret-name", H + "steps:\n  a: {image: b, run: x, secrets: [WANDB-KEY]}\n", "6:35", "invalid secret name 'WANDB-KEY'"),
    ("secret-also-env", H + "steps:\n  a: {image: b, run: x, secrets: [K], env: {K: v}}\n", "6:34", "K is both a secret and an env value"),
    ("label-newline", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, labels: {k: \"a\\nb\"}}\n" + S, "4:34", "label k must be a single line"),
    ("label-key", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, labels: {'a b': v}}\n" + S, "4:31", "invalid label name 'a b'"),
    ("partition-injection", H + "steps:\n  a: {image: b, run: x, resources: {partition: 'gpu;id'}}\n", "6:48", "invalid partition 'gpu;id'"),
    ("account-newline", H + "steps:\n  a: {image: b, run: x, resources: {account: \"lab\\nx\"}}\n", "6:46", "invalid account"),
    ("gpu-type-colon", H + "steps:\n  a: {image: b, run: x, resources: {gpus: 1, gpu_type: 'a100:2'}}\n", "6:56", "invalid gpu_type 'a100:2'"),
    ("pip-injection", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, pip: ['numpy; rm -rf /']}\n" + S, "4:28", "invalid pip requirement"),
    ("pip-option", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, pip: ['--index-url=http://evil']}\n" + S, "4:28", "invalid pip requirement"),
    ("apt-injection", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, apt: ['python3 && curl x']}\n" + S, "4:28", "invalid Debian package name"),
    ("run-nul", H + "steps:\n  a: {image: b, run: \"x\\0y\"}\n", "6:22", "must not contain a NUL character"),
    # ---- unknown keys at every level
    ("unknown-defaults-key", H + "defaults: {imgae: b}\n" + S, "5:12", "unknown key 'imgae' in defaults (did you mean 'image'?)"),
    ("unknown-image-key", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, aptt: [x]}\n" + S, "4:22", "unknown key 'aptt' in image 'b' (did you mean 'apt'?)"),
    ("unknown-step-key", H + "steps:\n  a: {image: b, run: x, resorces: {}}\n", "6:25", "unknown key 'resorces' in step 'a' (did you mean 'resources'?); allowed: image, run"),
    ("unknown-resource-key", H + "steps:\n  a: {image: b, run: x, resources: {gpu: 1}}\n", "6:37", "unknown key 'gpu' in resources of step 'a' (did you mean 'gpus'?)"),
    ("unknown-checkpoint-key", H + "steps:\n  a: {image: b, run: x, checkpoint: {sig: USR2}}\n", "6:38", "unknown key 'sig' in checkpoint (did you mean 'signal'?)"),
    ("step-not-mapping", H + "steps:\n  a: run x\n", "6:6", "step 'a' must be a mapping, found string 'run x'"),
    # ---- steps and images: references and cycles
    ("missing-run", H + "steps:\n  a: {image: b}\n", "6:6", "step 'a' is missing the required key 'run'"),
    ("no-image", "hpcml: 1\nname: t\nsteps:\n  a: {run: x}\n", "4:6", "step 'a' has no image"),
    ("unknown-step-image", H + "steps:\n  a: {image: bb, run: x}\n", "6:14", "unknown image 'bb' in image of step 'a' (did you mean 'b'?)"),
    ("unknown-default-image", H + "defaults: {image: c}\n" + S, "5:19", "unknown image 'c' in defaults.image"),
    ("dangling-needs", H + "steps:\n  prepare: {image: b, run: x}\n  train: {image: b, run: x, needs: [prepair]}\n", "7:37", "needs unknown step 'prepair' (did you mean 'prepare'?)"),
    ("self-needs", H + "steps:\n  a: {image: b, run: x, needs: a}\n", "6:32", "cannot need itself"),
    ("needs-twice", H + "steps:\n  p: {image: b, run: x}\n  a: {image: b, run: x, needs: [p, p]}\n", "7:36", "'p' is listed twice"),
    ("step-cycle", H + "steps:\n  a: {image: b, run: x, needs: c}\n  b: {image: b, run: x, needs: a}\n  c: {image: b, run: x, needs: b}\n", "6:3", "step cycle: a -> c -> b -> a"),
    ("image-cycle", "hpcml: 1\nname: t\nimages:\n  x: {from: y}\n  y: {from: x}\n" + "steps:\n  a: {image: x, run: x}\n", "4:3", "image cycle: x -> y -> x"),
    ("image-self", "hpcml: 1\nname: t\nimages:\n  x: {from: x}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "cannot be built from itself"),
    ("unknown-parent", "hpcml: 1\nname: t\nimages:\n  base: {from: scratch}\n  x: {from: bsae}\n" + "steps:\n  a: {image: x, run: x}\n", "5:13", "unknown image 'bsae' in from: (did you mean 'base'?)"),
    ("bad-from-form", "hpcml: 1\nname: t\nimages:\n  x: {from: 'library://alpine'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "unknown from: form 'library://alpine'; allowed: scratch, debootstrap:SUITE"),
    ("bad-suite", "hpcml: 1\nname: t\nimages:\n  x: {from: 'debootstrap:Book worm'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "invalid debootstrap reference 'Book worm'"),
    ("docker-ref-space", "hpcml: 1\nname: t\nimages:\n  x: {from: 'docker://a b'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "invalid docker reference"),
    ("no-from", "hpcml: 1\nname: t\nimages:\n  x: {apt: [curl]}\n" + "steps:\n  a: {image: x, run: x}\n", "4:6", "needs one of 'from', 'deffile' or 'dockerfile'"),
    ("deffile-with-apt", "hpcml: 1\nname: t\nimages:\n  x: {deffile: custom.def, apt: [curl]}\n" + "steps:\n  a: {image: x, run: x}\n", "4:28", "'apt' cannot be combined with deffile:"),
    ("from-and-deffile", "hpcml: 1\nname: t\nimages:\n  x: {from: scratch, deffile: custom.def}\n" + "steps:\n  a: {image: x, run: x}\n", "4:22", "'from' and 'deffile' cannot be combined"),
    ("mirror-docker", "hpcml: 1\nname: t\nimages:\n  x: {from: 'docker://alpine', mirror: 'http://m'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:40", "mirror applies only to from: debootstrap"),
    ("bad-shell", H + "steps:\n  a: {image: b, run: x, shell: zsh}\n", "6:32", "invalid shell 'zsh' (did you mean 'sh'?); allowed: bash, sh"),
    # ---- files
    ("file-dotdot", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {../outside/x: /x}}\n" + S, "4:30", "must not contain '..'"),
    ("file-symlink-escape", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {link: /x}}\n" + S, "4:30", "leaves the workflow directory through the symlink 'link'"),
    ("dir-symlink-escape", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {tree: /x}}\n" + S, "4:30", "through the symlink 'tree/evil'"),
    ("file-absolute", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {/etc/passwd: /x}}\n" + S, "4:30", "must be relative to the workflow directory"),
    ("file-missing", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {nope.py: /x}}\n" + S, "4:30", "files source 'nope.py' does not exist"),
    ("file-dst-relative", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {src: opt/src}}\n" + S, "4:35", "must be an absolute path"),
    ("file-dst-space", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, files: {src: '/opt/my src'}}\n" + S, "4:35", "with no blanks, '#'"),
    ("requirements-missing", "hpcml: 1\nname: t\nimages:\n  b: {from: scratch, requirements: req.txt}\n" + S, "4:36", "requirements file 'req.txt' does not exist"),
    ("localimage-missing", "hpcml: 1\nname: t\nimages:\n  x: {from: 'localimage:base.sif'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "localimage path 'base.sif' does not exist"),
    ("localimage-escape", "hpcml: 1\nname: t\nimages:\n  x: {from: 'localimage:../o.sif'}\n" + "steps:\n  a: {image: x, run: x}\n", "4:13", "must not contain '..'"),
    ("deffile-missing", "hpcml: 1\nname: t\nimages:\n  x: {deffile: nope.def}\n" + "steps:\n  a: {image: x, run: x}\n", "4:16", "deffile 'nope.def' does not exist"),
    # ---- durations, sizes, GPUs, counts
    ("bad-time", H + "steps:\n  a: {image: b, run: x, resources: {time: 4 hours}}\n", "6:43", "time: invalid duration '4 hours': expected"),
    ("zero-time", H + "steps:\n  a: {image: b, run: x, resources: {time: 0}}\n", "6:43", "time must be greater than zero"),
    ("bad-mem", H + "steps:\n  a: {image: b, run: x, resources: {mem: 32X}}\n", "6:42", "mem: invalid size '32X'"),
    ("bad-default-mem", H + "defaults: {resources: {mem: lots}}\n" + S, "5:29", "mem: invalid size 'lots'"),
    ("negative-gpus", H + "steps:\n  a: {image: b, run: x, resources: {gpus: -1}}\n", "6:43", "gpus must be between 0 and 64, found -1"),
    ("gpus-string", H + "steps:\n  a: {image: b, run: x, resources: {gpus: two}}\n", "6:43", "gpus must be an integer, found string 'two'"),
    ("gpus-float", H + "steps:\n  a: {image: b, run: x, resources: {gpus: 1.5}}\n", "6:43", "gpus must be an integer, found number 1.5"),
    ("gpu-vendor", H + "steps:\n  a: {image: b, run: x, resources: {gpus: 1, gpu_vendor: intel}}\n", "6:58", "invalid gpu_vendor 'intel'; allowed: nvidia, amd"),
    ("gpu-type-without-gpus", H + "steps:\n  a: {image: b, run: x, resources: {gpu_type: a100}}\n", "6:47", "gpu_type needs gpus of at least 1"),
    ("launch-unknown", H + "steps:\n  a: {image: b, run: x, resources: {launch: per_gpus}}\n", "6:45", "invalid launch 'per_gpus' (did you mean 'per_gpu'?); allowed: single, per_node, per_gpu"),
    ("launch-per-gpu-without-gpus", H + "steps:\n  a: {image: b, run: x, resources: {nodes: 2, launch: per_gpu}}\n", "6:55", "launch: per_gpu in step 'a' starts one process per GPU, so it needs gpus of at least 1"),
    ("launch-per-gpu-inherited-without-gpus", H + "defaults: {resources: {launch: per_gpu}}\n" + S, "5:32", "launch: per_gpu in step 'a' starts one process per GPU"),
    ("launch-single-on-two-nodes", H + "steps:\n  a: {image: b, run: x, resources: {nodes: 2, gpus: 1, launch: single}}\n", "6:64", "launch: single in step 'a' starts one process in all, so 1 of its 2 nodes would sit idle; use per_node"),
    ("launch-not-a-string", H + "steps:\n  a: {image: b, run: x, resources: {launch: 2}}\n", "6:45", "invalid launch"),
    ("nodes-zero", H + "steps:\n  a: {image: b, run: x, resources: {nodes: 0}}\n", "6:44", "nodes"),
    ("matrix-axis-nodes", H + "steps:\n  a: {image: b, run: x, matrix: {nodes: [1, 2]}}\n", "6:34", "matrix key 'nodes' in step 'a' is reserved"),
    ("unknown-placeholder-near-nodes", H + "steps:\n  a: {image: b, run: 'torchrun --nnodes {node}'}\n", "6:41", "unknown placeholder {node} in run of step 'a' (did you mean {nodes}?)"),
    ("cpus-and-cpus-per-gpu", H + "steps:\n  a: {image: b, run: x, resources: {gpus: 1, cpus: 2, cpus_per_gpu: 4}}\n", "6:69", "cpus and cpus_per_gpu cannot both be set"),
    ("zero-cpus", H + "steps:\n  a: {image: b, run: x, resources: {cpus: 0}}\n", "6:43", "cpus must be at least 1"),
    ("retries-too-many", H + "steps:\n  a: {image: b, run: x, retries: 101}\n", "6:34", "retries must be between 0 and 100"),
    ("retries-bool", H + "steps:\n  a: {image: b, run: x, retries: true}\n", "6:34", "retries must be an integer, found boolean true"),
    ("max-parallel-zero", H + "steps:\n  a: {image: b, run: x, matrix: {k: [1]}, max_parallel: 0}\n", "6:57", "max_parallel must be at least 1"),
    ("max-parallel-no-matrix", H + "steps:\n  a: {image: b, run: x, max_parallel: 2}\n", "6:39", "max_parallel needs a matrix"),
    ("checkpoint-signal", H + "steps:\n  a: {image: b, run: x, checkpoint: {signal: KILL}}\n", "6:46", "invalid checkpoint signal 'KILL'"),
    ("checkpoint-grace-vs-time", H + "steps:\n  a: {image: b, run: x, resources: {time: 5m}, checkpoint: {grace: 10m}}\n", "6:68", "must be shorter than the time limit"),
    ("checkpoint-grace-bad", H + "steps:\n  a: {image: b, run: x, checkpoint: {grace: soon}}\n", "6:45", "checkpoint grace: invalid duration 'soon'"),
    # ---- matrix and placeholders
    ("matrix-empty-axis", H + "steps:\n  a: {image: b, run: x, matrix: {lr: []}}\n", "6:38", "matrix axis 'lr' must be a non-empty list"),
    ("matrix-reserved-axis", H + "steps:\n  a: {image: b, run: x, matrix: {out: [1]}}\n", "6:34", "matrix key 'out' in step 'a' is reserved"),
    ("matrix-bad-axis", H + "steps:\n  a: {image: b, run: x, matrix: {learning-rate: [1]}}\n", "6:34", "invalid matrix key 'learning-rate'"),
    ("matrix-control-char", H + "steps:\n  a: {image: b, run: x, matrix: {lr: [\"a\\x1fb\"]}}\n", "6:39", "must not contain control characters"),
    ("matrix-nested-value", H + "steps:\n  a: {image: b, run: x, matrix: {lr: [[1, 2]]}}\n", "6:39", "matrix values for 'lr' must be strings, numbers or booleans, found a list"),
    ("matrix-exclude-unknown", H + "steps:\n  a: {image: b, run: x, matrix: {lr: [1], exclude: [{seed: 1}]}}\n", "6:54", "matrix exclude key 'seed' is not an axis"),
    ("matrix-duplicate-value", H + "steps:\n  a: {image: b, run: x, matrix: {lr: [1, 1]}}\n", "6:42", "value 1 appears twice"),
    ("unknown-placeholder", H + "steps:\n  a: {image: b, matrix: {lr: [1]}, run: 'train --lr {lrr}'}\n", "6:53", "unknown placeholder {lrr} in run of step 'a' (did you mean {lr}?)"),
    ("placeholder-awk", H + "steps:\n  a:\n    image: b\n    run: sed -n '{p}' f\n", "8:18", "unknown placeholder {p}"),
    ("placeholder-block", H + "steps:\n  a:\n    image: b\n    run: |\n      echo ok\n        --out {ot}\n", "10:15", "unknown placeholder {ot}"),
    ("in-not-in-needs", H + "steps:\n  p: {image: b, run: x}\n  a: {image: b, run: 'cat {in.p}'}\n", "7:27", "placeholder {in.p} in run of step 'a' refers to 'p', which is not in needs; add it to needs"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workflow directory with the files the cases refer to, and symlinks that escape it."""
    wf = tmp_path / "wf"
    (wf / "src").mkdir(parents=True)
    (wf / "src" / "train.py").write_text("print('hi')\n")
    (wf / "custom.def").write_text("Bootstrap: scratch\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret\n")
    (wf / "link").symlink_to(outside / "secret")
    (wf / "tree").mkdir()
    (wf / "tree" / "evil").symlink_to(outside)
    return wf


def test_suite_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("text", "where", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(root: Path, text: str, where: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        loads(text, "workflow.yaml", root=str(root))
    lines = [str(d) for d in info.value.diagnostics]
    wanted = f"workflow.yaml:{where}: "
    assert any(line.startswith(wanted) and fragment in line for line in lines), "\n".join(lines)


def _messages(text: str, root: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        loads(text, "workflow.yaml", root=str(root))
    return [str(d) for d in info.value.diagnostics]


@pytest.mark.parametrize("text", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_both_yaml_parsers_give_the_same_messages(root: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # libyaml's C parser (the default where present) and the pure-Python one must agree on
    # every message and position; HPCML_PURE_YAML=1 forces the pure one.
    fast = _messages(text, root)
    monkeypatch.setenv(yamlpos.PURE_ENV, "1")
    assert _messages(text, root) == fast


def test_all_errors_are_collected_and_sorted(root: Path) -> None:
    text = H + "steps:\n  a: {image: zz, run: x, retries: -1}\n  b: {image: b, run: '{nope}', needs: [q]}\n"
    with pytest.raises(SpecError) as info:
        loads(text, "w.yaml", root=str(root))
    got = [(d.line, d.col) for d in info.value.diagnostics]
    assert got == sorted(got) and len(got) == 4, str(info.value)
    assert str(info.value).splitlines()[0].startswith("w.yaml:6:14: unknown image 'zz'")


def test_load_reports_unreadable_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the workflow file"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"hpcml: 1\nname: caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin1.yaml:2:10: the file is not valid UTF-8"):
        load(bad)


def test_load_refuses_huge_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(SpecError, match=r"big.yaml:1:1: file is larger than 1024 KiB"):
        load(big)


def test_paths_in_messages_are_as_given(root: Path) -> None:
    (root / "w.yaml").write_text("hpcml: 1\nname: T\n" + "steps:\n  a: {run: x}\n")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with pytest.raises(SpecError, match=r"^w.yaml:2:7: invalid workflow name"):
            load("w.yaml")
    finally:
        os.chdir(cwd)
