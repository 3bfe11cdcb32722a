"""Benchmark: validate + plan + render for a 10,000-task sweep and for 200 images.

Prints wall time and peak memory (tracemalloc peak of Python allocations, and the
process's max RSS). Not a test: nothing is asserted. Target on a 2-core machine:
under 1 s and under 200 MB for 10,000 tasks.

    .venv/bin/python bench/plan.py
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from hpcml import plan
from hpcml.render import deffile
from hpcml.spec import checker as spec


def sweep_workflow(n_lr: int = 100, n_seed: int = 100) -> str:
    lrs = ", ".join(repr(0.001 * (i + 1)) for i in range(n_lr))
    seeds = ", ".join(str(s) for s in range(n_seed))
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
    matrix: {{lr: [{lrs}], seed: [{seeds}]}}
    run: python3 /opt/src/train.py --data {{in.prepare}} --lr {{lr}} --seed {{seed}} --out {{out}}
  evaluate:
    image: base
    needs: [train]
    run: python3 /opt/src/evaluate.py --runs {{in.train}} --out {{out}}
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


def measure(label: str, text: str, root: Path, trace: bool) -> None:
    path = root / f"{label}.yaml"
    path.write_text(text)
    if trace:  # tracemalloc slows Python down: timings come from the untraced run
        tracemalloc.start()
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
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{label}: tracemalloc peak {peak / 2**20:.1f} MiB")
        return
    print(f"{label}: {tasks} tasks, {len(p.images)} images | validate {t1 - t0:.3f}s"
          f" plan {t2 - t1:.3f}s render {t3 - t2:.3f}s total {t3 - t0:.3f}s")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        for i in range(20):
            (root / "src" / f"mod{i}.py").write_text(f"x = {i}\n" * 200)
        for trace in (False, True):
            measure("sweep-10000", sweep_workflow(), root, trace)
            measure("images-200", many_images_workflow(), root, trace)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS {rss:.1f} MiB (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
