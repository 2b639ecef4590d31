# Sourced by the smoke scripts: run a step and say which one failed.
set -euo pipefail
step() {  # step DESCRIPTION -- COMMAND...: run COMMAND, stop with a clear line if it fails
    local what="$1"; shift; [ "$1" = "--" ] && shift
    echo "--- $what: $*" >&2
    "$@" || { echo "smoke: FAILED at '$what' (exit $?): $*" >&2; exit 1; }
}
check() {  # check DESCRIPTION CONDITION-COMMAND...
    local what="$1"; shift
    "$@" || { echo "smoke: FAILED check: $what" >&2; exit 1; }
}
# a tiny AB tile set: labelled train tiles, unlabelled test tiles, the hidden labels.h5 (tile layout)
synth_tiles() { step "synth" -- c2seg synth data --track AB --layout tiles --scale 0.05 --seed 0 --no-progress; }
# predictions from the unpacked true labels: the same classes, with 1 where the labels have 0 (no
# class: scored nowhere), so the set holds no 0 and scores mIoU 1; one PNG per tile id
predictions_from_truth() {  # TRUTH_DIR OUT_DIR
    step "predictions from the true labels" -- python - "$1" "$2" <<'PY'
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

truth, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
tiles = sorted(truth.glob("*.tif"))
if not tiles:
    sys.exit(f"no GeoTIFFs in {truth}")
for tif in tiles:
    classes = tifffile.imread(tif)
    Image.fromarray(np.where(classes == 0, 1, classes).astype(np.uint8)).save(out / f"{tif.stem}.png")
PY
}
expect_json() {  # FILE PYTHON-EXPRESSION (on `d`, the loaded JSON) DESCRIPTION
    python - "$1" "$2" "$3" <<'PY' || exit 1
import json, sys
path, expr, what = sys.argv[1:]
d = json.load(open(path))
if not eval(expr, {"d": d, "json": json}):
    sys.exit(f"smoke: FAILED check: {what} ({path}: {json.dumps(d)[:400]})")
PY
}
