#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) on one core, then prints how
# many inputs each ran. Not part of CI. Needs cargo-fuzz (`cargo install cargo-fuzz`);
# its sanitizer flags are nightly-only, so the stable toolchain is told to allow them.
# Findings land in fuzz/artifacts/<target>/; new corpus entries in a scratch directory
# (the committed seeds in fuzz/corpus/<target>/ stay small).
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
targets=(ad_json stored_value object_path)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
status=0
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        result="ok"
    else
        result="FOUND A CRASH (see fuzz/artifacts/$target/)"
        status=1
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
    echo "$target: $runs inputs in ${seconds}s: $result"
    [ "$result" = ok ] || tail -40 "$log"
done
exit "$status"
