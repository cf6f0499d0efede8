#!/usr/bin/env bash
# Benchmark: `strata build` of a Debian bookworm dev set (git curl ca-certificates sudo python3),
# next to mmdebstrap making the same system, live against the Debian mirror, in the same run:
#   cold:     `strata build` into an empty store (indices, resolution, downloads, extraction,
#             layers, the configure layer: maintainer scripts run in the sandbox; no lock file,
#             so it resolves in memory)
#   warm:     the same build again into the same store (every layer cached, no script runs)
#   add-one:  one package (jq) added to [user], built into the same warm store (its .debs are
#             downloaded; the base layers and the download cache are reused; the package set
#             changed, so the configure layer is made again)
#   declarative cold / warm: the same with `configure = false` (no maintainer scripts)
#   mmdebstrap --variant=apt --include=git,curl,ca-certificates,sudo,python3 bookworm OUT.tar
# and prints the ratios (targets: configured cold >= 3x and declarative cold >= 6x faster than
# mmdebstrap; add-one under 1 s).
#
# Then the large workspace (issue 12): a developer set of 250+ packages (build-essential,
# python3-pip, golang-go, docker.io, systemd, vim, git, fish, ripgrep, ...) in [base] and a
# dotfile in [user], written to an OCI layout with uncompressed layers (blobs hard-linked from
# the store, as `docker build` leaves its image in Docker's store), three measures:
#   large cold:     configured `strata build` into an empty store, no lock, vs
#                   `mmdebstrap --variant=apt --include=SET bookworm OUT.tar` (target >= 3x)
#   large add-one:  `strata lock`, then jq added to [user] (locked base; only jq's scripts and
#                   the base triggers it activates run), vs `docker build` of
#                   `FROM <mmdebstrap's tar, docker import-ed>` +
#                   `RUN apt-get install -y --no-install-recommends jq` on Docker Engine
#                   (target <= 2 s and >= 8x)
#   large dotfile:  `strata lock` again, then only the dotfile changed (target <= 1 s; checked:
#                   no configure layer made)
# mmdebstrap keeps its apt lists here (--skip=cleanup/apt/lists) so the Dockerfile's apt-get
# needs no `apt-get update`, as on a cached base image.
#
# Run from anywhere:  bench/debian.sh   (as root: mmdebstrap runs in root mode; it is installed
# with apt-get when missing)
# Environment:
#   BENCH_DIR    scratch directory (default /var/tmp/strata-bench-debian)
#   ROUNDS       how many times each measurement is made; the median is reported (default 1)
#   STRATA_ARGS  extra arguments for `strata build`
#   SETS         which rows to run: `dev large` (default), `dev` or `large`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-debian}
ROUNDS=${ROUNDS:-1}
STRATA_ARGS=${STRATA_ARGS:-}
SETS=${SETS:-dev large}
PACKAGES=(git curl ca-certificates sudo python3)
# The large workspace's [base]: a developer's machine (with dependencies, 250+ packages).
LARGE=(build-essential python3-pip python3-venv golang-go git vim systemd sudo man-db ripgrep
    fish curl openssh-client docker.io ansible less ca-certificates locales procps iproute2
    tmux make gdb strace wget unzip rsync bash-completion)

die() {
    echo "debian.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap"
    apt-get install -y mmdebstrap >/dev/null || die "cannot install mmdebstrap"
fi
command -v cargo >/dev/null || die "cargo is missing"
unset STRATA_DEBIAN_CACHE

log "building strata (release)"
cargo build --release -q -p strata
STRATA=$ROOT/target/release/strata

mkdir -p "$BENCH_DIR/spec"
# Stores and trees of earlier rounds go to the trash, removed when the script ends: ext4 skips
# the inodes it freed in the last minutes when it allocates new ones, and the scan for them
# slowed whichever tool wrote files first after a large `rm -rf`.
TRASH=$BENCH_DIR/.trash
rm -rf "$TRASH"
mkdir -p "$TRASH"
trap 'rm -rf "$TRASH"' EXIT
discard() {
    local p
    for p in "$@"; do
        if [ -e "$p" ]; then mv "$p" "$(mktemp -d "$TRASH/XXXXXX")/"; fi
    done
}
SPEC=$BENCH_DIR/spec/strata.toml
STORE=$BENCH_DIR/store
list() { printf '"%s", ' "$@" | sed 's/, $//'; }
# CONFIGURE: empty (the default: maintainer scripts run) or `, configure = false`.
CONFIGURE=
write_spec() {
    cat >"$SPEC" <<EOF
[image]
name = "bench-debian"

[base]
debian = { packages = [$(list "${PACKAGES[@]}")]$CONFIGURE }

[user]
debian = { packages = [$(list "$@")]$CONFIGURE }
EOF
}

now() { date +%s.%N; }
# time_build LABEL: runs strata build, prints the seconds it took.
time_build() {
    local t0 t1
    t0=$(now)
    # shellcheck disable=SC2086
    "$STRATA" --store "$STORE" build "$SPEC" --output "docker-archive:$BENCH_DIR/strata.tar" \
        $STRATA_ARGS >/dev/null 2>"$BENCH_DIR/$1.log" || {
        cat "$BENCH_DIR/$1.log" >&2
        die "strata build ($1) failed"
    }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# spread VALUES...: "min-max" of the rounds, for the table.
spread() { printf '%s\n' "$@" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }

dev_set() {
cold=() warm=() addone=() dcold=() dwarm=() daddone=() mmdeb=()
for round in $(seq "$ROUNDS"); do
    log "round $round: strata cold"
    discard "$STORE" "$BENCH_DIR/spec/strata.lock"
    CONFIGURE=
    write_spec less
    cold+=("$(time_build cold)")
    log "round $round: strata warm"
    warm+=("$(time_build warm)")
    log "round $round: strata with jq added to [user]"
    write_spec less jq
    addone+=("$(time_build addone)")
    if grep -q 'note: the Debian maintainer scripts' "$BENCH_DIR/cold.log"; then
        die "the configured build fell back to the declarative image: $(cat "$BENCH_DIR/cold.log")"
    fi

    log "round $round: strata cold, configure = false"
    discard "$STORE"
    CONFIGURE=", configure = false"
    write_spec less
    dcold+=("$(time_build dcold)")
    log "round $round: strata warm, configure = false"
    dwarm+=("$(time_build dwarm)")
    # Issue 3's add-one: the base comes from the lock, only the user half is resolved again.
    log "round $round: strata lock, then jq added to [user], configure = false"
    "$STRATA" --store "$STORE" lock "$SPEC" >"$BENCH_DIR/lock.log" 2>&1 || {
        cat "$BENCH_DIR/lock.log" >&2
        die "strata lock failed"
    }
    write_spec less jq
    daddone+=("$(time_build daddone)")
    rm -f "$BENCH_DIR/spec/strata.lock"

    log "round $round: mmdebstrap"
    rm -f "$BENCH_DIR/mmdebstrap.tar"
    t0=$(now)
    mmdebstrap --quiet --variant=apt --include="$(
        IFS=,
        echo "${PACKAGES[*]}"
    )" bookworm "$BENCH_DIR/mmdebstrap.tar" >"$BENCH_DIR/mmdebstrap.log" 2>&1 || {
        cat "$BENCH_DIR/mmdebstrap.log" >&2
        die "mmdebstrap failed"
    }
    t1=$(now)
    mmdeb+=("$(echo "$t1 - $t0" | bc -l)")
done

c=$(printf '%s\n' "${cold[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
a=$(printf '%s\n' "${addone[@]}" | median)
dc=$(printf '%s\n' "${dcold[@]}" | median)
dw=$(printf '%s\n' "${dwarm[@]}" | median)
da=$(printf '%s\n' "${daddone[@]}" | median)
m=$(printf '%s\n' "${mmdeb[@]}" | median)
packages=$(grep -c '' <<<"$("$STRATA" --store "$STORE" inspect "docker-archive:$BENCH_DIR/strata.tar" | grep -o 'deb:[^ ]*' || true)")
printf '\n%-44s %9s %10s %13s\n' "measurement (median of $ROUNDS)" "seconds" "vs mmdeb" "rounds"
row() { printf '%-44s %9.2f %9.1fx %13s\n' "$1" "$2" "$(echo "$m / $2" | bc -l)" "$3"; }
row "strata configured cold (empty store, no lock)" "$c" "$(spread "${cold[@]}")"
row "strata configured warm (all layers cached)" "$w" "$(spread "${warm[@]}")"
row "strata configured warm, jq added to [user]" "$a" "$(spread "${addone[@]}")"
row "strata declarative cold (configure = false)" "$dc" "$(spread "${dcold[@]}")"
row "strata declarative warm (configure = false)" "$dw" "$(spread "${dwarm[@]}")"
row "strata declarative, locked base, jq added" "$da" "$(spread "${daddone[@]}")"
row "mmdebstrap --variant=apt" "$m" "$(spread "${mmdeb[@]}")"
echo "store objects in the last image: $packages; image $(du -h "$BENCH_DIR/strata.tar" | cut -f1)," \
    "mmdebstrap tar $(du -h "$BENCH_DIR/mmdebstrap.tar" | cut -f1)"
awk -v c="$c" -v dc="$dc" -v m="$m" -v a="$a" -v da="$da" 'BEGIN {
    printf "targets: configured cold >= 3x faster than mmdebstrap: %s (%.1fx); declarative cold >= 6x: %s (%.1fx); declarative add-one under 1 s: %s (%.2f s; configured add-one %.2f s)\n",
        (m / c >= 3 ? "met" : "NOT met"), m / c, (m / dc >= 6 ? "met" : "NOT met"), m / dc,
        (da < 1 ? "met" : "NOT met"), da, a
}'
}

# The large workspace's spec: LARGE in [base], the dotfile and the given packages in [user].
write_large_spec() {
    local user=
    (($#)) && user="debian = { packages = [$(list "$@")] }"
    cat >"$SPEC" <<SPEC
[image]
name = "bench-large"

[base]
debian = { packages = [$(list "${LARGE[@]}")] }

[user]
$user
tree = [{ src = "dotfiles/.bashrc", dest = "/root/.bashrc", mode = 0o644 }]
SPEC
}

# time_large LABEL: a large-workspace build to an OCI layout (uncompressed), its --json kept.
time_large() {
    local t0 t1
    t0=$(now)
    # shellcheck disable=SC2086
    "$STRATA" --store "$STORE" build "$SPEC" --output "oci:$BENCH_DIR/large-oci" \
        --compression none --json $STRATA_ARGS >"$BENCH_DIR/$1.json" 2>"$BENCH_DIR/$1.log" || {
        cat "$BENCH_DIR/$1.log" >&2
        die "strata build ($1) failed"
    }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

# made PART LABEL: whether the build LABEL made (did not find) a PART layer.
made() {
    jq -e --arg p "$1" '[.layers[] | select(.part == $p and .cached == false)] | length > 0' \
        "$BENCH_DIR/$2.json" >/dev/null
}

large_set() {
    command -v docker >/dev/null || die "docker is missing (the large add-one baseline)"
    command -v jq >/dev/null || die "jq is missing"
    mkdir -p "$BENCH_DIR/spec/dotfiles" "$BENCH_DIR/docker"
    lcold=() laddone=() lnext=() ldot=() lmmdeb=() ldocker=()
    for round in $(seq "$ROUNDS"); do
        log "round $round: large workspace, strata configured cold"
        discard "$STORE" "$BENCH_DIR/spec/strata.lock" "$BENCH_DIR/large-oci"
        echo "# round $round" >"$BENCH_DIR/spec/dotfiles/.bashrc"
        write_large_spec
        lcold+=("$(time_large lcold)")
        if grep -q 'note: the Debian maintainer scripts' "$BENCH_DIR/lcold.log"; then
            die "the configured build fell back to the declarative image: $(cat "$BENCH_DIR/lcold.log")"
        fi
        "$STRATA" --store "$STORE" lock "$SPEC" >"$BENCH_DIR/lock.log" 2>&1 || {
            cat "$BENCH_DIR/lock.log" >&2
            die "strata lock failed"
        }
        log "round $round: large workspace, jq added to [user] (locked base)"
        write_large_spec jq
        laddone+=("$(time_large laddone)")
        made base-configure laddone && die "adding jq to [user] re-ran the base configure layer"
        made user-configure laddone || die "adding jq to [user] made no user configure layer"
        # A further change to [user]: the configured base is kept unpacked now (the first
        # user change over a new base unpacked it once), so only tree's layers are unpacked.
        "$STRATA" --store "$STORE" lock "$SPEC" >"$BENCH_DIR/lock.log" 2>&1 || {
            cat "$BENCH_DIR/lock.log" >&2
            die "strata lock failed"
        }
        log "round $round: large workspace, tree added to [user] too (kept base)"
        write_large_spec jq tree
        lnext+=("$(time_large lnext)")
        made base-configure lnext && die "adding tree to [user] re-ran the base configure layer"
        made user-configure lnext || die "adding tree to [user] made no user configure layer"
        # The lock covers jq too before the dotfile changes (else the user half is resolved
        # again from the indices: ~1.4 s more, measured).
        "$STRATA" --store "$STORE" lock "$SPEC" >"$BENCH_DIR/lock.log" 2>&1 || {
            cat "$BENCH_DIR/lock.log" >&2
            die "strata lock failed"
        }
        log "round $round: large workspace, a dotfile changed"
        echo "alias ll='ls -l' # round $round" >>"$BENCH_DIR/spec/dotfiles/.bashrc"
        ldot+=("$(time_large ldot)")
        if made base-configure ldot || made user-configure ldot; then
            die "changing a dotfile ran maintainer scripts"
        fi
        made user-content ldot || die "changing a dotfile made no user content layer"
        rm -f "$BENCH_DIR/spec/strata.lock"

        log "round $round: large workspace, mmdebstrap"
        rm -f "$BENCH_DIR/mmdebstrap-large.tar"
        t0=$(now)
        mmdebstrap --quiet --variant=apt --skip=cleanup/apt/lists --include="$(
            IFS=,
            echo "${LARGE[*]}"
        )" bookworm "$BENCH_DIR/mmdebstrap-large.tar" >"$BENCH_DIR/mmdebstrap-large.log" 2>&1 || {
            cat "$BENCH_DIR/mmdebstrap-large.log" >&2
            die "mmdebstrap failed"
        }
        t1=$(now)
        lmmdeb+=("$(echo "$t1 - $t0" | bc -l)")

        log "round $round: large workspace, docker build of jq on the imported mmdebstrap base"
        docker rmi -f strata-bench-large-jq strata-bench-large-base >/dev/null 2>&1 || true
        docker import "$BENCH_DIR/mmdebstrap-large.tar" strata-bench-large-base >/dev/null
        printf 'FROM strata-bench-large-base\nRUN apt-get install -y --no-install-recommends jq\n' \
            >"$BENCH_DIR/docker/Dockerfile"
        t0=$(now)
        DOCKER_BUILDKIT=0 docker build --no-cache -q -t strata-bench-large-jq "$BENCH_DIR/docker" \
            >"$BENCH_DIR/docker-build.log" 2>&1 || {
            cat "$BENCH_DIR/docker-build.log" >&2
            die "docker build failed"
        }
        t1=$(now)
        ldocker+=("$(echo "$t1 - $t0" | bc -l)")
        docker run --rm strata-bench-large-jq jq --version >/dev/null ||
            die "jq does not run in docker's image"
        docker rmi -f strata-bench-large-jq strata-bench-large-base >/dev/null 2>&1 || true
    done

    lc=$(printf '%s\n' "${lcold[@]}" | median)
    la=$(printf '%s\n' "${laddone[@]}" | median)
    ln=$(printf '%s\n' "${lnext[@]}" | median)
    ld=$(printf '%s\n' "${ldot[@]}" | median)
    lm=$(printf '%s\n' "${lmmdeb[@]}" | median)
    lk=$(printf '%s\n' "${ldocker[@]}" | median)
    npk=$(jq '[.layers[].objects[] | select(startswith("deb:"))] | length' "$BENCH_DIR/lcold.json")
    printf '\n%-48s %9s %10s %13s\n' "large workspace, $npk packages (median of $ROUNDS)" \
        "seconds" "ratio" "rounds"
    lrow() { printf '%-48s %9.2f %9.1fx %13s\n' "$1" "$2" "$(echo "$3 / $2" | bc -l)" "$4"; }
    lrow "strata configured cold (ratio: vs mmdebstrap)" "$lc" "$lm" "$(spread "${lcold[@]}")"
    lrow "mmdebstrap --variant=apt" "$lm" "$lm" "$(spread "${lmmdeb[@]}")"
    lrow "strata, jq added to [user] (vs docker build)" "$la" "$lk" "$(spread "${laddone[@]}")"
    lrow "strata, then tree added too (vs docker build)" "$ln" "$lk" "$(spread "${lnext[@]}")"
    lrow "docker build: FROM base, RUN apt-get install jq" "$lk" "$lk" "$(spread "${ldocker[@]}")"
    lrow "strata, a dotfile in [user] changed" "$ld" "$ld" "$(spread "${ldot[@]}")"
    echo "image $(du -sh "$BENCH_DIR/large-oci" | cut -f1), mmdebstrap tar" \
        "$(du -h "$BENCH_DIR/mmdebstrap-large.tar" | cut -f1)"
    awk -v c="$lc" -v m="$lm" -v a="$la" -v k="$lk" -v d="$ld" 'BEGIN {
        printf "targets: large cold >= 3x mmdebstrap: %s (%.1fx); add-one <= 2 s: %s (%.2f s) and >= 8x docker build: %s (%.1fx); dotfile <= 1 s: %s (%.2f s)\n",
            (m / c >= 3 ? "met" : "NOT met"), m / c, (a <= 2 ? "met" : "NOT met"), a,
            (k / a >= 8 ? "met" : "NOT met"), k / a, (d <= 1 ? "met" : "NOT met"), d
    }'
}

for set in $SETS; do
    case $set in
    dev) dev_set ;;
    large) large_set ;;
    *) die "SETS: unknown set \`$set' (dev, large)" ;;
    esac
done
