#!/usr/bin/env bash
# Fault tests against the compose federation: SIGKILL, partition and rolling restart of
# directors under load (tests/federation_faults.rs). Builds the image once, brings the
# federation up, runs the three scenarios, prints figures, takes everything down.
# Exit 0 only if no lookup failed and no acknowledged ad was lost.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! docker info >/dev/null 2>&1; then
    echo "fault-tests: SKIPPED: the Docker daemon is not reachable (docker info fails)"
    exit 0
fi
# The debug binary that `cargo test` already built (shared libraries go into the image).
FEDERATION_PROFILE=${FEDERATION_PROFILE:-dev} scripts/federation.sh build
cargo test --locked --test federation_faults -- --ignored --nocapture --test-threads=1
