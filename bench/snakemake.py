"""Benchmark: what the hpcml helpers add to loading a Snakefile.

    .venv/bin/python bench/snakemake.py [--rules 50] [--images 5] [--repeat 5]

1. `snakemake -n` (a real subprocess) on a Snakefile of R rules, each with
   `container: image(...)` and `resources: **resources(...)`, against the same Snakefile
   with the SIF paths and resources written out: the median of each and the difference.
   Target: the helpers add under 1 s.
2. In one process: the first `image()` of a workflow (parse + catalog lookup + integrity
   stamp), then a cached one.
The catalog holds fake 1 MB SIFs (resolving treats a SIF as bytes and a dry run starts no
container), so neither apptainer nor a build is needed. Prints figures; asserts nothing.
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

from hpcml import api
from hpcml.images.catalog import Catalog
from hpcml.images.manifest import new_manifest

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def setup(tmp: Path, rules: int, images: int) -> dict[str, str]:
    """Workflow, catalog with every image, and the two Snakefiles; returns the environment."""
    env = {**os.environ, "HPCML_CATALOGS": str(tmp / "cat"), "HPCML_CACHE_DIR": str(tmp / "cache"),
           "HPCML_CONFIG": "/nonexistent", "HPCML_SITE_CONFIG": "/nonexistent"}
    lines = ["hpcml: 1", "name: bench", "images:"]
    lines += [f"  img{i}:\n    from: scratch\n    shell: sh\n    post: echo {i} > /id" for i in range(images)]
    lines += ["steps:", "  s:", "    image: img0", "    run: cat /id",
              "    resources: {partition: gpu, gpus: 1, cpus_per_gpu: 2, mem: 4G, time: 1h}"]
    (tmp / "workflow.yaml").write_text("\n".join(lines) + "\n")
    settings = api.load_settings({"catalogs": [str(tmp / "cat")], "cache_dir": str(tmp / "cache")})
    plan = api.plan(tmp / "workflow.yaml")
    fake = tmp / "fake.sif"
    fake.write_bytes(b"\0" * 1_000_000)
    cat = Catalog(tmp / "cat")
    for ip in plan.images.values():
        cat.publish(fake, new_manifest(key=ip.key, name=ip.name, definition=ip.definition, inputs=ip.inputs,
                                       parent_key=None, sif=fake, apptainer_version="bench"))
    sifs = {name: api.image_sif(name, workflow=tmp / "workflow.yaml", build=False, settings=settings)
            for name in plan.images}  # first use: hashes each SIF once, as a first real run would
    res = api.step_resources("s", workflow=tmp / "workflow.yaml", settings=settings)
    helpers = ["from hpcml.snakemake import image, resources", 'WF = "workflow.yaml"',
               "rule all:", f"    input: [f'out/{{i}}' for i in range({rules})]"]
    plain = ["rule all:", f"    input: [f'out/{{i}}' for i in range({rules})]"]
    for i in range(rules):
        helpers += [f"rule r{i}:", f"    output: 'out/{i}'", f"    container: image('img{i % images}', workflow=WF)",
                    "    resources: **resources('s', workflow=WF)", "    shell: 'cat /id > {output}'"]
        plain += [f"rule r{i}:", f"    output: 'out/{i}'", f"    container: {sifs[f'img{i % images}']!r}",
                  f"    resources: **{res!r}", "    shell: 'cat /id > {output}'"]
    (tmp / "helpers.smk").write_text("\n".join(helpers) + "\n")
    (tmp / "plain.smk").write_text("\n".join(plain) + "\n")
    return env


def dry_run(tmp: Path, snakefile: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([SNAKEMAKE, "-n", "-s", snakefile, "--sdm", "apptainer"], check=False, cwd=tmp, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"snakemake -n -s {snakefile} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def in_process(tmp: Path, env: dict[str, str]) -> None:
    code = ("import time; t0 = time.perf_counter(); from hpcml.snakemake import image; t1 = time.perf_counter(); "
            "image('img0', workflow='workflow.yaml'); t2 = time.perf_counter(); "
            "image('img0', workflow='workflow.yaml'); t3 = time.perf_counter(); "
            "image('img1', workflow='workflow.yaml'); t4 = time.perf_counter(); "
            "print(f'{(t1-t0)*1e3:.1f} {(t2-t1)*1e3:.1f} {(t3-t2)*1e3:.3f} {(t4-t3)*1e3:.1f}')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, check=True)
    imp, first, cached, other = out.stdout.split()
    print(f"import hpcml.snakemake: {imp} ms; first image() (parse + lookup + check): {first} ms; "
          f"same image again: {cached} ms; another image of the same workflow: {other} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcml-bench-smk-") as d:
        tmp = Path(d)
        env = setup(tmp, args.rules, args.images)
        dry_run(tmp, "plain.smk", env)  # warm the page cache and Snakemake's own caches
        plain = statistics.median(dry_run(tmp, "plain.smk", env) for _ in range(args.repeat))
        helpers = statistics.median(dry_run(tmp, "helpers.smk", env) for _ in range(args.repeat))
        print(f"snakemake -n, {args.rules} rules over {args.images} images (median of {args.repeat}):")
        print(f"  SIF paths written out: {plain:.2f} s")
        print(f"  image() + resources(): {helpers:.2f} s  (+{helpers - plain:.2f} s; target < 1 s)")
        in_process(tmp, env)


if __name__ == "__main__":
    main()
