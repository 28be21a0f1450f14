#!/usr/bin/env bash
# The folder on which two training runs are compared before one is shipped, so that the choice is
# not made on Kodak (evaluation only): 12 frames of the fixed camera, 75 apart (the intra codec
# never trains on them: it trains on train/ only; the reference-coding tables are fitted on frames
# 0-450, but intra streams do not use them), and every 25th BSDS500 picture of train/ (trained on,
# but by every candidate alike). Links only; nothing is copied.
# Usage: bash docs/experiments/selection_set.sh OUTDIR [DATA]   (DATA defaults to ../shared/data)
# then:  lpimg bench rd --images OUTDIR --model a.pt --versus b.pt --json
set -euo pipefail
out=${1:?usage: selection_set.sh OUTDIR [DATA]}
data=$(realpath "${2:-$(dirname "$0")/../../../shared/data}")
mkdir -p "$out"
for i in 0 75 150 225 300 375 450 525 600 675 750 825; do
    f=$(printf "in%06d.jpg" "$i")
    ln -sf "$data/fixedcam/$f" "$out/fc_$f"
done
find "$data/train/bsds500" -maxdepth 1 -name '*.jpg' -printf '%f\n' | LC_ALL=C sort | awk 'NR % 25 == 0' |
    while read -r f; do ln -sf "$data/train/bsds500/$f" "$out/bs_$f"; done
echo "$(find "$out" -maxdepth 1 -type l | wc -l) pictures linked in $out"
