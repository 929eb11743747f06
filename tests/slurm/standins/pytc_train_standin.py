"""A stand-in for ``pytc-train`` in pytc-launch's Slurm tests (until the real one lands).

Honours the contract pytc-launch relies on: ``--config C --run-dir D --resume auto``;
resumes from ``D/checkpoints/last.ckpt`` (Lightning layout: ``global_step`` and a
ModelCheckpoint callback state with ``best_model_score``); SIGUSR1/SIGTERM save
``last.ckpt`` and exit with code 75 (as pytc-train); prints the best checkpoint path at the end. Each step
sleeps ``$STANDIN_STEP_SECONDS`` (default 0.01); a ``data.raw`` file that does not exist is an
error (exit 2); the "validation F1" is a fixed function of the config.
Every start and stop is appended to ``D/standin.log`` (``start step=N``, ``signal step=N``).
"""

import argparse
import os
import signal
import sys
import time
import tomllib
from pathlib import Path

import torch

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
p.add_argument("--run-dir", required=True)
p.add_argument("--resume", default=None)
p.add_argument("--devices", default=None)
a = p.parse_args()
cfg = tomllib.loads(Path(a.config).read_text())
need = cfg.get("data", {}).get("raw")
if need and not Path(need.split(":")[0]).exists():
    sys.stderr.write(f"pytc-train: error: data not found: {need} (check the path)\n")
    sys.exit(2)
max_steps = int(cfg.get("train", {}).get("max_steps", 20))
step_seconds = float(os.environ.get("STANDIN_STEP_SECONDS", "0.01"))
kernel = cfg.get("model", {}).get("mednext_kernel_size", 3)
lr = float(cfg.get("optim", {}).get("lr", 1e-3))
f1 = round(0.5 + 0.05 * kernel - abs(lr - 1e-3) * 10, 6)

run = Path(a.run_dir)
ckpts = run / "checkpoints"
ckpts.mkdir(parents=True, exist_ok=True)
last, best = ckpts / "last.ckpt", ckpts / "best.ckpt"
key = "ModelCheckpoint{'monitor': 'val/f1', 'mode': 'max', 'every_n_train_steps': 0}"


def save(path, step):
    state = {"monitor": "val/f1", "best_model_score": torch.tensor(f1),
             "best_model_path": str(best)}
    tmp = path.with_suffix(".tmp")
    torch.save({"global_step": step, "epoch": 0, "callbacks": {key: state}}, tmp)
    tmp.replace(path)


step = 0
if a.resume == "auto" and last.is_file():
    step = int(torch.load(last, weights_only=True)["global_step"])
with open(run / "standin.log", "a") as fh:
    fh.write(f"start step={step}\n")
stop = []
signal.signal(signal.SIGUSR1, lambda *_: stop.append("USR1"))
signal.signal(signal.SIGTERM, lambda *_: stop.append("TERM"))
while step < max_steps:
    if stop:
        save(last, step)
        with open(run / "standin.log", "a") as fh:
            fh.write(f"signal {stop[0]} step={step}\n")
        sys.exit(75)
    time.sleep(step_seconds)
    step += 1
    if step % 10 == 0:
        save(last, step)
save(last, step)
save(best, step)
with open(run / "standin.log", "a") as fh:
    fh.write(f"done step={step}\n")
print(best)
