"""Make a small data set: `samples` noisy points of y = 3x + 1, as JSON in OUT/data.json."""

import argparse
import json
import random
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--samples", type=int, default=1000)
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

rng = random.Random(0)
points = [(x, 3 * x + 1 + rng.gauss(0, 0.5)) for x in (rng.uniform(-1, 1) for _ in range(args.samples))]
Path(args.out, "data.json").write_text(json.dumps(points))
print(f"wrote {len(points)} points to {args.out}/data.json")
