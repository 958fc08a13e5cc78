#!/usr/bin/env bash
# A federation of processes on this machine: three directors, one origin, one cache.
#   scripts/local-federation.sh up      build, make keys + trust (first time), start all
#   scripts/local-federation.sh status  what each director knows
#   scripts/local-federation.sh down    stop all (gracefully)
# State lives in ./local (keys, trust file, sled directories, logs, pids). Uses the same
# release binary as scripts/federation.sh (scripts/build-skein.sh builds it once).
# Keys and trust file: scripts/local-keys.sh (keeps keys made by hand, lists them all).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL=./local

start() { # name, command...
  local name=$1; shift
  if [ -f "$LOCAL/pids/$name" ] && kill -0 "$(cat "$LOCAL/pids/$name")" 2>/dev/null; then return; fi
  "$@" > "$LOCAL/logs/$name.log" 2>&1 &
  echo $! > "$LOCAL/pids/$name"
}

wait_ready() {
  for _ in $(seq 1 100); do "$SKEIN" healthcheck "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "director $1 did not become ready; see $LOCAL/logs" >&2; return 1
}

case "${1:-}" in
  up)
    SKEIN=$(scripts/build-skein.sh)
    mkdir -p "$LOCAL/logs" "$LOCAL/pids" "$LOCAL/data"
    scripts/local-keys.sh "$SKEIN"
    for d in a b c; do "$SKEIN" check --config "config/local/director-$d.toml" >/dev/null; done
    for d in a b c; do start "director-$d" "$SKEIN" serve --config "config/local/director-$d.toml"; done
    for p in 7441 7442 7443; do wait_ready "http://127.0.0.1:$p"; done
    start origin-1 "$SKEIN" origin --config config/local/origin-1.toml
    start cache-1 "$SKEIN" cache --config config/local/cache-1.toml
    echo "federation up: directors on 127.0.0.1:7441-7443, origin :7501, cache :7601"
    echo "try: $SKEIN get --federation http://127.0.0.1:7441 /test/hello.txt"
    echo "status page: http://127.0.0.1:7441/"
    ;;
  status)
    SKEIN=$(scripts/build-skein.sh 2>/dev/null)
    for p in 7441 7442 7443; do
      echo "== director on :$p"; "$SKEIN" directors --from "http://127.0.0.1:$p" || true
      "$SKEIN" ads --from "http://127.0.0.1:$p" || true
    done
    ;;
  down)
    for f in "$LOCAL"/pids/*; do
      [ -f "$f" ] || continue
      kill -TERM "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
    ;;
  *) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
