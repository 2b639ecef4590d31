#!/usr/bin/env bash
# The install a user makes, proved: build the sdist and the wheel (the wheel from the sdist, so
# the sdist is complete too), install the WHEEL (never -e) into fresh virtual environments, and run
# in each, from a temporary folder outside the source tree, a short smoke of what that reader does:
#
#   light     pip install WHEEL              scripts/smoke/light.sh (and: no torch, no fastapi)
#   baseline  pip install "WHEEL[baseline]"  scripts/smoke/baseline.sh (torch pinned first: the CPU build)
#   server    pip install "WHEEL[server]"    scripts/smoke/server.sh
#   light-min  the light install at the lowest versions pyproject.toml declares
#              (scripts/min-versions.txt), then scripts/smoke/light.sh
#   server-min the same for "WHEEL[server]", then scripts/smoke/server.sh
#
# Usage: scripts/wheel-smoke.sh [light|baseline|server|light-min|server-min ...]   (default: all five)
# Environment: PYTHON (the interpreter for the venvs, default python3), TORCH_PIN (default
# torch==2.13.0), KEEP=1 keeps the work folder for inspection, WHEEL_SMOKE_TMP the folder to work
# in (default: /dev/shm where it has 6 GB free, else $TMPDIR or /tmp: the venvs hold tens of
# thousands of files, which a memory file system writes and removes in seconds).
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
ALL=(light baseline server light-min server-min)
if [ "$#" -gt 0 ]; then WANT=("$@"); else WANT=("${ALL[@]}"); fi
for w in "${WANT[@]}"; do
    case " ${ALL[*]} " in *" $w "*) ;; *) echo "wheel-smoke: unknown part '$w' (one of: ${ALL[*]})" >&2; exit 2 ;; esac
done

BASE="${WHEEL_SMOKE_TMP:-}"
if [ -z "$BASE" ]; then
    BASE="${TMPDIR:-/tmp}"
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt $((6 * 1024 * 1024)) ]; then
        BASE=/dev/shm
    fi
fi
WORK="$(mktemp -d "$BASE/c2seg-wheel-smoke.XXXXXX")"
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then echo "wheel-smoke: kept $WORK" >&2; return; fi
    local t=$SECONDS
    rm -rf "$WORK"
    echo "wheel-smoke: removed its work folder in $((SECONDS - t)) s" >&2
}
trap cleanup EXIT
say() { printf '\n=== wheel-smoke: %s\n' "$*" >&2; }
die() { echo "wheel-smoke: FAILED: $*" >&2; exit 1; }
T0=$SECONDS

# 1. Build from a copy of the tracked files only: nothing built or left in the work tree
# (a .venv, build/, *.egg-info) can reach the distributions.
say "building the sdist and the wheel"
mkdir -p "$WORK/src" "$WORK/dist"
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$SRC" ls-files -z --cached --others --exclude-standard \
        | (cd "$SRC" && xargs -0 cp --parents -t "$WORK/src" 2>/dev/null || true)
else
    cp -r "$SRC/." "$WORK/src"
fi
[ -f "$WORK/src/pyproject.toml" ] || die "could not copy the source tree from $SRC"
"$PYTHON" -m venv "$WORK/buildenv"
"$WORK/buildenv/bin/python" -m pip install -q build || die "could not install 'build' (pip install build)"
"$WORK/buildenv/bin/python" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; die "python -m build failed (log above)"; }
SDIST="$(ls "$WORK"/dist/c2seg_kit-*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/c2seg_kit-*.whl)"
echo "built $(basename "$SDIST") and $(basename "$WHEEL") in $((SECONDS - T0)) s" >&2

# 2. One fresh venv per reader; each smoke runs in its own empty folder outside the source tree.
fresh_venv() {  # NAME -> $WORK/venv-NAME with a current pip
    "$PYTHON" -m venv "$WORK/venv-$1"
    "$WORK/venv-$1/bin/python" -m pip install -q --upgrade pip
}
in_venv() {  # NAME SCRIPT: run SCRIPT with NAME's venv first on PATH, in an empty folder
    local name="$1" script="$2" run="$WORK/run-$1"
    mkdir -p "$run"
    (cd "$run" && env -u PYTHONPATH PATH="$WORK/venv-$name/bin:$PATH" VIRTUAL_ENV="$WORK/venv-$name" PYTHONNOUSERSITE=1 \
        bash "$SRC/scripts/smoke/$script") || die "the $name smoke failed (scripts/smoke/$script)"
}
check_installed_from_wheel() {  # NAME: c2seg_kit comes from the venv's site-packages, not the source tree
    local where
    where="$(cd "$WORK" && "$WORK/venv-$1/bin/python" -c 'import c2seg_kit; print(c2seg_kit.__file__)')"
    case "$where" in "$WORK/venv-$1/"*) ;; *) die "$1: c2seg_kit imported from $where, not from the venv" ;; esac
}

for part in "${WANT[@]}"; do
    t=$SECONDS
    case "$part" in
    light)
        say "light: pip install WHEEL"
        fresh_venv light
        "$WORK/venv-light/bin/python" -m pip install -q "$WHEEL"
        for heavy in torch fastapi uvicorn sqlalchemy; do
            if (cd "$WORK" && "$WORK/venv-light/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$heavy') is None)"); then
                die "the light install pulled in $heavy"
            fi
        done
        check_installed_from_wheel light
        in_venv light light.sh
        ;;
    baseline)
        say "baseline: pip install $TORCH_PIN, then pip install \"WHEEL[baseline]\""
        fresh_venv baseline
        "$WORK/venv-baseline/bin/python" -m pip install -q "$TORCH_PIN"
        "$WORK/venv-baseline/bin/python" -m pip install -q "$WHEEL[baseline]" "$TORCH_PIN"
        check_installed_from_wheel baseline
        in_venv baseline baseline.sh
        ;;
    server)
        say "server: pip install \"WHEEL[server]\""
        fresh_venv server
        "$WORK/venv-server/bin/python" -m pip install -q "$WHEEL[server]"
        if (cd "$WORK" && "$WORK/venv-server/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"); then
            die "the server install pulled in torch"
        fi
        check_installed_from_wheel server
        in_venv server server.sh
        ;;
    light-min|server-min)
        extra=""; smoke=light.sh
        if [ "$part" = server-min ]; then extra="[server]"; smoke=server.sh; fi
        say "$part: pip install \"WHEEL$extra\" at the lowest declared versions (scripts/min-versions.txt)"
        fresh_venv "$part"
        "$WORK/venv-$part/bin/python" -m pip install -q -c "$SRC/scripts/min-versions.txt" "$WHEEL$extra"
        pins="$(grep -E '^[A-Za-z]' "$SRC/scripts/min-versions.txt" | cut -d= -f1 | tr '\n' '|')"
        "$WORK/venv-$part/bin/python" -m pip list --format=freeze 2>/dev/null \
            | grep -iE "^(${pins%|})==" | tr '\n' ' ' >&2; echo >&2
        check_installed_from_wheel "$part"
        in_venv "$part" "$smoke"
        ;;
    esac
    echo "wheel-smoke: $part passed in $((SECONDS - t)) s" >&2
done
say "passed: ${WANT[*]} in $((SECONDS - T0)) s"
