#!/usr/bin/env bash
# Fills fuzz/corpus/<target> of every target with seeds: the RFC 4475/5118 torture messages
# from the shared vectors (read-only, never committed; CPM_VECTORS overrides their location)
# and the typical messages of cpm-perf. A message is also a one-message stream, so every target
# gets the same seeds. The corpus directories are gitignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
vectors="${CPM_VECTORS:-$root/../shared/vectors}"
# A worktree sits one level deeper than the main checkout.
[ -n "${CPM_VECTORS:-}" ] || [ -d "$vectors" ] || vectors="$root/../../shared/vectors"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT

if [ -d "$vectors/sip-torture" ]; then
    for f in "$vectors"/sip-torture/*/*; do
        # rfc4475/foo.dat becomes rfc4475-foo.dat
        set="$(basename "$(dirname "$f")")"
        cat "$f" >"$seeds/$set-$(basename "$f")"
    done
    echo "seed.sh: $(ls "$seeds" | wc -l) torture vectors from $vectors/sip-torture"
else
    echo "seed.sh: no vectors at $vectors/sip-torture (set CPM_VECTORS); perf consts only" >&2
fi
cargo run -q --manifest-path "$root/Cargo.toml" -p cpm-perf --bin write-seeds -- "$seeds"

for target in "$here"/fuzz_targets/*.rs; do
    corpus="$here/corpus/$(basename "$target" .rs)"
    mkdir -p "$corpus"
    cp "$seeds"/* "$corpus/"
    echo "seed.sh: $(ls "$corpus" | wc -l) files in ${corpus#"$root/"}"
done
