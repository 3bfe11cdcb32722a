"""Make a small data set: `samples` noisy points of y = sin(3x), saved as OUT/data.pt."""

import argparse
from pathlib import Path

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--samples", type=int, default=4096)
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

gen = torch.Generator().manual_seed(0)
x = torch.rand(args.samples, 1, generator=gen) * 2 - 1
y = torch.sin(3 * x) + 0.05 * torch.randn(args.samples, 1, generator=gen)
torch.save({"x": x, "y": y}, Path(args.out, "data.pt"))
print(f"wrote {args.samples} samples to {args.out}/data.pt")
