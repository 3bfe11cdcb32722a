"""Multi-node steps on the real SLURM testbed (issue 16; docs/distributed.md).

The testbed's partition `multi` has two nodes (hpcml-n1, hpcml-n2: each its own slurmd on
this machine, two fake GPUs each). One workflow run carries every case, so that they
share the requeue wait (~160 s) of the checkpointing step:

- `ddp`: 2 nodes × 2 GPUs, one process per GPU: 4 ranks on 2 distinct nodes, each seeing
  exactly one GPU, with consistent rendezvous variables; they sum their ranks with an
  all-reduce over TCP at MASTER_ADDR:MASTER_PORT (allreduce.py below, plain sockets:
  no torch in the image);
- `torchddp`: the same shape with real `torch.distributed` (gloo, a CPU build of torch
  bound into the container: installed once into the testbed's cache from the wheel
  `pip install torch==2.13.0` finds), an all_reduce through the env:// rendezvous;
- `launcher`: one process per node, {nodes}/{gpus_per_node} substituted;
- `boom`: rank 1 exits 3: the task fails with 3, the other ranks end, the allocation is
  released, and `after_boom` is cancelled;
- `ckpt`: a 2-node checkpointing step hit by its time limit: every rank gets the signal,
  saves its own checkpoint, and the requeued job resumes every rank from its own.

The image is the Debian + python3 base of workflows/sweep.yaml, kept in the testbed's
shared catalog (built once, a few minutes, by whichever test needs it first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcml import api, config
from test_run_slurm import outs, settings_env
from test_run_slurm_sweep import SHARED_CATALOG
import testbed

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

ALLREDUCE = '''\
"""One rank of a sum all-reduce over TCP: rank 0 listens at MASTER_ADDR:MASTER_PORT, the
others connect, send their value and read the sum back."""
import os
import socket
import sys
import time

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
value = rank + 1
if rank == 0:
    server = socket.create_server(("", port))
    peers, total = [], value
    while len(peers) < world - 1:
        conn, _ = server.accept()
        total += int(conn.makefile().readline())
        peers.append(conn)
    for conn in peers:
        conn.sendall(f"{total}\\n".encode())
        conn.close()
else:
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.sendall(f"{value}\\n".encode())
    total = int(conn.makefile().readline())
names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
         "CUDA_VISIBLE_DEVICES", "HPCML_NODE", "NCCL_DEBUG", "UCX_TLS")
with open(os.path.join(sys.argv[1], f"rank-{rank}"), "w") as f:
    f.write(" ".join(f"{n}={os.environ.get(n, '-')}" for n in names) + f" SUM={total}\\n")
print(f"rank {rank} of {world}: sum {total}")
'''

TORCH_DDP = '''\
"""A torch.distributed rank: env:// rendezvous (MASTER_ADDR/PORT, RANK, WORLD_SIZE), gloo."""
import os
import sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
rank, world = dist.get_rank(), dist.get_world_size()
with open(os.path.join(sys.argv[1], f"torch-{rank}"), "w") as f:
    f.write(f"RANK={rank} WORLD={world} SUM={t.item():g} ENV_RANK={os.environ['RANK']}\\n")
print(f"torch rank {rank} of {world}: sum {t.item():g}")
dist.destroy_process_group()
'''

TORCH_VERSION = "2.13.0"
TORCH_CACHE = Path(f"/var/cache/hpcml-testbed/torch-{TORCH_VERSION}")

WORKFLOW = """\
hpcml: 1
name: dist
images:
  base:
    from: debootstrap:bookworm
    mirror: http://deb.debian.org/debian
    apt: [python3-minimal, python3-numpy]
    labels: {org.hpcml.example: sweep}
defaults:
  image: base
  resources: {partition: multi, time: 5m, cpus: 1, mem: 200M}
steps:
  ddp:
    resources: {nodes: 2, gpus: 2, launch: per_gpu}
    env: {NCCL_DEBUG: INFO, UCX_TLS: tcp}
    run: python3 allreduce.py {out}
  torchddp:
    resources: {nodes: 2, gpus: 2, launch: per_gpu, mem: 2G}
    env: {PYTHONPATH: /opt/torch}
    run: python3 torch_ddp.py {out}
  launcher:
    resources: {nodes: 2, gpus: 2, launch: per_node}
    run: >-
      echo "node $HPCML_NODE rank $RANK of $WORLD_SIZE node_rank $NODE_RANK local ${LOCAL_RANK:-unset}/${LOCAL_WORLD_SIZE:-unset}
      devices $CUDA_VISIBLE_DEVICES: launch --nnodes {nodes} --nproc-per-node {gpus_per_node}" > {out}/proc-$RANK
  boom:
    resources: {nodes: 2, gpus: 2, launch: per_gpu}
    run: |
      echo started > {out}/started-$RANK
      if [ "$RANK" = 1 ]; then
        # every rank runs before this one fails (else SLURM may end one before its first line)
        n=0; while [ "$(ls {out} | grep -c '^started-')" -lt 4 ] && [ $n -lt 600 ]; do n=$((n+1)); sleep 0.1; done
        echo "rank 1 fails"; exit 3
      fi
      sleep 300
      echo finished > {out}/finished-$RANK
  after_boom:
    needs: [boom]
    run: echo x > {out}/ran
  ckpt:
    resources: {nodes: 2, time: 2m}  # the signal 60-90 s in (see test_run_slurm_limits.CHECKPOINTED)
    retries: 2
    checkpoint: {signal: USR2, grace: 30}
    run: |
      if [ -f {out}/n-$RANK ]; then
        echo "rank $RANK resuming at $(cat {out}/n-$RANK)"
        echo x >> {out}/ran-$RANK
        exit 0
      fi
      n=0
      trap 'echo $n > {out}/n-$RANK; echo "rank $RANK checkpoint at $n"; exit 99' USR2
      while [ $n -lt 300 ]; do n=$((n+1)); sleep 1 & wait $!; done
"""


def records(out: Path, prefix: str) -> dict[int, dict[str, str]]:
    """{rank: {NAME: value}} from the `prefix-RANK` files the ranks wrote."""
    found = {}
    for path in sorted(out.glob(f"{prefix}-*")):
        words = path.read_text().split()
        found[int(path.name.rsplit("-", 1)[1])] = dict(w.split("=", 1) for w in words if "=" in w)
    return found


def cpu_torch() -> Path:
    """A directory holding torch (CPU build) and its dependencies, for PYTHONPATH: installed
    once into the testbed's cache (about a minute), atomically (a temporary sibling, then
    rename), with the host's pip, which finds the wheel where this machine keeps it."""
    if (TORCH_CACHE / "torch" / "__init__.py").exists():
        return TORCH_CACHE
    work = TORCH_CACHE.with_name(f"{TORCH_CACHE.name}.tmp-{os.getpid()}")
    done = testbed.run_quietly(
        ["python3", "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(work), f"torch=={TORCH_VERSION}"],
        timeout=900,
    )
    if not done.ok:
        shutil.rmtree(work, ignore_errors=True)
        testbed.testbed_unavailable(f"a CPU build of torch {TORCH_VERSION} could not be installed: {done.tail()}")
    try:
        work.rename(TORCH_CACHE)
    except OSError:  # another session installed it first
        shutil.rmtree(work, ignore_errors=True)
    return TORCH_CACHE


@pytest.fixture(scope="module")
def dist_run(tmp_path_factory: pytest.TempPathFactory, apptainer, slurm_cluster):  # noqa: ANN001, ANN201
    """The one run of every case: (workflow path, outcome, {step: task status})."""
    root = tmp_path_factory.mktemp("dist")
    SHARED_CATALOG.mkdir(parents=True, exist_ok=True)
    env = settings_env(apptainer, SHARED_CATALOG)
    env["HPCML_EXEC_FLAGS"] += f" --bind {cpu_torch()}:/opt/torch:ro"
    settings = config.load(env={"HOME": str(root), **env})
    (root / "allreduce.py").write_text(ALLREDUCE)
    (root / "torch_ddp.py").write_text(TORCH_DDP)
    wf = root / "workflow.yaml"
    wf.write_text(WORKFLOW)
    outcome = api.run(wf, executor="slurm", settings=settings, poll_s=2)
    assert outcome.status is not None
    return wf, outcome, {t.step: t for t in outcome.status.tasks}


def test_per_gpu_ranks_on_two_nodes_all_reduce_over_tcp(dist_run) -> None:  # noqa: ANN001
    wf, _, tasks = dist_run
    assert tasks["ddp"].state == "completed", tasks["ddp"]
    out = outs(wf, "ddp")[0]
    ranks = records(out, "rank")
    assert sorted(ranks) == [0, 1, 2, 3], (out.parent / "log").read_text()
    assert {r["SUM"] for r in ranks.values()} == {"10"}  # 1 + 2 + 3 + 4, over TCP
    assert len({r["HPCML_NODE"] for r in ranks.values()}) == 2
    # every rank sees exactly one GPU, and no two ranks of a node share one
    assert all("," not in r["CUDA_VISIBLE_DEVICES"] and r["CUDA_VISIBLE_DEVICES"] != "-" for r in ranks.values())
    assert len({(r["HPCML_NODE"], r["CUDA_VISIBLE_DEVICES"]) for r in ranks.values()}) == 4
    for rank, r in ranks.items():
        assert r["RANK"] == str(rank) and r["WORLD_SIZE"] == "4" and r["LOCAL_WORLD_SIZE"] == "2"
        assert r["LOCAL_RANK"] == str(rank % 2) and r["NODE_RANK"] == str(rank // 2)
        assert r["NCCL_DEBUG"] == "INFO" and r["UCX_TLS"] == "tcp"  # the step's env, on every rank
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in ranks.values()}) == 1
    assert ranks[0]["MASTER_ADDR"] == ranks[0]["HPCML_NODE"]  # rank 0 runs on the first node
    log = (out.parent / "log").read_text()
    assert {f"{rank}: rank {rank} of 4: sum 10" for rank in range(4)} <= set(log.splitlines()), log


def test_per_gpu_ranks_run_torch_distributed(dist_run) -> None:  # noqa: ANN001
    wf, _, tasks = dist_run
    assert tasks["torchddp"].state == "completed", tasks["torchddp"]
    out = outs(wf, "torchddp")[0]
    ranks = records(out, "torch")
    assert sorted(ranks) == [0, 1, 2, 3], (out.parent / "log").read_text()
    for rank, r in ranks.items():
        assert r == {"RANK": str(rank), "WORLD": "4", "SUM": "10", "ENV_RANK": str(rank)}


def test_per_node_launch_starts_one_process_per_node(dist_run) -> None:  # noqa: ANN001
    wf, _, tasks = dist_run
    assert tasks["launcher"].state == "completed", tasks["launcher"]
    out = outs(wf, "launcher")[0]
    procs = {p.name: p.read_text().split() for p in out.glob("proc-*")}
    assert sorted(procs) == ["proc-0", "proc-1"]
    assert procs["proc-0"][1] != procs["proc-1"][1]  # two distinct nodes
    for rank in (0, 1):
        text = " ".join(procs[f"proc-{rank}"])
        assert f"rank {rank} of 2 node_rank {rank} local unset/unset devices 0,1:" in text
        assert text.endswith("launch --nnodes 2 --nproc-per-node 2")


def test_a_failing_rank_ends_the_others_and_cancels_downstream(dist_run, slurm_cluster) -> None:  # noqa: ANN001
    wf, outcome, tasks = dist_run
    assert not outcome.ok
    boom = tasks["boom"]
    assert boom.state == "failed" and boom.exit_code == 3, boom
    out = outs(wf, "boom")[0]
    assert sorted(p.name for p in out.glob("started-*")) == ["started-0", "started-1", "started-2", "started-3"]
    assert not list(out.glob("finished-*"))  # the other ranks were ended, not left to finish
    assert (out.parent / "exitcode").read_text().strip() == "3"
    assert "1: rank 1 fails" in (out.parent / "log").read_text()
    # the allocation is released: SLURM has the job in a final state, no rank is left running
    assert slurm_cluster.job_state(boom.job) in ("FAILED", None)
    left = subprocess.run(["pgrep", "-f", str(out.parent / "cmd.sh")], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    after = tasks["after_boom"]
    assert after.state in ("upstream_failed", "cancelled"), after
    assert not outs(wf, "after_boom") or not (outs(wf, "after_boom")[0] / "ran").exists()


def test_a_checkpointing_multi_node_step_requeues_and_resumes_every_rank(dist_run) -> None:  # noqa: ANN001
    wf, _, tasks = dist_run
    ckpt = tasks["ckpt"]
    assert ckpt.state == "completed", ckpt
    assert ckpt.attempt >= 2
    out = outs(wf, "ckpt")[0]
    log = (out.parent / "log").read_text()
    assert "scontrol requeue" in log
    for rank in (0, 1):
        saved = [int(l.split()[-1]) for l in log.splitlines() if l.startswith(f"{rank}: rank {rank} checkpoint at")]
        resumed = [int(l.split()[-1]) for l in log.splitlines() if l.startswith(f"{rank}: rank {rank} resuming at")]
        assert saved and resumed == [saved[-1]], log  # every rank got the signal and resumed from its own
        assert (out / f"ran-{rank}").read_text() == "x\n"


def test_the_step_scripts_ask_slurm_for_the_ranks(dist_run) -> None:  # noqa: ANN001
    wf, outcome, _ = dist_run
    jobs = wf.parent / ".hpcml" / "runs" / outcome.run_id / "jobs"
    ddp = (jobs / "ddp.sbatch").read_text()
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2\n" in ddp
    assert "hpcml_container=(hpcml_ranks " in ddp and " --nv " in ddp
    single = (jobs / "after_boom.sbatch").read_text()  # no rank launcher in a single-process script
    assert "hpcml_ranks() {" not in single and "hpcml_container=(hpcml_ranks" not in single
    done = subprocess.run(["bash", "-n", str(jobs / "ddp.sbatch")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
