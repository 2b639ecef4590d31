#!/usr/bin/env bash
# Regenerates the README's images with the kit's own commands:
#   docs/prediction.png   `c2seg render` of the demo's predicted Berlin map
#   docs/leaderboard.png  headless Chromium's screenshot of the page `c2seg serve` shows
# Usage: docs/make_images.sh [DEMO_OUT]   (runs `c2seg demo` first if DEMO_OUT has no predictions)
set -euo pipefail
cd "$(dirname "$0")/.."
C2SEG=${C2SEG:-.venv/bin/c2seg}
out=${1:-demo-out}
[ -f "$out/predictions.h5" ] || "$C2SEG" demo --out "$out"
"$C2SEG" render "$out/predictions.h5" --out docs/prediction.png --force  # regenerates the image

db="sqlite:///$(cd "$out" && pwd)/leaderboard.db"
token=$("$C2SEG" admin --db "$db" add-team "HighDAN tiny (baseline)" --baseline)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$C2SEG" serve --labels "$out/data/labels.h5" --db "$db" --data-dir "$out/server-data" --port "$port" \
    --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
"$C2SEG" submit "$out/predictions.h5" --server "http://127.0.0.1:$port" --token "$token" >/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1700,560 \
    --screenshot=docs/leaderboard.png "http://127.0.0.1:$port/?track=AB"
echo "wrote docs/prediction.png docs/leaderboard.png"
