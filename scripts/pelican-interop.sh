#!/usr/bin/env bash
# Does a Pelican server (not written in Rust, not by Skein) register with a Skein director
# cluster and get served? Starts three directors (TLS, on free 127.0.0.1 ports) and
# tests/pelican/fake_server.py, a Pelican origin stand-in (Python: PyJWT + cryptography)
# that makes its own EC key, mints its own advertise tokens and POSTs real
# OriginAdvertise ads. The stand-in registers with ONE director; then:
#   1. every director redirects /pel/hello.txt to it (replicated, attested);
#   2. pelicanfs (the Pelican Platform's fsspec client) reads the object through it,
#      discovering from a director it never registered with;
#   3. a restarted director still redirects to it (stored), before any re-advertisement;
#   4. when it stops, its `shutting down` ad withdraws it from every director.
# Beside it, a `skein origin` with protocol = "pelican" (key from `skein keygen --kind ec`)
# registers with director-2 the same way and is served by every director too.
#   scripts/pelican-interop.sh     prints "pelican interop: N passed, M failed"; exit 0 only if all pass
# Env: PELICANFS_VERSION (default 1.5.0), PYJWT_VERSION (default 2.10.1),
#      PELICAN_VENV (default $CARGO_TARGET_DIR/pelican-venv), PELICAN_SKEIN=prebuilt skein.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib-testenv.sh
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SKEIN=${PELICAN_SKEIN:-$TARGET/debug/skein}
PELICANFS=${PELICANFS_VERSION:-1.5.0}
PYJWT=${PYJWT_VERSION:-2.10.1}
VENV=${PELICAN_VENV:-$TARGET/pelican-venv}

[ -n "${PELICAN_SKEIN:-}" ] || cargo build --quiet --locked --bin skein

# PyJWT with cryptography (the stand-in) and pelicanfs (the client), in a venv.
python_venv "$VENV" "
import sys, jwt, cryptography, pelicanfs
from importlib.metadata import version
sys.exit(version('pelicanfs') != '$PELICANFS' or version('PyJWT') != '$PYJWT')" \
  "pelicanfs==$PELICANFS" "PyJWT[crypto]==$PYJWT"
PY="$VENV/bin/python"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/skein-pelican.XXXXXX")
declare -A PID
cleanup() {
  local rc=$?
  for pid in "${PID[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PID[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] || [ -n "${PELICAN_VERBOSE:-}" ]; then
    echo "--- logs ($WORK/logs) ---" >&2
    tail -n 20 "$WORK"/logs/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

PORTS=()
while [ ${#PORTS[@]} -lt 5 ]; do
  p=$(free_port)
  [[ " ${PORTS[*]} " == *" $p "* ]] || PORTS+=("$p")
done
D=(https://127.0.0.1:${PORTS[0]} https://127.0.0.1:${PORTS[1]} https://127.0.0.1:${PORTS[2]})
FAKE_PORT=${PORTS[3]}
FAKE=http://127.0.0.1:$FAKE_PORT
SKP_PORT=${PORTS[4]}
SKP=http://127.0.0.1:$SKP_PORT

mkdir -p "$WORK"/{keys,logs,export,data,tls}
make_ca "$WORK/tls"
CA="$WORK/tls/ca.pem"
export SSL_CERT_FILE="$CA"          # python (stand-in, pelicanfs) trusts the directors
export SKEIN_CA_BUNDLE="$CA"        # so does skein locate
export XDG_CACHE_HOME="$WORK/cache-home"
printf 'Hello from a Pelican origin stand-in, found through Skein.\n' > "$WORK/export/hello.txt"

# The stand-in's key, made by the stand-in; its JWKS goes into the trust file.
"$PY" tests/pelican/fake_server.py keygen --key "$WORK/keys/fake.pem" --jwks "$WORK/keys/fake.jwks" >/dev/null

: > "$WORK/trust.toml"
for i in 0 1 2; do
  pub=$("$SKEIN" keygen --out "$WORK/keys/director-$i.key")
  printf '[[server]]\nname = "director-%s"\nkind = "director"\npublic_key = "%s"\nnamespaces = []\n\n' \
    "$i" "$pub" >> "$WORK/trust.toml"
done
cat >> "$WORK/trust.toml" <<TOML
[[pelican]]
name = "pelican-origin"
kind = "origin"
registry_prefix = "/origins/127.0.0.1:$FAKE_PORT"
issuer = "$FAKE"
jwks_file = "$WORK/keys/fake.jwks"
namespaces = ["/pel"]

[[pelican]]
name = "skein-pelican-origin"
kind = "origin"
registry_prefix = "/origins/127.0.0.1:$SKP_PORT"
issuer = "$SKP"
jwks_file = "$WORK/keys/skp.jwks"
namespaces = ["/skp"]
TOML
"$SKEIN" keygen --kind ec --out "$WORK/keys/skp.pem" > "$WORK/keys/skp.jwks"
cat > "$WORK/skp.toml" <<TOML
name = "skein-pelican-origin"
kind = "origin"
protocol = "pelican"
data_url = "$SKP"
key = "$WORK/keys/skp.pem"
directors = ["${D[2]}"]
ca_bundle = "$CA"
interval = "10m"
listen = "127.0.0.1:$SKP_PORT"
export = "$WORK/export"
[[namespace]]
path = "/skp"
public_reads = true
TOML

for i in 0 1 2; do
  others=()
  for j in 0 1 2; do [ "$j" = "$i" ] || others+=("\"${D[$j]}\""); done
  cat > "$WORK/director-$i.toml" <<TOML
name = "director-$i"
listen = "127.0.0.1:${PORTS[$i]}"
advertise_url = "${D[$i]}"
data_dir = "$WORK/data/director-$i"
[tls]
cert = "$WORK/tls/director.pem"
key = "$WORK/tls/director.key"
[identity]
key = "$WORK/keys/director-$i.key"
[federation]
directors = [$(IFS=,; echo "${others[*]}")]
trust = "$WORK/trust.toml"
ca_bundle = "$CA"
TOML
done

start() { # name, command...
  local name=$1; shift
  "$@" >> "$WORK/logs/$name.log" 2>&1 &
  PID[$name]=$!
}
stop() { # name
  kill -TERM "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}
wait_for() { # seconds, description, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out after $1 s: $what; a last try says:" >&2
      "$@" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}
for i in 0 1 2; do start "director-$i" "$SKEIN" serve --config "$WORK/director-$i.toml"; done
for i in 0 1 2; do wait_for 60 "director-$i ready" "$SKEIN" healthcheck "${D[$i]}"; done

# The stand-in registers with director-0 only, and not again for 10 minutes.
start fake "$PY" tests/pelican/fake_server.py serve --key "$WORK/keys/fake.pem" \
  --listen "127.0.0.1:$FAKE_PORT" --url "$FAKE" --name pelican-origin --namespace /pel \
  --export "$WORK/export" --director "${D[0]}" --interval 600
start skein-pelican "$SKEIN" origin --config "$WORK/skp.toml"

passed=0; failed=0
check() { # description, command...
  local what=$1; shift
  if "$@"; then echo "  ok    $what"; passed=$((passed + 1)); else echo "  FAIL  $what"; failed=$((failed + 1)); fi
}
routes_to_fake() { # director (on failure, prints what locate said)
  local said
  said=$("$SKEIN" locate --federation "$1" /pel/hello.txt 2>&1) || true
  grep -q "^redirect: $FAKE/pel/hello.txt" <<<"$said" && return 0
  printf '        locate %s said: %s\n' "$1" "$said" >&2
  return 1
}
not_routed() { # director
  ! "$SKEIN" locate --federation "$1" /pel/hello.txt >/dev/null 2>&1
}
skein_pelican_routed() { # director
  "$SKEIN" locate --federation "$1" /skp/hello.txt 2>/dev/null | grep -q "^redirect: $SKP/skp/hello.txt"
}
pelicanfs_reads() { # director port [object path]
  timeout 60 "$PY" - "$1" "$WORK/export/hello.txt" "${2:-/pel/hello.txt}" <<'PYTHON'
import sys
from pelicanfs.core import PelicanFileSystem
port, expected, path = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
fs = PelicanFileSystem(f"pelican://127.0.0.1:{port}")
got = fs.cat(path)
sys.exit(0 if got == expected else f"got {got!r}, want {expected!r}")
PYTHON
}
served_by_fake() {
  grep -q '"GET /pel/hello.txt' "$WORK/logs/fake.log"
}

echo "pelican interop: stand-in at $FAKE registers with ${D[0]} only"
wait_for 60 "director-0 holds the stand-in's ad" routes_to_fake "${D[0]}" || true
for i in 0 1 2; do
  check "director-$i redirects /pel/hello.txt to the stand-in" wait_for 60 "director-$i routes" routes_to_fake "${D[$i]}"
done
check "pelicanfs reads /pel/hello.txt (discovery at director-1)" pelicanfs_reads "${PORTS[1]}"
check "the stand-in served that read" served_by_fake
for i in 0 1 2; do
  check "director-$i redirects /skp/hello.txt to skein origin (protocol pelican)" \
    wait_for 60 "director-$i routes /skp" skein_pelican_routed "${D[$i]}"
done
check "pelicanfs reads /skp/hello.txt (discovery at director-0)" pelicanfs_reads "${PORTS[0]}" /skp/hello.txt

stop director-1
start director-1 "$SKEIN" serve --config "$WORK/director-1.toml"
wait_for 60 "director-1 ready again" "$SKEIN" healthcheck "${D[1]}"
# The stand-in re-advertises only every 10 minutes, so what director-1 routes comes from
# its store (tests/pelican.rs checks that one in-process, with the first request) or
# from its peers' catch-up. Once, on CI, the first request after `ready` did not route
# and the next (pelicanfs, 0.3 s later) did: unexplained, never reproduced here in 46
# restarts, so the check polls briefly and prints what `locate` said if it fails.
routes_to_fake "${D[1]}" || echo "  note  the first request after ready did not route (see above); polling" >&2
check "restarted director-1 still redirects to the stand-in (no re-advertisement)" \
  wait_for 10 "restarted director-1 routes" routes_to_fake "${D[1]}"
check "pelicanfs reads through restarted director-1" pelicanfs_reads "${PORTS[1]}"

stop fake
for i in 0 1 2; do
  check "director-$i stops routing to the withdrawn stand-in" wait_for 60 "director-$i withdrawn" not_routed "${D[$i]}"
done

echo "pelican interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
