#!/usr/bin/env bash
# Builds the one release skein binary that scripts/federation.sh (the Docker image) and
# scripts/local-federation.sh (processes on this machine) both use, and prints its path.
# Static (crt-static; glibc >= 2.34 resolves names without NSS modules), for the host
# target. The first build takes a while (about 7.5 minutes on 2 cores: fat LTO, one
# codegen unit); later ones reuse it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
printf 'build-skein: cargo build --release --target %s (static; the first build takes minutes)\n' "$host" >&2
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$host" --bin skein >&2)
echo "${CARGO_TARGET_DIR:-$root/target}/$host/release/skein"
