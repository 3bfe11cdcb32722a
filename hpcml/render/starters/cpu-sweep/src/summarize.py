"""Read every sweep task's result ({in.sweep}/*/result.json) and write the best to
OUT/summary.json."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--runs", required=True, help="the sweep step's outputs ({in.sweep})")
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

results = [json.loads(p.read_text()) for p in sorted(Path(args.runs).glob("*/result.json"))]
best = min(results, key=lambda r: r["mse"])
Path(args.out, "summary.json").write_text(json.dumps({"runs": results, "best": best}, indent=2))
print(f"best of {len(results)} runs: scale={best['scale']} mse={best['mse']:.4f}")
