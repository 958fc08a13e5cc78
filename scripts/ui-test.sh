#!/usr/bin/env bash
# The status page in a real browser: starts two directors (and names a third that is
# down), advertises an origin and two caches (one withdrawing), then loads
# http://<director>/ in headless Chromium, checks that the DOM lists the servers just
# advertised, and saves a screenshot to docs/status-page.png.
# Installs Debian's chromium when it is missing. Called from scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the browser test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

cargo build --locked --quiet --bin skein
SKEIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/skein
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { # a port nothing listens on
  while :; do
    local port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
A=$(free_port); B=$(free_port); DOWN=$(free_port)

mkdir -p "$WORK/keys"
: > "$WORK/trust.toml"
for entry in ui-director-a:director: ui-director-b:director: \
             origin-1:origin:/test,/ligo/frames cache-1:cache:/test cache-2:cache:/test; do
  IFS=: read -r name kind ns <<<"$entry"
  pub=$("$SKEIN" keygen --out "$WORK/keys/$name.key")
  namespaces=$(printf '%s' "$ns" | awk -F, '{for(i=1;i<=NF;i++) printf "%s\"%s\"", (i>1?", ":""), $i}')
  printf '[[server]]\nname = "%s"\nkind = "%s"\npublic_key = "%s"\nnamespaces = [%s]\n\n' \
    "$name" "$kind" "$pub" "$namespaces" >> "$WORK/trust.toml"
done

director() { # letter, port, peers...
  local name=ui-director-$1 port=$2; shift 2
  local peers; peers=$(printf '"http://127.0.0.1:%s", ' "$@"); peers=${peers%, }
  cat > "$WORK/$name.toml" <<TOML
name = "$name"
listen = "127.0.0.1:$port"
advertise_url = "http://127.0.0.1:$port"
data_dir = "$WORK/data/$name"
[identity]
key = "$WORK/keys/$name.key"
[federation]
directors = [$peers]
trust = "$WORK/trust.toml"
[peers]
poll_interval = "2s"
TOML
  "$SKEIN" serve --config "$WORK/$name.toml" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
director a "$A" "$B" "$DOWN"
director b "$B" "$A"
for port in "$A" "$B"; do
  for _ in $(seq 1 100); do "$SKEIN" healthcheck "http://127.0.0.1:$port" 2>/dev/null && break; sleep 0.1; done
  "$SKEIN" healthcheck "http://127.0.0.1:$port" || { cat "$WORK"/*.log; exit 1; }
done

service() { # name, kind, data port, namespaces...
  local name=$1 kind=$2 port=$3; shift 3
  {
    printf 'name = "%s"\nkind = "%s"\ndata_url = "http://%s.example:%s"\n' "$name" "$kind" "$name" "$port"
    printf 'web_url = "http://%s.example:%s"\nkey = "%s"\n' "$name" "$port" "$WORK/keys/$name.key"
    printf 'directors = ["http://127.0.0.1:%s", "http://127.0.0.1:%s"]\ninterval = "60s"\nlifetime = "15m"\n' "$A" "$B"
    for ns in "$@"; do
      printf '\n[[namespace]]\npath = "%s"\nreads = true\npublic_reads = true\nlistings = true\n' "$ns"
    done
  } > "$WORK/$name.toml"
}
service origin-1 origin 8443 /test /ligo/frames
service cache-1 cache 8442 /test
service cache-2 cache 8444 /test
"$SKEIN" advertise --config "$WORK/origin-1.toml" --once > "$WORK/origin-1.log" 2>&1
"$SKEIN" advertise --config "$WORK/cache-1.toml" --once > "$WORK/cache-1.log" 2>&1
# cache-2 advertises, then stops gracefully: its withdrawal shows as "shutting down".
"$SKEIN" advertise --config "$WORK/cache-2.toml" > "$WORK/cache-2.log" 2>&1 &
withdrawing=$!
for _ in $(seq 1 100); do "$SKEIN" ads --from "http://127.0.0.1:$A" | grep -q cache-2 && break; sleep 0.1; done
kill -TERM "$withdrawing"; wait "$withdrawing" || true

browser() { chromium --headless --no-sandbox --disable-gpu --hide-scrollbars "$@" 2>>"$WORK/chromium.log"; }
URL="http://127.0.0.1:$A/"
dom=""
for _ in $(seq 1 50); do # until both directors agree and the withdrawal arrived
  dom=$(browser --dump-dom "$URL")
  grep -q 'shutting down' <<<"$dom" && grep -q 'ui-director-b' <<<"$dom" && break
  sleep 0.2
done
for needle in origin-1 cache-1 cache-2 /ligo/frames 'shutting down' ui-director-b \
              "127.0.0.1:$DOWN" ' ago|just now' 'in 1[0-4] min' '/metrics'; do
  if ! grep -qE -- "$needle" <<<"$dom"; then
    echo "ui-test: the status page in Chromium does not show '$needle'" >&2
    echo "$dom" > "$WORK/dom.html"; cp "$WORK/dom.html" /tmp/skein-ui-test-dom.html
    exit 1
  fi
done
browser --window-size=1440,900 --screenshot="$PWD/docs/status-page.png" "$URL" >/dev/null
test -s docs/status-page.png
echo "ui-test: the status page lists the advertised servers in Chromium; screenshot in docs/status-page.png"
