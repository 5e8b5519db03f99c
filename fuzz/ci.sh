#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a while on its corpus.
#
#   fuzz/ci.sh [SECONDS]        # per target, default 60; 0 runs the seeds only (CI)
#
# Stable toolchain only: targets are built without a sanitizer (`-s none`); the engine forbids
# unsafe code, so libFuzzer still finds what matters here (panics, overflows with
# debug assertions, timeouts, OOM). SANITIZER=address builds with ASan through RUSTC_BOOTSTRAP=1.
# Seeds come from seed.sh (shared vectors when present, plus the perf consts). Crash inputs are
# left in fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
secs="${1:-60}"
sanitizer="${SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
    # Cargo caches rustc's target info without RUSTC_BOOTSTRAP in the key.
    export CARGO_CACHE_RUSTC_INFO=0
fi

echo "== seeds"
./seed.sh

echo "== build (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer"

status=0
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" "artifacts/$target"
    if [ "$secs" = 0 ]; then
        # Seeds only: a deterministic regression run over the corpus (what CI does).
        echo "== run $target over its seeds"
        limit=(-runs=0)
    else
        echo "== run $target for ${secs}s"
        limit=(-max_total_time="$secs")
    fi
    if ! cargo fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
        "${limit[@]}" -max_len=65536 -timeout=10 -print_final_stats=1; then
        echo "!! $target failed; inputs in fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
