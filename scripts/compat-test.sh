#!/usr/bin/env bash
# Does a real Pelican client work against Skein unchanged? Builds skein, starts a
# throwaway federation on free 127.0.0.1 ports (one director, one origin exporting a temp
# dir with hello.txt, one cache), installs pelicanfs (the Pelican Platform's fsspec client)
# into a venv, and runs tests/compat/pelicanfs_check.py against it.
#   scripts/compat-test.sh            prints "pelicanfs: N passed, M failed"; exit 0 only if all pass
# Env: PELICANFS_VERSION (default 1.5.0), COMPAT_VENV (default $CARGO_TARGET_DIR/compat-venv),
#      COMPAT_VERBOSE=1 for pelicanfs debug logs, COMPAT_SKEIN=path to test a prebuilt skein
#      (no build).
# pelicanfs fetches the discovery document only over https, so the director serves TLS
# (its own [tls] listener) with a certificate from a throwaway CA made here with openssl;
# pelicanfs trusts that CA through SSL_CERT_FILE, the origin and cache through ca_bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib-testenv.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SKEIN=${COMPAT_SKEIN:-$TARGET/debug/skein}
VERSION=${PELICANFS_VERSION:-1.5.0}
VENV=${COMPAT_VENV:-$TARGET/compat-venv}

[ -n "${COMPAT_SKEIN:-}" ] || cargo build --quiet --locked --bin skein

WORK=$(mktemp -d "${TMPDIR:-/tmp}/skein-compat.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    echo "--- logs ($WORK/logs) ---" >&2
    tail -n 20 "$WORK"/logs/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

DPORT=$(free_port); OPORT=$(free_port); CPORT=$(free_port)
while [ "$OPORT" = "$DPORT" ]; do OPORT=$(free_port); done
while [ "$CPORT" = "$DPORT" ] || [ "$CPORT" = "$OPORT" ]; do CPORT=$(free_port); done
DIRECTOR=https://127.0.0.1:$DPORT ORIGIN=http://127.0.0.1:$OPORT CACHE=http://127.0.0.1:$CPORT

mkdir -p "$WORK"/{keys,logs,export,data,cache,tls}
# A throwaway CA and a certificate for the director at 127.0.0.1.
make_ca "$WORK/tls"
CA="$WORK/tls/ca.pem"
printf 'Hello from a Skein origin, read by pelicanfs.\n' > "$WORK/export/hello.txt"
printf 'second object\n' > "$WORK/export/other.txt"

: > "$WORK/trust.toml"
for entry in director:director: origin:origin:/test cache:cache:/test; do
  IFS=: read -r name kind ns <<<"$entry"
  pub=$("$SKEIN" keygen --out "$WORK/keys/$name.key")
  namespaces="[]"; [ -n "$ns" ] && namespaces="[\"$ns\"]"
  printf '[[server]]\nname = "%s"\nkind = "%s"\npublic_key = "%s"\nnamespaces = %s\n\n' \
    "$name" "$kind" "$pub" "$namespaces" >> "$WORK/trust.toml"
done

cat > "$WORK/director.toml" <<TOML
name = "director"
listen = "127.0.0.1:$DPORT"
advertise_url = "$DIRECTOR"
data_dir = "$WORK/data/director"
[tls]
cert = "$WORK/tls/director.pem"
key = "$WORK/tls/director.key"
[identity]
key = "$WORK/keys/director.key"
[federation]
trust = "$WORK/trust.toml"
TOML
cat > "$WORK/origin.toml" <<TOML
name = "origin"
kind = "origin"
data_url = "$ORIGIN"
web_url = "$ORIGIN"
key = "$WORK/keys/origin.key"
federation = "$DIRECTOR"
interval = "2s"
lifetime = "1m"
ca_bundle = "$CA"
listen = "127.0.0.1:$OPORT"
export = "$WORK/export"
[[namespace]]
path = "/test"
reads = true
public_reads = true
writes = false
listings = true
TOML
cat > "$WORK/cache.toml" <<TOML
name = "cache"
kind = "cache"
data_url = "$CACHE"
web_url = "$CACHE"
key = "$WORK/keys/cache.key"
federation = "$DIRECTOR"
interval = "2s"
lifetime = "1m"
ca_bundle = "$CA"
listen = "127.0.0.1:$CPORT"
cache_dir = "$WORK/cache"
[[namespace]]
path = "/test"
public_reads = true
TOML

start() { # name, command...
  local name=$1; shift
  "$@" > "$WORK/logs/$name.log" 2>&1 &
  PIDS+=($!)
}
start director "$SKEIN" serve --config "$WORK/director.toml"
start origin "$SKEIN" origin --config "$WORK/origin.toml"
start cache "$SKEIN" cache --config "$WORK/cache.toml"

# Ready when the director sends /test/hello.txt to the cache (so both have advertised).
deadline=$((SECONDS + 30))
export SKEIN_CA_BUNDLE="$CA"   # for skein locate
export XDG_CACHE_HOME="$WORK/cache-home"   # skein locate remembers directors there
until "$SKEIN" locate --federation "$DIRECTOR" /test/hello.txt 2>/dev/null | grep -q "^redirect: $CACHE/" \
   && "$SKEIN" locate --origin --federation "$DIRECTOR" /test/hello.txt 2>/dev/null | grep -q "^redirect: $ORIGIN/"; do
  if [ $SECONDS -ge $deadline ]; then echo "federation did not come up in 30s" >&2; exit 1; fi
  sleep 0.2
done

# pelicanfs in a venv (python3-venv is a separate package on Debian/Ubuntu).
python_venv "$VENV" \
  "import pelicanfs, sys; from importlib.metadata import version; sys.exit(version('pelicanfs') != '$VERSION')" \
  "pelicanfs==$VERSION"

# pelicanfs fetches discovery over https from the director itself.
export SSL_CERT_FILE="$CA"
discovery=(--discovery "pelican://127.0.0.1:$DPORT")

verbose=(); [ -n "${COMPAT_VERBOSE:-}" ] && verbose=(--verbose)
timeout 90 "$VENV/bin/python" tests/compat/pelicanfs_check.py \
  --director "$DIRECTOR" "${discovery[@]}" --cache-url "$CACHE" \
  --expect-file "$WORK/export/hello.txt" --path /test/hello.txt "${verbose[@]}"
