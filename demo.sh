#!/usr/bin/env bash
# The golden path on the bundled counter plugin, unattended: start the server,
# edit the plugin while it ticks (the score carries on with the new code),
# save a syntax error (one clear line; the old code keeps ticking), fix it,
# and stop with Ctrl-C's signal. Works on a copy; the repository is not touched.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cd "$root"

echo "[demo] building hotreload (cargo build --release)"
cargo build --release --quiet

work=$(mktemp -d)
log="$work/hotreload.log"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cp examples/counter/logic.c include/hotreload.h "$work/"

# Waits until the server has printed a line containing $1 (after line $2).
wait_for() {
  local needle=$1 after=${2:-0} i
  for i in $(seq 1 300); do
    if tail -n +"$((after + 1))" "$log" | grep -qF -- "$needle"; then return 0; fi
    sleep 0.05
  done
  echo "[demo] gave up waiting for: $needle" >&2
  exit 1
}
lines() { wc -l <"$log"; }

cd "$work"
echo "[demo] \$ hotreload --watch logic.c --build \"cc -shared -fPIC -o logic.so logic.c\" --tick-ms 100 --seed 123"
# Made before either starts: the tailer may otherwise run before the
# server's redirection has created it, and give up on a missing file.
: >"$log"
"$root/target/release/hotreload" --watch logic.c \
  --build "cc -shared -fPIC -o logic.so logic.c" \
  --tick-ms 100 --seed 123 >"$log" 2>&1 &
server=$!
tail -n +1 -f "$log" --pid "$server" &

wait_for "[counter] score=10"
mark=$(lines)
echo "[demo] editing logic.c in place: score += 1  ->  score += 5"
sed -i 's/s->score += 1;/s->score += 5;/' logic.c
wait_for "[reload] swapped" "$mark"
mark=$(lines)
wait_for "[counter] score=" "$mark"
mark=$(lines)

echo "[demo] saving a syntax error"
cp logic.c good.c.bak
sed -i 's/s->score += 5;/s->score += 5/' logic.c
wait_for "[build] exit status" "$mark"
mark=$(lines)
wait_for "[counter] score=" "$mark"
echo "[demo] the old code is still ticking; fixing the error"
mark=$(lines)
cp good.c.bak logic.c
# The fix rebuilds the running version byte for byte: nothing to swap.
wait_for "[reload] " "$mark"
mark=$(lines)
wait_for "[counter] score=" "$mark"

echo "[demo] stopping with SIGINT (Ctrl-C)"
kill -INT "$server"
status=0
wait "$server" || status=$?
server=""
sleep 0.1
echo "[demo] hotreload exited with code $status"
exit "$status"
