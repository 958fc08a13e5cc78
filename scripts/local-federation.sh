#!/usr/bin/env bash
# A federation of processes on this machine: three directors, one origin, one cache.
#   scripts/local-federation.sh up      build, make keys + trust (first time), start all
#   scripts/local-federation.sh status  what each director knows
#   scripts/local-federation.sh down    stop all (gracefully)
# State lives in ./local (keys, trust file, sled directories, logs, pids).
set -euo pipefail
cd "$(dirname "$0")/.."
SKEIN=./target/release/skein
LOCAL=./local

keys() {
  mkdir -p "$LOCAL/keys"
  [ -f "$LOCAL/trust.toml" ] && return
  : > "$LOCAL/trust.toml.new"
  for entry in director-a:director: director-b:director: director-c:director: \
               origin-1:origin:/test cache-1:cache:/test; do
    IFS=: read -r name kind ns <<<"$entry"
    [ -f "$LOCAL/keys/$name.key" ] || "$SKEIN" keygen --out "$LOCAL/keys/$name.key" > "$LOCAL/keys/$name.pub"
    namespaces="[]"; [ -n "$ns" ] && namespaces="[\"$ns\"]"
    printf '[[server]]\nname = "%s"\nkind = "%s"\npublic_key = "%s"\nnamespaces = %s\n\n' \
      "$name" "$kind" "$(cat "$LOCAL/keys/$name.pub")" "$namespaces" >> "$LOCAL/trust.toml.new"
  done
  mv "$LOCAL/trust.toml.new" "$LOCAL/trust.toml"
}

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
    cargo build --release --quiet
    mkdir -p "$LOCAL/logs" "$LOCAL/pids" "$LOCAL/data"
    keys
    for d in a b c; do start "director-$d" "$SKEIN" serve --config "config/local/director-$d.toml"; done
    for p in 7441 7442 7443; do wait_ready "http://127.0.0.1:$p"; done
    start origin-1 "$SKEIN" origin --config config/local/origin-1.toml
    start cache-1 "$SKEIN" cache --config config/local/cache-1.toml
    echo "federation up: directors on 127.0.0.1:7441-7443, origin :7501, cache :7601"
    echo "try: $SKEIN get --federation http://127.0.0.1:7441 /test/hello.txt"
    ;;
  status)
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
