"""Run on the lent GPU: a synthesis-only run (see training/GPU.md); copied to .gpu/ by gpu_prep.sh.

Environment: RUN (output run directory, on the machine's /tmp so chained calls find it), INIT
(weights to start from), LR, BLOCKS ("2,2,2": extra synthesis blocks), ITERS or MINUTES (a fixed
schedule, or one sized by a 30 s probe, which counts its own warm-up: on a warm machine prefer
ITERS from the last run's rate), MAXMIN (checkpoint and stop, a safety net), BATCH, DEV.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
from lpimg.codec.model import ModelConfig  # noqa: E402
from lpimg.codec.train import TrainConfig, pack_checkpoint, plan_iterations, train  # noqa: E402

run = os.environ.get("RUN", "/tmp/lpimg-gpu")
blocks = tuple(int(b) for b in os.environ.get("BLOCKS", "2,2,2").split(","))
dev = os.environ.get("DEV", "cuda")
cfg = TrainConfig(data=[".gpu/data"], out=run, batch=int(os.environ.get("BATCH", "32")), lmbda=100.0,
                  mse_weight=8.0, chroma_weight=12.0, clamp_latents=True, noise_mix=0.5, qat_start=0.0,
                  phase_prefixes=0.4, init_from=os.environ.get("INIT", ".gpu/init-model.pt"),
                  freeze_encoder=True, lr=float(os.environ.get("LR", "1.5e-4")), threads=4,
                  checkpoint_every=500,
                  model=ModelConfig(dec_spread=True, dec_blocks=blocks).to_dict())
t0 = time.time()
if "ITERS" in os.environ:
    cfg.iterations, rate = int(os.environ["ITERS"]), 0.0
else:
    cfg.iterations, rate = plan_iterations(cfg, minutes=float(os.environ["MINUTES"]), device=dev,
                                           probe_minutes=float(os.environ.get("PROBE", "0.5")))
print(f"planned {cfg.iterations} iterations at {rate:.2f} it/s", flush=True)
train(cfg, progress=False, device=dev, max_minutes=float(os.environ.get("MAXMIN", "8")),
      stop_at=int(os.environ["STOP"]) if "STOP" in os.environ else None)
print(f"done in {time.time() - t0:.0f} s", flush=True)
if os.environ.get("OUT"):
    dest = os.path.join(os.environ["OUT"], "run")
    pack_checkpoint(run, dest)
    print(json.dumps(sorted(os.listdir(dest))), flush=True)
