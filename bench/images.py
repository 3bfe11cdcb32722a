"""Benchmark: resolving cached images, and parallel builds of independent images.

    .venv/bin/python bench/images.py [--images 200] [--builds 4]

1. Resolve N images that are all in the catalog (their SIF hashes already verified and
   cached, as after a first use): the cost of `images.ensure` when nothing needs building.
   Target: under 100 ms for 200 images on the project's 2-core test machine.
2. Build K independent tiny images (scratch + busybox, %post sleeps 1 s) with --jobs 1 and
   --jobs K (needs apptainer; skipped without it) and print the speed-up.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from hpcml import config, plan
from hpcml.images import ensure as images
from hpcml.spec import checker as spec


def workflow(root: Path, n: int, post: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "busybox")
    lines = ["hpcml: 1", "name: bench", "images:"]
    for i in range(n):
        lines += [f"  img{i}:", "    from: scratch", "    shell: sh", "    files: {busybox: /bin/sh}",
                  "    post: |", f"      echo {i} > /id", f"      {post}"]
    lines += ["steps:", "  s:", "    image: img0", "    run: cat /id"]
    (root / "workflow.yaml").write_text("\n".join(lines) + "\n")
    return root / "workflow.yaml"


def settings(tmp: Path) -> config.Settings:
    return config.load({"catalogs": str(tmp / "cat"), "cache_dir": str(tmp / "cache"),
                        "build_flags": "--fakeroot"}, env={"HOME": str(tmp), "HPCML_SITE_CONFIG": "/nonexistent"})


def bench_resolve(tmp: Path, n: int) -> None:
    from hpcml.images.catalog import Catalog
    from hpcml.images.manifest import new_manifest

    wf = workflow(tmp / "wf", n, "true")
    p = plan.build(spec.load(wf))
    s = settings(tmp)
    cat = Catalog(tmp / "cat")
    fake = tmp / "fake.sif"  # the catalog treats SIFs as bytes: resolving does not open them
    fake.write_bytes(b"\0" * 1_000_000)
    for ip in p.images.values():
        cat.publish(fake, new_manifest(key=ip.key, name=ip.name, definition=ip.definition, inputs=ip.inputs,
                                       parent_key=None, sif=fake, apptainer_version="bench"))
    images.ensure(p, s, jobs=1)  # first use: hashes every SIF once and caches the result
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        images.ensure(p, s, jobs=1)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    plan.build(spec.load(wf))
    t_plan = time.perf_counter() - t0
    print(f"resolve {n} cached images: best {min(times) * 1000:.1f} ms, median "
          f"{sorted(times)[2] * 1000:.1f} ms (target < 100 ms); planning them: {t_plan * 1000:.1f} ms")


def bench_parallel(tmp: Path, k: int) -> None:
    if not shutil.which("apptainer"):
        print("parallel builds: skipped (no apptainer)")
        return
    wf = workflow(tmp / "wfp", k, "sleep 1")
    p = plan.build(spec.load(wf))
    results = {}
    for jobs in (1, k):
        run = tmp / f"jobs{jobs}"
        t0 = time.perf_counter()
        images.ensure(p, settings(run), jobs=jobs)
        results[jobs] = time.perf_counter() - t0
        print(f"build {k} independent images with --jobs {jobs}: {results[jobs]:.2f} s")
    print(f"parallel speed-up: {results[1] / results[k]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--builds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-") as tmp:
        bench_resolve(Path(tmp), args.images)
        bench_parallel(Path(tmp), args.builds)


if __name__ == "__main__":
    main()
