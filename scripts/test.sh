#!/usr/bin/env bash
# Runs every test Skein has, installing what they need first. This is the README's test
# command and all that .ci/run calls. Long fuzzing and full benchmarks are on demand
# (scripts/fuzz.sh, scripts/bench.sh), not here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "toolchain"
cargo --version
rustup component list --installed 2>/dev/null | grep -qE '^(rustfmt|clippy)' || rustup component add rustfmt clippy
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

step "format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "unit, handler, cluster and CLI tests"
cargo nextest run --locked --no-fail-fast

step "the status page in headless Chromium (screenshot: docs/status-page.png)"
scripts/ui-test.sh

step "a real Pelican client (pelicanfs) against a Skein federation over TLS"
scripts/compat-test.sh

step "a Pelican server stand-in (PyJWT, own key and tokens) registers with three Skein directors"
scripts/pelican-interop.sh

step "fault tests against the docker compose federation (kill, partition, rolling restart)"
scripts/fault-tests.sh

step "done"
