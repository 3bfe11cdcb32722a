"""Multi-process steps under the local executor (docs/distributed.md): a one-node per-GPU
step runs one local process per GPU with the same rank environment as under SLURM; a
multi-node step is refused before anything runs. Real Apptainer, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_run_local import hpcml, hpcml_env, workflow  # noqa: F401 - fixture

pytestmark = pytest.mark.testbed

PER_GPU = """\
ranks:
  resources: {gpus: 2, launch: per_gpu}
  env: {NCCL_DEBUG: INFO}
  run: |
    echo "rank $RANK of $WORLD_SIZE local $LOCAL_RANK/$LOCAL_WORLD_SIZE node $NODE_RANK devices $CUDA_VISIBLE_DEVICES master $MASTER_ADDR:$MASTER_PORT nccl $NCCL_DEBUG cmd {nodes}x{gpus_per_node}" > {out}/rank-$RANK
    echo "hello from $RANK"
boom:
  resources: {gpus: 2, launch: per_gpu}
  run: |
    if [ "$RANK" = 0 ]; then exit 5; fi
    sleep 300
    echo finished > {out}/finished-$RANK
"""


def test_per_gpu_step_runs_one_local_process_per_gpu(tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]) -> None:  # noqa: F811
    wf = workflow(tmp_path / "w", busybox_sif, "localranks", PER_GPU)
    done = hpcml("run", str(wf), "--executor", "local", env=hpcml_env, check=False, timeout=300)
    assert done.returncode != 0  # boom fails
    tasks = wf.parent / ".hpcml" / "tasks"
    (ranks_dir,) = (tasks / "ranks").iterdir()
    lines = {p.name: p.read_text().split() for p in (ranks_dir / "out").glob("rank-*")}
    assert sorted(lines) == ["rank-0", "rank-1"], (ranks_dir / "log").read_text()
    texts = {name: " ".join(words) for name, words in lines.items()}
    ports = set()
    for rank in (0, 1):
        text = texts[f"rank-{rank}"]
        assert text.startswith(f"rank {rank} of 2 local {rank}/2 node 0 devices {rank} master 127.0.0.1:"), text
        assert text.endswith("nccl INFO cmd 1x2")
        ports.add(text.split("master ")[1].split()[0])
    assert len(ports) == 1
    log = (ranks_dir / "log").read_text()
    assert "0: hello from 0" in log and "1: hello from 1" in log

    (boom_dir,) = (tasks / "boom").iterdir()
    assert (boom_dir / "exitcode").read_text().strip() == "5"
    assert not list((boom_dir / "out").glob("finished-*"))  # rank 1 was ended, not left to finish
    boom_log = (boom_dir / "log").read_text()
    assert "rank 0 exited with 5; ending the other ranks" in boom_log
    assert "hpcml: rank 0 failed first, with exit status 5" in boom_log


def test_multi_node_step_is_refused_locally_before_anything_runs(
    tmp_path: Path, busybox_sif: Path, hpcml_env: dict[str, str]  # noqa: F811
) -> None:
    wf = workflow(tmp_path / "w", busybox_sif, "localnodes", "big:\n  resources: {nodes: 2}\n  run: echo x > {out}/ran\n")
    done = hpcml("run", str(wf), "--executor", "local", env=hpcml_env, check=False)
    assert done.returncode != 0
    assert "step big: asks for 2 nodes (launch: per_node); the local executor runs on this one machine only" in done.stderr
    assert not (wf.parent / ".hpcml" / "tasks").exists() or not list((wf.parent / ".hpcml" / "tasks").rglob("ran"))
