"""Train a small network on the data of `prepare` ({in.prepare}), resuming from a checkpoint.

The checkpoint is OUT/checkpoint.pt, written after every epoch (atomically: a temporary
file, then a rename). On the checkpoint signal (USR2, sent by SLURM before the time limit)
the current epoch ends, the checkpoint is saved and the program exits 1: hpcml requeues
the job and the next attempt resumes here. Exiting 0 means "finished": no requeue.
"""

import argparse
import json
import os
import signal
from pathlib import Path

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True, help="the prepare step's output ({in.prepare})")
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--out", required=True, help="this task's output directory ({out})")
args = parser.parse_args()

stop = False


def on_signal(signum: int, frame: object) -> None:
    global stop
    stop = True  # finish the epoch, save, exit 1


signal.signal(signal.SIGUSR2, on_signal)

device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(args.seed)
data = torch.load(Path(args.data, "data.pt"))
x, y = data["x"].to(device), data["y"].to(device)
model = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).to(device)
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
ckpt = Path(args.out, "checkpoint.pt")
epoch = 0
if ckpt.exists():
    state = torch.load(ckpt, map_location=device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    epoch = state["epoch"]
    print(f"resumed from epoch {epoch} (attempt {os.environ.get('HPCML_ATTEMPT', '?')})")

while epoch < args.epochs:
    for i in range(0, len(x), 256):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[i : i + 256]), y[i : i + 256])
        loss.backward()
        opt.step()
    epoch += 1
    tmp = ckpt.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, tmp)
    os.replace(tmp, ckpt)
    if stop:
        print(f"signalled: checkpoint at epoch {epoch}, exiting to be requeued")
        raise SystemExit(1)

with torch.no_grad():
    final = torch.nn.functional.mse_loss(model(x), y).item()
Path(args.out, "metrics.json").write_text(json.dumps({"lr": args.lr, "seed": args.seed, "mse": final, "device": device}))
print(f"lr={args.lr} seed={args.seed} mse={final:.4f} on {device}")
