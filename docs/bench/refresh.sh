#!/usr/bin/env bash
# Rerun every benchmark whose numbers the README and docs/REFERENCE-CODING.md quote for the
# shipped model, two at a time (rd on one core, the rest on the other), into OUTDIR.
# Usage: bash docs/bench/refresh.sh [OUTDIR] [MODEL]   (about 15 minutes on 2 cores: rd 15 without
# the baselines' cache, 8 with it, the rest 12; OUTDIR defaults to bench-out, MODEL to the shipped one)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-out}
model=${2:-}
mkdir -p "$out"
L=.venv/bin/lpimg
m=()
[ -n "$model" ] && m=(--model "$model")
run() {  # run NAME CORE COMMAND...: stdout to OUT/NAME.out, stderr to OUT/NAME.err, wall time logged
    local name=$1 core=$2
    shift 2
    local t0=$SECONDS
    taskset -c "$core" "$@" > "$out/$name.out" 2> "$out/$name.err"
    echo "$name: rc $? in $((SECONDS - t0)) s" | tee -a "$out/log.txt"
}
(
    run rd 0 $L bench rd --images ../shared/data/kodak --json --plot "$out/rd.png" "${m[@]}"
) &
(
    run speed 1 $L bench speed --json "${m[@]}"
    run preview 1 $L bench preview --images ../shared/data/kodak --json --strip "$out/preview.jpg" "${m[@]}"
    run toa 1 $L bench toa --json "${m[@]}"
    run colour 1 $L bench colour --limit 8 "${m[@]}"
    run exact 1 $L bench exact --images ../shared/data/kodak --json "${m[@]}"
    run device-check-320x240 1 $L device-check --size 320x240 --json "${m[@]}"
    run device-check-640x480 1 $L device-check --size 640x480 --json "${m[@]}"
    run feedback 1 $L bench feedback --images ../shared/data/kodak --json "${m[@]}"
    run fixedcam-50 1 $L bench fixedcam --frames ../shared/data/fixedcam --step 50 --chains 4 \
        --drift-frames 100 --drift-step 4 --json "${m[@]}"
    run fixedcam-250 1 $L bench fixedcam --frames ../shared/data/fixedcam --step 250 --chains 8 --json "${m[@]}"
    run fixedcam-link-1 1 $L bench fixedcam-link --count 8 --step 25 --layers 8 --loss 0.2 --json "${m[@]}"
    run fixedcam-link-2 1 $L bench fixedcam-link --count 8 --step 25 --layers 11 --downlink-loss 0.2 \
        --json "${m[@]}"
    run fixedcam-link-3 1 $L bench fixedcam-link --count 8 --step 25 --layers 8 \
        --link lorawan-eu868:dr0 --loss 0.1 --json "${m[@]}"
    run demo 1 $L demo "${m[@]}"
) &
wait
echo "done: $out" | tee -a "$out/log.txt"
