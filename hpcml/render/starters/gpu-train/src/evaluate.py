"""Read every training task's metrics ({in.train}/*/metrics.json); write the best to
OUT/summary.json."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--runs", required=True, help="the train step's outputs ({in.train})")
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

runs = [json.loads(p.read_text()) for p in sorted(Path(args.runs).glob("*/metrics.json"))]
best = min(runs, key=lambda r: r["mse"])
Path(args.out, "summary.json").write_text(json.dumps({"runs": runs, "best": best}, indent=2))
print(f"best of {len(runs)} runs: lr={best['lr']} seed={best['seed']} mse={best['mse']:.4f}")
