#!/usr/bin/env bash
# State migration while it runs, unattended, on the particles plugin: start
# the server with a seed, add a field to the state (gravity) while the
# particles fly (the host carries every other field over: `migrated:
# +gravity`), then change gravity's value (same layout: a plain reload), and
# stop with Ctrl-C's signal. Works on a copy; the repository is not touched.
#
# HOTRELOAD_BIN=path/to/hotreload runs that binary instead of building one
# (the tests use it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

if [ -n "${HOTRELOAD_BIN:-}" ]; then
  bin=$HOTRELOAD_BIN
else
  echo "[demo] building hotreload (cargo build --release)"
  cargo build --release --quiet
  target=${CARGO_TARGET_DIR:-target}
  case $target in /*) ;; *) target="$root/$target" ;; esac
  bin="$target/release/hotreload"
fi

work=$(mktemp -d)
log="$work/hotreload.log"
server=""
tailer=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$tailer" ] && kill "$tailer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cp "$here/logic.c" "$work/"
cp "$root/include/hotreload.h" "$work/"

# Waits until the server has printed a line containing $1 after line $2, and
# puts that line in $found.
found=""
wait_for() {
  local needle=$1 after=${2:-0} i
  for i in $(seq 1 200); do
    found=$(tail -n +"$((after + 1))" "$log" | grep -F -m1 -- "$needle" || true)
    if [ -n "$found" ]; then return 0; fi
    if ! kill -0 "$server" 2>/dev/null; then
      echo "[demo] hotreload exited while waiting for: $needle" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "[demo] gave up waiting for: $needle" >&2
  exit 1
}
lines() { wc -l <"$log"; }

cd "$work"
build="cc -g -shared -fPIC -o logic.so logic.c"
echo "[demo] \$ hotreload --watch logic.c --build \"$build\" --seed 42 --tick-ms 50 --state-every 20"
# Made before either starts: the tailer may otherwise run before the
# server's redirection has created it, and give up on a missing file.
: >"$log"
"$bin" --watch logic.c --build "$build" --seed 42 --tick-ms 50 --state-every 20 >"$log" 2>&1 &
server=$!
tail -n +1 -s 0.1 -f "$log" --pid "$server" &
tailer=$!

wait_for "(v1, tick 20)"
mark=$(lines)
echo "[demo] adding a field while it runs: float gravity in state_t and the schema,"
echo "[demo] used by the tick, set to -9.8 by on_reload"
sed -i -f - logic.c <<'EOF'
s|^} state_t;|    float gravity; /* added while running */\n} state_t;|
s|^\( *\)HOTRELOAD_FIELD(state_t, vy, HOTRELOAD_F64),|&\n\1HOTRELOAD_FIELD(state_t, gravity, HOTRELOAD_F32),|
s|double ax = 0\.0, ay = 0\.0;.*|double ax = 0.0, ay = s->gravity;|
/^static void particles_on_reload/,/^}/s|^\( *\)state_t\* s = state;|&\n\1s->gravity = -9.8f; /* the code's value, in force from every reload on */\n\1host->log("gravity is -9.8 from now on");|
EOF
grep -n gravity logic.c | grep -vE '^[0-9]+: \*' | sed 's/^/[demo]   logic.c:/'
wait_for "[reload] " "$mark"
case $found in
  "[reload] swapped "*"migrated: +gravity"*) ;;
  *) echo "[demo] expected a swap migrating +gravity, found: $found" >&2; exit 1 ;;
esac
wait_for "(migrated; v2" "$mark"
wait_for "(v2, tick " "$mark"
mark=$(lines)

echo "[demo] changing gravity's value: -9.8 -> -2.0 (the same layout: a plain reload)"
sed -i 's/-9\.8/-2.0/g' logic.c
wait_for "[reload] " "$mark"
case $found in
  "[reload] swapped "*"migrated"*) echo "[demo] expected a plain swap, found: $found" >&2; exit 1 ;;
  "[reload] swapped "*) ;;
  *) echo "[demo] expected a plain swap, found: $found" >&2; exit 1 ;;
esac
wait_for "(preserved; v3" "$mark"
wait_for "(v3, tick " "$mark"

echo "[demo] stopping with SIGINT (Ctrl-C)"
kill -INT "$server"
status=0
wait "$server" || status=$?
server=""
wait "$tailer" || true
tailer=""
echo "[demo] hotreload exited with code $status"
exit "$status"
