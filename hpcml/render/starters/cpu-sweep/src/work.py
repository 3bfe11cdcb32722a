"""One point of the sweep: read the data of `prepare` ({in.prepare}), fit y = a*x + b with
gradient steps of size 0.1*scale, write the fit and its error to OUT/result.json."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True, help="the prepare step's output ({in.prepare})")
parser.add_argument("--scale", type=float, required=True)
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

points = json.loads(Path(args.data, "data.json").read_text())
a = b = 0.0
step = 0.1 * args.scale
for _ in range(200):
    ga = sum((a * x + b - y) * x for x, y in points) * 2 / len(points)
    gb = sum((a * x + b - y) for x, y in points) * 2 / len(points)
    a, b = a - step * ga, b - step * gb
mse = sum((a * x + b - y) ** 2 for x, y in points) / len(points)
result = {"scale": args.scale, "a": a, "b": b, "mse": mse}
Path(args.out, "result.json").write_text(json.dumps(result))
print(json.dumps(result))
