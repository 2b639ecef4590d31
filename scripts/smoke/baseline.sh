#!/usr/bin/env bash
# The baseline install's reader: synthesise a tiny tile set, prepare the cache, train the tiny
# HighDAN for a few CPU steps, predict the test tiles into a submission and validate it.
# Run in an empty folder, `c2seg` on PATH.
set -euo pipefail
source "$(dirname "$0")/common.sh"

synth_tiles
step "prepare" -- c2seg prepare data --track AB --out prepared --pca-fit source --no-progress
step "train" -- c2seg train-baseline --prepared prepared --track AB --out run --config tiny --steps 3 \
    --device cpu --seed 0 --no-progress
check "training wrote last.pt" test -s run/last.pt
step "predict" -- c2seg predict --checkpoint run/last.pt --prepared prepared --track AB --out predictions.h5 \
    --device cpu --method smoke --no-progress
step "validate" -- c2seg validate predictions.h5 --track AB --labels data/labels.h5
step "score" -- c2seg score predictions.h5 --labels data/labels.h5
echo "baseline smoke: OK" >&2
