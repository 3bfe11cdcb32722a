"""Benchmark: `hpcml plan` beside `snakemake -n` on the same 10,003-task DAG, whole processes.

The DAG: prep → a 10,000-point sweep whose values are written out as a literal list →
evaluate. The bench writes the workflow and an equivalent Snakefile into a temporary
directory, runs each tool as its own process (`hpcml plan` through the venv's console
script, `snakemake -n`), and prints each one's wall time and peak memory (max RSS of the
process, from wait4) and the ratio. It then breaks hpcml's time down by stage in this
process (validate, plan, render) for the sweep and for 200 images. Figures only: nothing
is asserted.

    .venv/bin/python bench/plan.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcml import plan
from hpcml.render import deffile
from hpcml.spec import checker as spec

BIN = Path(sys.executable).parent
N_POINTS = 10_000


def sweep_workflow(n: int = N_POINTS) -> str:
    seeds = ", ".join(str(s) for s in range(n))
    return f"""\
hpcml: 1
name: big-sweep
images:
  base:
    from: debootstrap:bookworm
    apt: [python3-minimal, python3-numpy]
    files: {{src: /opt/src}}
steps:
  prepare:
    image: base
    run: python3 /opt/src/prepare.py --out {{out}}
  train:
    image: base
    needs: [prepare]
    matrix: {{seed: [{seeds}]}}
    run: python3 /opt/src/train.py --data {{in.prepare}} --seed {{seed}} --out {{out}}
  evaluate:
    image: base
    needs: [train]
    run: python3 /opt/src/evaluate.py --runs {{in.train}} --out {{out}}
"""


def snakefile(n: int = N_POINTS) -> str:
    """The same DAG for Snakemake: one job per seed, the seeds written as a literal list."""
    seeds = ", ".join(str(s) for s in range(n))
    return f"""\
SEEDS = [{seeds}]

rule all:
    input: "out/evaluate/done"

rule prepare:
    output: "out/prepare/done"
    shell: "python3 src/prepare.py --out out/prepare && touch {{output}}"

rule train:
    input: "out/prepare/done"
    output: "out/train/{{seed}}/done"
    shell: "python3 src/train.py --data out/prepare --seed {{wildcards.seed}} --out out/train/{{wildcards.seed}} && touch {{output}}"

rule evaluate:
    input: expand("out/train/{{seed}}/done", seed=SEEDS)
    output: "out/evaluate/done"
    shell: "python3 src/evaluate.py --runs out/train --out out/evaluate && touch {{output}}"
"""


def many_images_workflow(n: int = 200) -> str:
    lines = ["hpcml: 1", "name: many-images", "images:",
             "  base:", "    from: debootstrap:bookworm", "    apt: [python3-minimal]"]
    for i in range(n - 1):
        parent = "base" if i % 10 == 0 else f"img{i - 1}"
        lines += [f"  img{i}:", f"    from: {parent}", f"    pip: [pkg{i}==1.0]",
                  "    files: {src: /opt/src}", f"    env: {{IMG: '{i}'}}"]
    lines += ["steps:", "  run:", f"    image: img{n - 2}", "    run: python3 -c 'print(1)'"]
    return "\n".join(lines) + "\n"


def run_process(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process; output is discarded."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def head_to_head(root: Path, runs: int) -> None:
    (root / "workflow.yaml").write_text(sweep_workflow())
    (root / "Snakefile").write_text(snakefile())
    tools = {
        "hpcml plan": [str(BIN / "hpcml"), "plan", "workflow.yaml"],
        "snakemake -n": [str(BIN / "snakemake"), "-n", "--cores", "1", "-s", "Snakefile"],
    }
    results: dict[str, tuple[float, float]] = {}
    for label, argv in tools.items():
        samples = [run_process(argv, root) for _ in range(runs)]
        results[label] = (statistics.median(s[0] for s in samples), max(s[1] for s in samples))
        wall, rss = results[label]
        print(f"{label:>13}: {wall:6.2f} s wall (median of {runs}), {rss:6.1f} MiB peak RSS")
    (h_wall, h_rss), (s_wall, s_rss) = results["hpcml plan"], results["snakemake -n"]
    print(f"{'ratio':>13}: snakemake/hpcml {s_wall / h_wall:.1f}x time, {s_rss / h_rss:.1f}x memory "
          f"({N_POINTS + 2:,} hpcml tasks, {N_POINTS + 3:,} snakemake jobs with its `all` rule; python {sys.version.split()[0]})")


def stages(label: str, text: str, root: Path) -> None:
    path = root / f"{label}.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    workflow = spec.load(path)
    t1 = time.perf_counter()
    p = plan.build(workflow)
    t2 = time.perf_counter()
    # compile's rendering step: bind every canonical definition as `apptainer build` gets it.
    for name in p.image_order:
        ip = p.images[name]
        deffile.bind(ip.definition, parent_sif=f"/x/{ip.parent}.sif" if ip.parent else None, key=ip.key)
    t3 = time.perf_counter()
    tasks = sum(len(sp.tasks) for sp in p.steps.values())
    print(f"{label}: {tasks} tasks, {len(p.images)} images | validate {t1 - t0:.3f}s"
          f" plan {t2 - t1:.3f}s render {t3 - t2:.3f}s total {t3 - t0:.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (the median is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        for i in range(20):
            (root / "src" / f"mod{i}.py").write_text(f"x = {i}\n" * 200)
        print("whole processes, same DAG:")
        head_to_head(root, args.runs)
        print("hpcml by stage, in this process:")
        stages("sweep-10000", sweep_workflow(), root)
        stages("images-200", many_images_workflow(), root)


if __name__ == "__main__":
    main()
