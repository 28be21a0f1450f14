"""Run on the lent GPU: a synthesis-only run, or with JOINT=1 a whole-model one (analysis and
density trained too, as lpimg-j1 was: a new model id); see training/GPU.md. Copied to .gpu/ by
gpu_prep.sh.

The objective and architecture default to those of the run INIT came from (its saved
``train_config``), so a lease continues the last CPU run rather than an older recipe.

Environment: RUN (output run directory, on the machine's /tmp so chained calls find it), INIT
(weights to start from, default .gpu/init-model.pt), LR, BATCH, SEED, FLOOR (--step-floor), MSE
(--mse-weight), CHROMA (--chroma-weight), BLOCKS ("4,4,2"), JOINT ("1": no --freeze-encoder), DEV,
and the length, one of:
  TRAIN_SECONDS: train for about this many seconds of this process's life. The first PROBE_END
    iterations (warm-up, whose learning rates do not depend on the run's length) are run in two
    legs and the second leg's rate sizes the schedule; the checkpoint's length is then rewritten
    and the run resumed, so the decay ends inside the time. Two drivers can share one GPU: each
    measures the rate it actually gets.
  ITERS: a fixed schedule. MINUTES: sized by plan_iterations' 30 s probe (counts its warm-up).
MAXMIN checkpoints and stops, a safety net. With OUT set, the result comes back as
``$OUT/NAME.pt`` (weights, config and iteration count: enough for ``lpimg release`` and
``--init-from``; no Adam moments, so not resumable) plus NAME.log.jsonl, NAME = RUN's last part.
"""
import json
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.getcwd())
from lpimg.codec import train as train_mod  # noqa: E402
from lpimg.codec.train import TrainConfig, plan_iterations, train  # noqa: E402

T0 = time.time()
env = os.environ.get
run = env("RUN", "/tmp/lpimg-gpu")
init = env("INIT", ".gpu/init-model.pt")
dev = env("DEV", "cuda")
base = torch.load(init, map_location="cpu", weights_only=False)["train_config"]
model = dict(base["model"])
if env("BLOCKS"):
    model["dec_blocks"] = [int(b) for b in env("BLOCKS").split(",")]
# INIT's run, with this machine's paths and the overrides the environment names
cfg = replace(
    TrainConfig(**base), data=[".gpu/data"], out=run, init_from=init, freeze_encoder=env("JOINT", "0") != "1",
    batch=int(env("BATCH", "32")), lr=float(env("LR", base["lr"])),
    mse_weight=float(env("MSE", base["mse_weight"])),
    chroma_weight=float(env("CHROMA", base["chroma_weight"])),
    step_floor=float(env("FLOOR", base["step_floor"])), noise_mix=float(env("NOISE", base["noise_mix"])),
    seed=int(env("SEED", "0")), threads=int(env("THREADS", "4")), checkpoint_every=500, model=model)

# every resume reloads the training images; decode them once per process
_images: dict = {}
_load = train_mod.load_training_images
train_mod.load_training_images = lambda roots, min_side=128: _images.setdefault(
    (tuple(roots), min_side), _load(roots, min_side))

maxmin = float(env("MAXMIN", "8"))
if "TRAIN_SECONDS" in os.environ:
    deadline = T0 + float(env("TRAIN_SECONDS"))
    a, b = int(env("PROBE_START", "300")), int(env("PROBE_END", "900"))
    cfg.iterations = 10**6  # placeholder: below 1,000 the schedule is warm-up whatever the length
    ckpt = train(cfg, progress=False, device=dev, stop_at=a)
    t1 = time.time()
    train(cfg, resume=True, progress=False, device=dev, stop_at=b)
    rate = (b - a) / (time.time() - t1)
    n = b + int(rate * max(0.0, deadline - time.time()) * 0.96)
    n = max(n // cfg.checkpoint_every * cfg.checkpoint_every, 2000)
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    ck["train_config"]["iterations"] = n
    torch.save(ck, ckpt)
    print(f"{run}: {rate:.1f} it/s measured over iterations {a}-{b}; schedule {n} iterations",
          flush=True)
    train(cfg, resume=True, progress=False, device=dev, max_minutes=maxmin)
else:
    if "ITERS" in os.environ:
        cfg.iterations, rate = int(env("ITERS")), 0.0
    else:
        cfg.iterations, rate = plan_iterations(cfg, minutes=float(env("MINUTES")), device=dev,
                                               probe_minutes=float(env("PROBE", "0.5")))
    print(f"planned {cfg.iterations} iterations at {rate:.2f} it/s", flush=True)
    train(cfg, progress=False, device=dev, max_minutes=maxmin)
print(f"{run}: done in {time.time() - T0:.0f} s", flush=True)
if env("OUT"):
    ck = train_mod.load_checkpoint(train_mod.Path(run))
    name = os.path.basename(run.rstrip("/"))
    keep = {k: ck[k] for k in ("train_config", "model", "iteration")}
    keep["train_config"]["data"] = ["../shared/data/train"]
    torch.save(keep, os.path.join(env("OUT"), f"{name}.pt"))
    with open(os.path.join(run, "log.jsonl")) as src:
        log = src.read()
    with open(os.path.join(env("OUT"), f"{name}.log.jsonl"), "w") as dst:
        dst.write(log)
    lines = log.splitlines()
    print(json.dumps({"run": name, "iteration": keep["iteration"],
                      "last": lines[-1] if lines else None}), flush=True)
