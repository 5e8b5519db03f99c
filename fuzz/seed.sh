#!/usr/bin/env bash
# Fills fuzz/corpus/sip_parse with seeds: the RFC 4475/5118 torture messages from the shared
# vectors (read-only, never committed; CPM_VECTORS overrides their location) and the typical
# messages of cpm-perf. The corpus directory is gitignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
corpus="$here/corpus/sip_parse"
vectors="${CPM_VECTORS:-$root/../shared/vectors}"
mkdir -p "$corpus"

if [ -d "$vectors/sip-torture" ]; then
    n=0
    while IFS= read -r -d '' f; do
        # Flatten rfc4475/foo.dat to rfc4475-foo.dat.
        rel="${f#"$vectors/sip-torture/"}"
        cp "$f" "$corpus/${rel//\//-}"
        chmod u+w "$corpus/${rel//\//-}"
        n=$((n + 1))
    done < <(find "$vectors/sip-torture" -type f -print0)
    echo "seed.sh: $n torture vectors from $vectors/sip-torture"
else
    echo "seed.sh: no vectors at $vectors/sip-torture (set CPM_VECTORS); using perf consts only" >&2
fi

cargo run -q --manifest-path "$root/Cargo.toml" -p cpm-perf --bin write-seeds -- "$corpus"
echo "seed.sh: $(find "$corpus" -type f | wc -l) files in $corpus"
