#!/usr/bin/env bash
# Benchmark: `strata build` of a Nix closure, next to a plain tar pipeline over the same files.
#
# Makes a ~500 MB closure in a private chroot Nix store ($BENCH_DIR/nix, selected with
# NIX_REMOTE) by `nix-store --add`ing directories copied from /usr (one store path each), then
# times, for each compression:
#   cold:  `strata build` into an empty strata store
#   warm:  the same build again into the same store (every layer cached)
# and, on the same store paths:
#   tar --sort=name -cf - PATHS | zstd -T0 | sha256sum
#   tar --sort=name -cf - PATHS | sha256sum
#
# Run from anywhere:  bench/nix.sh
# Environment:
#   BENCH_DIR     scratch directory (default /var/tmp/strata-bench-nix); the closure is made once
#                 and reused; delete $BENCH_DIR/nix to make a new one
#   TARGET_MB     size of the closure (default 500)
#   COMPRESSIONS  strata compressions to run (default "zstd gzip none")
#   STRATA_ARGS   extra arguments for `strata build`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-nix}
TARGET_MB=${TARGET_MB:-500}
COMPRESSIONS=${COMPRESSIONS:-zstd gzip none}
STRATA_ARGS=${STRATA_ARGS:-}

die() {
    echo "nix.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

for tool in nix nix-store tar zstd sha256sum cargo; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test installs the tools)"
done

export NIX_REMOTE=$BENCH_DIR/nix
export NIX_CONFIG=$'substituters =\nsandbox = false'
mkdir -p "$BENCH_DIR"

# --- the closure ------------------------------------------------------------------------------
PATHS_FILE=$BENCH_DIR/paths
if [ ! -s "$PATHS_FILE" ]; then
    log "making a ${TARGET_MB} MB closure in $NIX_REMOTE"
    SRC=$BENCH_DIR/src
    rm -rf "$SRC" && mkdir -p "$SRC"
    : >"$PATHS_FILE.tmp"
    total=0
    for dir in /usr/lib/x86_64-linux-gnu/* /usr/lib/aarch64-linux-gnu/* /usr/share/* /usr/lib/*; do
        [ -d "$dir" ] && [ ! -L "$dir" ] || continue
        kb=$(du -sk "$dir" | cut -f1)
        [ "$kb" -ge 1024 ] || continue
        name=$(basename "$dir" | tr -c 'A-Za-z0-9+._?=\n-' '_')
        [ -e "$SRC/$name" ] && continue
        cp -a "$dir" "$SRC/$name" 2>/dev/null || continue
        # Store paths hold files, directories and symlinks only, all readable.
        find "$SRC/$name" ! -type f ! -type d ! -type l -delete
        chmod -R u+rwX "$SRC/$name"
        nix-store --add "$SRC/$name" >>"$PATHS_FILE.tmp"
        rm -rf "${SRC:?}/$name"
        total=$((total + kb))
        [ "$total" -lt $((TARGET_MB * 1024)) ] || break
    done
    mv "$PATHS_FILE.tmp" "$PATHS_FILE"
fi
mapfile -t PATHS <"$PATHS_FILE"
PHYSICAL=()
for p in "${PATHS[@]}"; do PHYSICAL+=("$NIX_REMOTE$p"); done
size_mb=$(du -scm "${PHYSICAL[@]}" | tail -1 | cut -f1)
log "closure: ${#PATHS[@]} store paths, ${size_mb} MB"

# --- strata -----------------------------------------------------------------------------------
log "building strata (release)"
cargo build --release --quiet -p strata
STRATA=$ROOT/target/release/strata

SPEC=$BENCH_DIR/strata.toml
{
    echo '[image]'
    echo 'name = "strata-bench/nix"'
    echo
    echo '[base]'
    printf 'nix = { paths = ['
    sep=
    for p in "${PATHS[@]}"; do
        printf '%s"%s"' "$sep" "$p"
        sep=', '
    done
    echo '] }'
} >"$SPEC"

seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

mbps() { echo "scale=0; $size_mb / $1" | bc; }

printf '\n%-28s %10s %10s\n' "what" "seconds" "MB/s"
row() { printf '%-28s %10.2f %10s\n' "$1" "$2" "$(mbps "$2")"; }

for comp in $COMPRESSIONS; do
    store=$BENCH_DIR/store-$comp
    rm -rf "$store" "$BENCH_DIR/out-$comp"
    # shellcheck disable=SC2086
    cold=$(seconds "$STRATA" --store "$store" build "$SPEC" --compression "$comp" \
        --output "oci:$BENCH_DIR/out-$comp" $STRATA_ARGS)
    row "strata $comp (cold)" "$cold"
    # shellcheck disable=SC2086
    warm=$(seconds "$STRATA" --store "$store" build "$SPEC" --compression "$comp" \
        --output "oci:$BENCH_DIR/out-$comp" $STRATA_ARGS)
    printf '%-28s %10.2f\n' "strata $comp (warm)" "$warm"
done

pipe_zstd() { tar --sort=name -cf - "${PHYSICAL[@]}" 2>/dev/null | zstd -T0 -q | sha256sum; }
pipe_none() { tar --sort=name -cf - "${PHYSICAL[@]}" 2>/dev/null | sha256sum; }
row "tar | zstd -T0 | sha256sum" "$(seconds pipe_zstd)"
row "tar | sha256sum" "$(seconds pipe_none)"
