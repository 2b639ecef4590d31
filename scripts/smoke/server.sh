#!/usr/bin/env bash
# The server install's reader: serve a tiny track on a free loopback port (SQLite, in the
# background), add a team, submit a prediction with its token, fetch the leaderboard, stop the
# server. Run in an empty folder, `c2seg` on PATH.
set -euo pipefail
source "$(dirname "$0")/common.sh"

synth_tiles
step "unpack labels" -- c2seg unpack data/labels.h5 --like data --out truth --no-progress
predictions_from_truth truth pred
step "pack" -- c2seg pack pred --track AB --out predictions.h5 --like data --method smoke
DB="sqlite:///$PWD/board.db"
TOKEN="$(c2seg admin --db "$DB" --data-dir server-data add-team smoke-team)" \
    || { echo "smoke: FAILED at 'admin add-team'" >&2; exit 1; }
check "add-team printed a token" test -n "$TOKEN"
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"

SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT INT TERM
echo "--- serve on $URL (log: $PWD/server.log)" >&2
c2seg serve --labels data/labels.h5 --db "$DB" --data-dir server-data --host 127.0.0.1 --port "$PORT" \
    --log-level warning >server.log 2>&1 &
SERVER_PID=$!
python - "$URL" "$SERVER_PID" <<'PY' || { echo "smoke: FAILED: the server did not come up; its log:" >&2; cat server.log >&2; exit 1; }
import os, sys, time, httpx
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the server exited")
    try:
        if httpx.get(url + "/healthz", timeout=1).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
sys.exit("no answer in 90 s")
PY
export C2SEG_TOKEN="$TOKEN"  # from the environment: the token stays out of the log
step "submit" -- c2seg submit predictions.h5 --server "$URL" --no-progress
step "leaderboard" -- sh -c "c2seg leaderboard --server '$URL' --track AB --json > board.json"
expect_json board.json '"smoke-team" in json.dumps(d)' "the leaderboard lists the team"
# the board page and its stylesheet: the template and the static file come from the wheel
echo "--- the board page: GET $URL/ and /static/style.css" >&2
python - "$URL" <<'PY' || exit 1
import sys, httpx
url = sys.argv[1]
page = httpx.get(url + "/", timeout=30)
if page.status_code != 200 or "smoke-team" not in page.text:
    sys.exit(f"smoke: FAILED check: the board page ({page.status_code}) does not list smoke-team")
css = httpx.get(url + "/static/style.css", timeout=30)
if css.status_code != 200 or not css.text.strip():
    sys.exit(f"smoke: FAILED check: /static/style.css answered {css.status_code}")
PY
stop_server
echo "server smoke: OK" >&2
