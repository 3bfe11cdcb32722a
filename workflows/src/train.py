"""Train logistic regression by gradient descent, resumable from a checkpoint in --out.

Every epoch writes `checkpoint.npz` atomically, and SIGTERM/SIGUSR2 write one at once, so a
job that is requeued (time limit, preemption) continues where it stopped. `metrics.json`
marks a finished run; running again after that does nothing.

Set HPCML_EXAMPLE_EPOCH_SECONDS (or --epoch-seconds) to make each epoch sleep, so tests can
make a run outlast a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from types import FrameType

import numpy as np


def save_checkpoint(out: str, w: np.ndarray, epoch: int, history: list[float]) -> None:
    tmp = os.path.join(out, "checkpoint.tmp.npz")
    np.savez(tmp, w=w, epoch=epoch, history=np.asarray(history))
    os.replace(tmp, os.path.join(out, "checkpoint.npz"))


def load_checkpoint(out: str, features: int) -> tuple[np.ndarray, int, list[float]]:
    path = os.path.join(out, "checkpoint.npz")
    if not os.path.exists(path):
        return np.zeros(features), 0, []
    with np.load(path) as ck:
        print(f"resuming from epoch {int(ck['epoch'])}", flush=True)
        return ck["w"], int(ck["epoch"]), list(ck["history"])


def loss_and_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    eps = 1e-12
    loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    return loss, x.T @ (p - y) / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="directory written by prepare.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--epoch-seconds", type=float, default=float(os.environ.get("HPCML_EXAMPLE_EPOCH_SECONDS", "0")))
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    if os.path.exists(os.path.join(args.out, "metrics.json")):
        print("already finished", flush=True)
        return
    with np.load(os.path.join(args.data, "data.npz")) as d:
        x, y = d["x_train"], d["y_train"]
    w, start, history = load_checkpoint(args.out, x.shape[1])
    state = {"w": w, "epoch": start}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        save_checkpoint(args.out, state["w"], state["epoch"], history)
        print(f"signal {signum}: checkpoint at epoch {state['epoch']}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)

    for epoch in range(start, args.epochs):
        # Mini-batch order depends on (seed, epoch) only, so a resumed run equals an uninterrupted one.
        order = np.random.default_rng([args.seed, epoch]).permutation(len(y))
        for batch in np.array_split(order, 10):
            _, grad = loss_and_grad(state["w"], x[batch], y[batch])
            state["w"] = state["w"] - args.lr * grad
        loss, _ = loss_and_grad(state["w"], x, y)
        history.append(loss)
        state["epoch"] = epoch + 1
        save_checkpoint(args.out, state["w"], state["epoch"], history)
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.4f}", flush=True)
        if args.epoch_seconds:
            time.sleep(args.epoch_seconds)

    np.save(os.path.join(args.out, "model.npy"), state["w"])
    metrics = {"lr": args.lr, "seed": args.seed, "epochs": args.epochs, "train_loss": history[-1]}
    tmp = os.path.join(args.out, "metrics.tmp.json")
    with open(tmp, "w") as fh:
        json.dump(metrics, fh)
    os.replace(tmp, os.path.join(args.out, "metrics.json"))
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()
