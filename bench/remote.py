"""Benchmark: `hpcml --remote` against the testbed's sshd on loopback (real SLURM behind it).

Prints, for a workflow directory of 200 small source files, one 4 MB data file and the
busybox binary: the first sync, an unchanged sync and a one-file-changed sync (seconds,
files and content bytes sent), then the round trip of `hpcml -r bench status` as a whole
laptop process, split into connecting and one polling round over an open connection.
Figures only: nothing is asserted. Needs `slurm/testbed/up` (sshd, slurm, apptainer).

    .venv/bin/python bench/remote.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpcml.remote.session import Session
from hpcml.remote.settings import Remote

REPO = Path(__file__).resolve().parents[1]
HPCML = Path(sys.executable).with_name("hpcml")
WORKFLOW = """\
hpcml: 1
name: remote-bench
images:
  bb:
    from: scratch
    shell: sh
    files: {busybox: /bin/sh}
    post: /bin/sh --install -s /bin
defaults: {image: bb, resources: {time: 5m, cpus: 1, mem: 100M}}
steps:
  one:
    run: echo done > {out}/x
"""


def testbed() -> dict:
    out = subprocess.run([str(REPO / "slurm/testbed/status"), "--json"], capture_output=True, text=True, check=False)
    info = json.loads(out.stdout)
    if not info.get("all_up"):
        sys.exit("the testbed is not up: run slurm/testbed/up")
    return info


def setup(root: Path, info: dict) -> tuple[Remote, Path, dict[str, str]]:
    sshd, app = info["sshd"], info["apptainer"]
    home, wf = root / "home", root / "laptop" / "wf"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "hpcml").mkdir(parents=True)
    shutil.copy(sshd["known_hosts"], home / ".ssh" / "known_hosts")
    env = {
        "HPCML_CACHE_DIR": str(root / "cache"), "HPCML_BUILD_FLAGS": " ".join(app["build_flags"]),
        "HPCML_EXEC_FLAGS": " ".join(app["exec_flags"]), "HPCML_APPTAINER": app["binary"],
        "HPCML_SITE_CONFIG": "/nonexistent", "HPCML_CONFIG": "/nonexistent",
    }
    remote = Remote(
        "bench", sshd["host"], user=sshd["user"], port=int(sshd["port"]), identity_file=sshd["key"],
        work_root=str(root / "cluster"), hpcml=str(HPCML), catalogs=(str(root / "catalog"),), executor="slurm", env=env,
    )
    lines = [f"[remotes.bench]\nhost = {json.dumps(remote.host)}\nuser = {json.dumps(remote.user)}\n"
             f"port = {remote.port}\nidentity_file = {json.dumps(remote.identity_file)}\n"
             f"work_root = {json.dumps(remote.work_root)}\nhpcml = {json.dumps(remote.hpcml)}\n"
             f"catalogs = {json.dumps(list(remote.catalogs))}\nexecutor = \"slurm\"\n[remotes.bench.env]\n"]
    lines += [f"{k} = {json.dumps(v)}\n" for k, v in env.items()]
    (home / ".config" / "hpcml" / "config.toml").write_text("".join(lines))
    (wf / "src").mkdir(parents=True)
    for i in range(200):
        (wf / "src" / f"mod{i:03d}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 200)
    (wf / "data.bin").write_bytes(os.urandom(4 << 20))
    shutil.copy(shutil.which("busybox") or "/bin/busybox", wf / "busybox")
    (wf / "workflow.yaml").write_text(WORKFLOW)
    laptop_env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCML_", "SSH_AUTH_SOCK"))}
    laptop_env |= {"HOME": str(home), "HPCML_SITE_CONFIG": "/nonexistent", "XDG_CONFIG_HOME": str(home / ".config")}
    return remote, wf, laptop_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    info = testbed()
    with tempfile.TemporaryDirectory(prefix="hpcml-remote-bench-") as tmp:
        root = Path(tmp)
        remote, wf, laptop_env = setup(root, info)
        session = Session(remote, root / "home")
        t0 = time.perf_counter()
        session.open()
        connect_s = time.perf_counter() - t0
        first = session.sync(wf)
        print(f"directory: {len(first.sent)} files, {first.bytes_sent / 1e6:.1f} MB")
        print(f"first sync:        {first.seconds:6.3f} s  {len(first.sent):4d} files  {first.bytes_sent:9d} bytes sent")
        same = [session.sync(wf) for _ in range(runs)]
        print(f"unchanged sync:    {statistics.median(r.seconds for r in same):6.3f} s  "
              f"{max(len(r.sent) for r in same):4d} files  {max(r.bytes_sent for r in same):9d} bytes sent (median of {runs})")
        changed = []
        for i in range(runs):
            (wf / "src" / "mod007.py").write_text(f"VALUE = {i}  # edited\n")
            changed.append(session.sync(wf))
        print(f"one file changed:  {statistics.median(r.seconds for r in changed):6.3f} s  "
              f"{max(len(r.sent) for r in changed):4d} files  {max(r.bytes_sent for r in changed):9d} bytes sent (median of {runs})")

        r = subprocess.run([str(HPCML), "-r", "bench", "run", "workflow.yaml", "--watch"], cwd=wf, env=laptop_env,
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            sys.exit(f"the bench's run failed:\n{r.stdout}{r.stderr}")
        where = ["--workflow", f"{session.remote_dir(wf)}/workflow.yaml"]
        rounds = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.status(where)
            rounds.append(time.perf_counter() - t0)
        whole = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([str(HPCML), "-r", "bench", "status"], cwd=wf, env=laptop_env, capture_output=True, check=False)
            whole.append(time.perf_counter() - t0)
        session.close()
        print(f"connect (key exchange + auth):       {connect_s:6.3f} s")
        print(f"one polling round, open connection:  {statistics.median(rounds):6.3f} s  (remote `hpcml status --json`: one squeue)")
        print(f"`hpcml -r bench status`, whole process: {statistics.median(whole):6.3f} s  (median of {runs})")


if __name__ == "__main__":
    main()
