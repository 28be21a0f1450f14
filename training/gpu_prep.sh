#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored via .git/info/exclude) for a lent GPU: see training/GPU.md.
# Usage: bash training/gpu_prep.sh [RUN ...]   (default: training/lpimg-j1a training/lpimg-j1b)
# Several runs of one architecture start the next lease from their average (as `lpimg release`
# averages them for the shipped weights, but in float32); the objective is the first run's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- training/lpimg-j1a training/lpimg-j1b
mkdir -p .gpu .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
[ -d .gpu/data ] || { cp -r ../shared/data/train .gpu/data && chmod -R u+w .gpu/data; }
.venv/bin/python - "$@" <<'PY'
import sys
from pathlib import Path
import torch
from lpimg.codec.release import average_trained_models
from lpimg.codec.train import load_checkpoint
runs = sys.argv[1:]
config = load_checkpoint(Path(runs[0]))["train_config"]
state = average_trained_models(runs).state_dict()  # one run: its own weights
# weights only (no Adam moments), with the architecture, so init_from rebuilds nothing wrong
torch.save({"model": state, "train_config": config}, ".gpu/init-model.pt")
print(f".gpu/init-model.pt: the mean of {', '.join(runs)}")
PY
# the wheels the machine's python lacks (training needs pytorch-msssim; the tests constriction)
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    pytorch-msssim==1.0.0 constriction==0.5.0 -d .gpu
cp training/gpu_drive.py .gpu/drive.py
cat > .gpu/run.sh <<'SH'
# Two runs side by side on the one GPU (synthesis-only unless JOINT=1), each measuring the rate it gets (lpimg-h1
# and h2: 23 iterations a second each at batch 32 with 4,4,2 blocks on an H200, 46 together), e.g.
#   TRAIN_SECONDS=470 LR=6e-5 A="SEED=5" B="SEED=6 FLOOR=16" bash .gpu/run.sh
set -e
python3 -m pip install --no-deps -q --break-system-packages .gpu/*.whl 2>&1 | tail -1 || true
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
export PYTHONUNBUFFERED=1
env RUN=/tmp/run-a ${A:-} python3 .gpu/drive.py > "$OUT/run-a.out" 2>&1 &
env RUN=/tmp/run-b ${B:-} python3 .gpu/drive.py > "$OUT/run-b.out" 2>&1 &
wait
grep -h -v -e Warning -e new_tensor "$OUT"/*.out
SH
du -sh .gpu
echo "now take training/ and the shipped weights out of what travels (undo after the lease):"
echo "  git rm -r -q --cached training lpimg/codec/weights/*.pt"
echo "  printf '/training/\\n/lpimg/codec/weights/*.pt\\n' >> .git/info/exclude"
