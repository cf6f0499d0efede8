#!/usr/bin/env bash
# Benchmark: strata layer throughput against tar pipelines, and the warm rebuild time.
#
# Builds an image from a ~500 MB copy of parts of /usr with each compression (cold: empty
# store; warm: the same spec again into the same store) and times, on the same tree in the
# same run:
#   tar --sort=name -C TREE -cf - . | zstd -T0 | sha256sum
#   tar --sort=name -C TREE -cf - . | pigz | sha256sum
#   tar --sort=name -C TREE -cf - . | sha256sum          (no compression: tar + I/O + hash)
# then prints MB/s side by side with the targets of issue 2, item 12:
#   zstd >= 0.85x the zstd pipeline, gzip >= 1x the pigz pipeline, warm rebuild < 0.1 s.
#
# Run from anywhere:  bench/layers.sh        (see bench/README.md)
# Environment:
#   BENCH_DIR   cache and scratch directory (default /var/tmp/strata-bench); the tree is made
#               once under $BENCH_DIR/tree and reused; delete it to make a new one
#   TARGET_MB   size of the tree to make (default 500)
#   RUNS        rounds of cold builds and pipelines, interleaved (default 3; medians reported)
#   WARM_RUNS   timed runs per warm rebuild (default 10)
#   COMPRESSIONS  which strata compressions to run (default "gzip zstd none")
#   SPECS       which specs to build (default "single split"): `single` maps the whole tree
#               with one tree entry (one layer); `split` uses one entry per top directory
#               (several layers, written in parallel)
#   STRATA_ARGS extra arguments for `strata build`, e.g. "--threads 1"
#   QUIET       if 1, wait before each round (at most QUIET_WAIT seconds, default 300) until
#               the machine's CPUs are at least 85% idle for a few seconds, so concurrent work
#               from others disturbs the timings less
#
# Exits 0 whether or not the targets are met (this is a measurement); non-zero on errors.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench}
TARGET_MB=${TARGET_MB:-500}
RUNS=${RUNS:-3}
WARM_RUNS=${WARM_RUNS:-10}
COMPRESSIONS=${COMPRESSIONS:-gzip zstd none}
SPECS=${SPECS:-single split}
STRATA_ARGS=${STRATA_ARGS:-}
QUIET=${QUIET:-0}
QUIET_WAIT=${QUIET_WAIT:-300}

TREE=$BENCH_DIR/tree
WORK=$BENCH_DIR/work
RESULTS=$BENCH_DIR/results

die() {
    echo "layers.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

case "$BENCH_DIR" in
*[[:space:]]*) die "BENCH_DIR must not contain spaces: $BENCH_DIR" ;;
esac

# --- tools ------------------------------------------------------------------------------------
# shellcheck source=lib/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"
install_missing hyperfine=hyperfine pigz=pigz zstd=zstd jq=jq
build_strata

# --- the tree ---------------------------------------------------------------------------------
# shellcheck source=lib/tree.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tree.sh"

if [[ ! -f $BENCH_DIR/tree.done ]]; then
    mkdir -p "$BENCH_DIR"
    rm -f "$BENCH_DIR/tree.done"
    make_usr_tree "$TREE" "$TARGET_MB"
    touch "$BENCH_DIR/tree.done"
fi
TREE_BYTES=$(du -s --apparent-size --block-size=1 "$TREE" | cut -f1)
TREE_FILES=$(find "$TREE" -type f | wc -l)
TREE_ENTRIES=$(find "$TREE" | wc -l)
TREE_MB=$(awk -v b="$TREE_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
log "tree: $TREE_MB MB, $TREE_FILES files, $TREE_ENTRIES entries in all"

# Specs: paths are relative to the spec file, which lives in $BENCH_DIR.
{
    echo '[image]'
    echo 'name = "strata-bench/single"'
    echo '[base]'
    echo 'tree = [{ src = "tree/usr", dest = "/usr" }]'
} >"$BENCH_DIR/single.toml"
{
    echo '[image]'
    echo 'name = "strata-bench/split"'
    echo '[base]'
    echo 'tree = ['
    for dir in "${USR_TREE_DIRS[@]}"; do
        echo "  { src = \"tree$dir\", dest = \"$dir\" },"
    done
    echo ']'
} >"$BENCH_DIR/split.toml"

# --- timing -----------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK" "$RESULTS"
OUT_DIR=$RESULTS/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# Reads every file once so every timed command starts with the tree in the page cache (GNU tar
# skips reading file data when writing straight to /dev/null, hence the cat).
warm_cache() { tar -C "$TREE" -cf - . | cat >/dev/null; }

# busy_percent: how busy the CPUs were over the next two seconds.
busy_percent() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", 100 * busy / (busy + idle + 1e-9) }'
}
# wait_quiet: with QUIET=1, waits until the CPUs are idle twice in a row (or QUIET_WAIT passes).
wait_quiet() {
    ((QUIET)) || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) calm=0 busy
    while ((SECONDS < deadline)); do
        busy=$(busy_percent)
        if ((busy < 15)); then
            ((++calm >= 2)) && return 0
        else
            calm=0
            log "waiting for a quiet machine (CPUs $busy% busy)"
        fi
    done
    log "the machine stayed busy for ${QUIET_WAIT}s; measuring anyway"
    NOISY_ROUNDS=$((NOISY_ROUNDS + 1))
}
NOISY_ROUNDS=0

# timed NAME CMD: runs CMD (a bash command line, pipefail on) once and appends
# "real user sys" seconds to NAME.times.
timed() {
    local name=$1 cmd=$2 t
    t=$({ time bash -o pipefail -c "$cmd" >/dev/null 2>>"$OUT_DIR/commands.log"; } 2>&1) ||
        die "failed: $cmd (see $OUT_DIR/commands.log)"
    echo "$t" >>"$OUT_DIR/$name.times"
}
TIMEFORMAT='%R %U %S'

# median FILE COLUMN: the median of a column of numbers.
median() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" '{ v[NR] = $c }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# cpu NAME: median (user + sys) / real, as a percentage of one core.
cpu() { awk '{ print ($2 + $3) / $1 * 100 }' "$OUT_DIR/$1.times" >"$OUT_DIR/$1.cpu" && median "$OUT_DIR/$1.cpu" 1; }

strata_build() { # SPEC COMPRESSION STORE OUT
    echo "$STRATA --store $3 build $BENCH_DIR/$1.toml --output oci:$4 --compression $2 $STRATA_ARGS"
}
declare -A PIPE=(
    [zstd]="tar --sort=name -C $TREE -cf - . | zstd -T0 | sha256sum"
    [gzip]="tar --sort=name -C $TREE -cf - . | pigz | sha256sum"
    [none]="tar --sort=name -C $TREE -cf - . | sha256sum"
)
declare -A PIPE_NAME=(
    [zstd]="tar|zstd -T0|sha256sum"
    [gzip]="tar|pigz|sha256sum"
    [none]="tar|sha256sum"
)

# Cold builds and pipelines, interleaved round by round so that load from other work on the
# machine falls on both sides alike. Each cold build starts from an empty store and writes a
# fresh oci: directory.
declare -A BLOB_BYTES
for ((round = 1; round <= RUNS; round++)); do
    wait_quiet
    warm_cache
    for c in $COMPRESSIONS; do
        for spec in $SPECS; do
            log "round $round/$RUNS: strata build, $spec, $c (cold)"
            store=$WORK/store-$spec-$c
            out=$WORK/out-$spec-$c
            rm -rf "$store" "$out"
            timed "cold-$spec-$c" "$(strata_build "$spec" "$c" "$store" "$out")"
            BLOB_BYTES[$spec-$c]=$(du -s --apparent-size --block-size=1 "$out/blobs" | cut -f1)
        done
        log "round $round/$RUNS: ${PIPE[$c]}"
        timed "pipe-$c" "${PIPE[$c]}"
    done
done

# Warm rebuilds: the unchanged spec into the store of the last cold build, to a fresh output
# directory each time (removed before each run, untimed).
for spec in $SPECS; do
    for c in $COMPRESSIONS; do
        wait_quiet
        log "strata build, $spec, $c (warm)"
        out=$WORK/out-$spec-$c
        hyperfine --style basic -N --warmup 2 --runs "$WARM_RUNS" --prepare "rm -rf $out" \
            --export-json "$OUT_DIR/warm-$spec-$c.json" \
            "$(strata_build "$spec" "$c" "$WORK/store-$spec-$c" "$out")" >&2
    done
done

# --- report -----------------------------------------------------------------------------------
declare -A RATIO_TARGET=([zstd]=0.85 [gzip]=1.00)
WARM_TARGET=0.1

mbps() { awk -v b="$TREE_BYTES" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {
    ok = (op == ">=") ? (v >= t) : (v < t); print ok ? "PASS" : "MISS" }'; }

report() {
    local dirty=""
    git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || dirty="+uncommitted changes"
    echo "strata layers benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: nproc $(nproc), $(lscpu | sed -n 's/^Model name: *//p' | head -1)," \
        "$(awk '/MemTotal/ { printf "%.0f GB RAM", $2 / 1e6 }' /proc/meminfo)"
    echo "load average: $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end" \
        "(QUIET=$QUIET; steps measured on a busy machine after waiting: $NOISY_ROUNDS)"
    echo "strata: $(git -C "$ROOT" rev-parse --short HEAD)$dirty${STRATA_ARGS:+, build args: $STRATA_ARGS}"
    echo "tree: $TREE_MB MB in $TREE_FILES files ($TREE_ENTRIES entries), $TREE"
    echo "cold builds and pipelines: median of $RUNS interleaved runs; warm: median of $WARM_RUNS" \
        "runs; MB = 10^6 bytes of file data; cpu = (user + sys) / wall"
    echo
    printf '%-6s %-4s %7s %7s %5s %8s  %-22s %7s %7s %5s  %6s  %-8s %s\n' \
        spec comp "cold s" "MB/s" cpu "blob MB" baseline "s" "MB/s" cpu ratio target result
    local spec c s p ratio target res
    for c in $COMPRESSIONS; do
        p=$(median "$OUT_DIR/pipe-$c.times" 1)
        for spec in $SPECS; do
            s=$(median "$OUT_DIR/cold-$spec-$c.times" 1)
            ratio=$(awk -v s="$s" -v p="$p" 'BEGIN { printf "%.2f", p / s }')
            if [[ -n ${RATIO_TARGET[$c]:-} ]]; then
                target=">=${RATIO_TARGET[$c]}x"
                res=$(verdict "$ratio" "${RATIO_TARGET[$c]}" ">=")
            else
                target="(info)"
                res=""
            fi
            printf '%-6s %-4s %7.2f %7s %4.0f%% %8.1f  %-22s %7.2f %7s %4.0f%%  %5sx  %-8s %s\n' \
                "$spec" "$c" "$s" "$(mbps "$s")" "$(cpu "cold-$spec-$c")" \
                "$(awk -v b="${BLOB_BYTES[$spec-$c]}" 'BEGIN { print b / 1e6 }')" \
                "${PIPE_NAME[$c]}" "$p" "$(mbps "$p")" "$(cpu "pipe-$c")" "$ratio" "$target" "$res"
        done
    done
    echo
    printf '%-6s %-4s %8s %8s %8s  %-8s %s\n' spec comp "warm s" "min s" "max s" target result
    for spec in $SPECS; do
        for c in $COMPRESSIONS; do
            read -r s lo hi < <(jq -r '.results[0] | "\(.median) \(.min) \(.max)"' \
                "$OUT_DIR/warm-$spec-$c.json")
            printf '%-6s %-4s %8.3f %8.3f %8.3f  %-8s %s\n' "$spec" "$c" "$s" "$lo" "$hi" \
                "<${WARM_TARGET}s" "$(verdict "$s" "$WARM_TARGET" "<")"
        done
    done
    echo
    echo "raw timings: $OUT_DIR"
}

report | tee "$OUT_DIR/report.txt"
rm -rf "$WORK"
