#!/usr/bin/env bash
# The light install's reader: synthesise a tiny tile set, look at it, unpack the hidden labels into
# GeoTIFFs, make a prediction of them (a PNG per tile), pack it as a submission, validate it,
# score it (a perfect prediction: mIoU 1), render it, unpack it. Run in an empty folder, `c2seg`
# on PATH.
set -euo pipefail
source "$(dirname "$0")/common.sh"

synth_tiles
step "info" -- c2seg info data --track AB --no-progress
step "unpack labels" -- c2seg unpack data/labels.h5 --like data --out truth --no-progress
predictions_from_truth truth pred
step "pack" -- c2seg pack pred --track AB --out predictions.h5 --like data --method smoke
step "validate" -- c2seg validate predictions.h5 --track AB --labels data/labels.h5
step "score" -- sh -c 'c2seg score predictions.h5 --labels data/labels.h5 --json > score.json'
expect_json score.json 'abs(d["miou"] - 1) < 1e-9' "a perfect prediction scores mIoU 1"
step "render" -- c2seg render predictions.h5 --like data --out predictions.png
check "render wrote a PNG" python -c 'import sys; sys.exit(open("predictions.png", "rb").read(4) != b"\x89PNG")'
step "unpack" -- c2seg unpack predictions.h5 --like data --out unpacked --no-progress
check "unpack wrote one GeoTIFF per tile" test "$(ls unpacked | wc -l)" -eq "$(ls truth | wc -l)"
# a verb of an extra that is not installed names the extra in one line, exit 1, no traceback
if python -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("fastapi") is not None)'; then
    echo "--- without the server extra: c2seg serve --labels data/labels.h5 (expect one line, exit 1)" >&2
    set +e; c2seg serve --labels data/labels.h5 2>err.txt; rc=$?; set -e
    cat err.txt >&2
    check "serve without the server extra exits 1 (got $rc)" test "$rc" -eq 1
    check "serve without the server extra names it" grep -q "needs the 'server' extra" err.txt
    check "serve without the server extra prints no traceback" sh -c '! grep -q Traceback err.txt'
fi
echo "light smoke: OK" >&2
