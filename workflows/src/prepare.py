"""Make a synthetic binary-classification data set (train/test split) in --out.

Stands in for a real download + preprocessing step; deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    true_w = rng.normal(size=args.features)
    x = rng.normal(size=(args.samples, args.features))
    y = (x @ true_w + rng.normal(scale=0.5, size=args.samples) > 0).astype(np.float64)
    split = int(0.8 * args.samples)

    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "data.tmp.npz")
    np.savez(tmp, x_train=x[:split], y_train=y[:split], x_test=x[split:], y_test=y[split:])
    os.replace(tmp, os.path.join(args.out, "data.npz"))  # readers never see half a file
    with open(os.path.join(args.out, "meta.json"), "w") as fh:
        json.dump({"samples": args.samples, "features": args.features, "seed": args.seed}, fh)
    print(f"prepared {args.samples} samples with {args.features} features in {args.out}")


if __name__ == "__main__":
    main()
