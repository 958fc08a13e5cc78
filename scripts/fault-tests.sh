#!/usr/bin/env bash
# Fault tests against the compose federation: SIGKILL, partition and rolling restart of
# directors, a full disk on director-c, director-c's store damaged on its volume, and
# director-a restarted with its clock an hour behind, under load
# (tests/federation_faults.rs). Builds the image once, brings the federation up, runs the
# scenarios, prints figures, takes everything down. The full-disk and damage scenarios
# mount a 64 MiB tmpfs on the host (/tmp/skein-fault-disk-c) for director-c's data, so
# they need root; without it they print SKIPPED.
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
