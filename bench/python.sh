#!/usr/bin/env bash
# Benchmark: a sizeable Python tool (ansible, from the live PyPI) in [user] on a Debian bookworm
# base (python3 python3-pip, from the live Debian mirror), built by strata, next to a Dockerfile
# that runs `pip3 install` on a cached base image of the same Debian packages, in the same run:
#   strata cold:          `strata lock` then `strata build` into an empty store (so empty
#                         Debian, download, wheel and uv caches; the Python source reads the
#                         image's Python from the Debian lock, so the lock is part of it): both
#                         resolutions, every download, the venv, the layers, the configure layer
#   strata warm:          the same build again into the same store
#   strata add-one:       jmespath added to [user] python and built into the same warm store,
#                         with the lock of the cold build (the user half no longer matches it,
#                         so it is resolved again in memory; the base comes from the lock)
#   strata python cold:   a fresh store holding only the built Debian base (a build without
#                         [user] python, untimed), then ansible added, locked and built: the
#                         counterpart of the Dockerfile's build on its cached base
#   docker cold:          `docker build --no-cache` of
#                           FROM strata-bench/python-base:bookworm
#                           RUN pip3 install --break-system-packages ansible
#   docker add-one:       the same with `ansible jmespath` (the base cached, the RUN made again)
# The base image is made once with `mmdebstrap --variant=apt --include=python3,python3-pip
# bookworm` and `docker import`ed (the Docker Engine has no registry to pull from); it gets the
# host's CA bundle, since this machine's egress goes through a TLS-intercepting proxy. It is
# kept between runs (delete it with `docker rmi strata-bench/python-base:bookworm`).
# Prints seconds and the ratios (targets: cold >= 2x faster than the Dockerfile; warm add-one
# <= 2 s), then checks that strata's image runs `ansible --version` with a bare PATH lookup.
#
# Run from anywhere, as root (mmdebstrap's root mode, docker):  bench/python.sh
# Environment:
#   BENCH_DIR    scratch directory (default /var/tmp/strata-bench-python)
#   ROUNDS       how many times each measurement is made; the median is reported (default 1)
#   STRATA_ARGS  extra arguments for `strata build`
#   TOOL, ADD    the Python requirement measured (default ansible) and the one added (jmespath)
#   DOCKER_NET   `docker build --network` value; default: the bridge if a container reaches
#                PyPI through it, else host
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-python}
ROUNDS=${ROUNDS:-1}
STRATA_ARGS=${STRATA_ARGS:-}
TOOL=${TOOL:-ansible}
ADD=${ADD:-jmespath}
PACKAGES=(python3 python3-pip)
BASE_IMAGE=strata-bench/python-base:bookworm
DOCKER_IMAGE=strata-bench/python-docker

die() {
    echo "python.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }
# shellcheck source=bench/lib/setup.sh
. bench/lib/setup.sh

install_missing mmdebstrap=mmdebstrap jq=jq bc=bc
for tool in docker uv cargo; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test installs uv)"
done
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (docker info)"
unset STRATA_DEBIAN_CACHE
build_strata

mkdir -p "$BENCH_DIR/spec" "$BENCH_DIR/docker"
SPEC=$BENCH_DIR/spec/strata.toml
STORE=$BENCH_DIR/store
list() { printf '"%s", ' "$@" | sed 's/, $//'; }
# write_spec [PYTHON_REQUIREMENT...]: the Debian base, and a [user] python section if any.
write_spec() {
    {
        printf '[image]\nname = "bench-python"\n\n[base]\n'
        printf 'debian = { packages = [%s] }\n' "$(list "${PACKAGES[@]}")"
        if (($#)); then
            printf '\n[user]\npython = { packages = [%s] }\n' "$(list "$@")"
        fi
    } >"$SPEC"
}

now() { date +%s.%N; }
# timed LABEL COMMAND...: runs COMMAND with its output in $BENCH_DIR/LABEL.log, prints seconds.
timed() {
    local label=$1 t0 t1
    shift
    t0=$(now)
    "$@" >"$BENCH_DIR/$label.log" 2>&1 || {
        tail -30 "$BENCH_DIR/$label.log" >&2
        die "$label failed: $*"
    }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
strata_build() {
    # shellcheck disable=SC2086
    "$STRATA" --store "$STORE" build "$SPEC" --output "docker-archive:$BENCH_DIR/strata.tar" \
        $STRATA_ARGS
}
strata_lock_build() {
    "$STRATA" --store "$STORE" lock "$SPEC" && strata_build
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { printf '%s\n' "$@" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }

# --- the Dockerfile's base image (cached between runs, untimed in the ratios) ------------------
base_made=
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "making $BASE_IMAGE with mmdebstrap and docker import"
    t0=$(now)
    # shellcheck disable=SC2016
    mmdebstrap --quiet --variant=apt --include="$(
        IFS=,
        echo "${PACKAGES[*]}"
    )" --customize-hook='upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt' \
        bookworm - 2>"$BENCH_DIR/mmdebstrap.log" | docker import - "$BASE_IMAGE" >/dev/null || {
        cat "$BENCH_DIR/mmdebstrap.log" >&2
        die "mmdebstrap | docker import failed"
    }
    base_made=$(echo "$(now) - $t0" | bc -l)
fi
probe='import urllib.request as u; u.urlopen("https://pypi.org/simple/pip/", timeout=30)'
if [[ -z ${DOCKER_NET:-} ]]; then
    if docker run --rm "$BASE_IMAGE" python3 -c "$probe" >/dev/null 2>&1; then
        DOCKER_NET=default
    elif docker run --rm --network host "$BASE_IMAGE" python3 -c "$probe" >/dev/null 2>&1; then
        DOCKER_NET=host
    else
        die "a container from $BASE_IMAGE reaches PyPI neither through the bridge nor the host network"
    fi
fi
log "docker build --network $DOCKER_NET"
# docker_build REQUIREMENT...: a fresh docker build (no layer cache) of the Dockerfile.
docker_build() {
    printf 'FROM %s\nRUN pip3 install --break-system-packages %s\n' "$BASE_IMAGE" "$*" \
        >"$BENCH_DIR/docker/Dockerfile"
    docker build --no-cache --force-rm --network "$DOCKER_NET" -t "$DOCKER_IMAGE" "$BENCH_DIR/docker"
}

cold=() warm=() addone=() pycold=() dcold=() daddone=()
for round in $(seq "$ROUNDS"); do
    log "round $round: strata cold ($TOOL, empty store, lock and build)"
    rm -rf "$STORE" "$BENCH_DIR/spec/strata.lock"
    write_spec "$TOOL"
    cold+=("$(timed cold strata_lock_build)")
    log "round $round: strata warm"
    warm+=("$(timed warm strata_build)")
    log "round $round: $ADD added to [user]"
    write_spec "$TOOL" "$ADD"
    addone+=("$(timed addone strata_build)")
    objects=$("$STRATA" --store "$STORE" inspect "docker-archive:$BENCH_DIR/strata.tar" |
        grep -o 'py:[^ ",]*' | sort -u | grep -c '' || true)

    log "round $round: strata python cold (the Debian base built first, untimed)"
    rm -rf "$STORE" "$BENCH_DIR/spec/strata.lock"
    write_spec
    timed base strata_build >/dev/null
    write_spec "$TOOL"
    pycold+=("$(timed pycold strata_lock_build)")

    log "round $round: docker build, pip3 install $TOOL"
    dcold+=("$(timed dcold docker_build "$TOOL")")
    log "round $round: docker build, pip3 install $TOOL $ADD"
    daddone+=("$(timed daddone docker_build "$TOOL" "$ADD")")
done

c=$(printf '%s\n' "${cold[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
a=$(printf '%s\n' "${addone[@]}" | median)
pc=$(printf '%s\n' "${pycold[@]}" | median)
dc=$(printf '%s\n' "${dcold[@]}" | median)
da=$(printf '%s\n' "${daddone[@]}" | median)
printf '\n%-50s %9s %12s %13s\n' "measurement (median of $ROUNDS)" "seconds" "vs docker" "rounds"
# row LABEL SECONDS BASELINE ROUNDS: the ratio is BASELINE / SECONDS (above 1: strata faster).
row() { printf '%-50s %9.2f %11.1fx %13s\n' "$1" "$2" "$(echo "$3 / $2" | bc -l)" "$4"; }
row "strata cold (empty store; lock + build)" "$c" "$dc" "$(spread "${cold[@]}")"
row "strata python cold (Debian base in the store)" "$pc" "$dc" "$(spread "${pycold[@]}")"
row "strata warm (all layers cached)" "$w" "$dc" "$(spread "${warm[@]}")"
row "strata warm, $ADD added to [user]" "$a" "$da" "$(spread "${addone[@]}")"
row "docker build: pip3 install $TOOL" "$dc" "$dc" "$(spread "${dcold[@]}")"
row "docker build: pip3 install $TOOL $ADD" "$da" "$da" "$(spread "${daddone[@]}")"
[[ -z $base_made ]] || printf '%-50s %9.2f %12s\n' "(base image: mmdebstrap | docker import, once)" "$base_made" "untimed"
echo "Python store objects in strata's image: $objects; strata image $(du -h "$BENCH_DIR/strata.tar" | cut -f1)," \
    "docker image $(docker image inspect -f '{{.Size}}' "$DOCKER_IMAGE" | awk '{printf "%.0fM", $1 / 1048576}')" \
    "(base $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0fM", $1 / 1048576}'))"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (nproc $(nproc))"
awk -v c="$c" -v pc="$pc" -v dc="$dc" -v a="$a" 'BEGIN {
    printf "targets: cold >= 2x faster than the Dockerfile: %s (%.1fx; python cold on a built base %.1fx); warm add-one <= 2 s: %s (%.2f s)\n",
        (dc / c >= 2 ? "met" : "NOT met"), dc / c, dc / pc, (a <= 2 ? "met" : "NOT met"), a
}'

# The measured image works: the last strata image (the python-cold one) runs the tool by name.
log "checking strata's image: docker load, $TOOL --version"
loaded=$(docker load -i "$BENCH_DIR/strata.tar" | sed -n 's/^Loaded image: //p' | tail -1)
[[ -n $loaded ]] || die "docker load of $BENCH_DIR/strata.tar named no image"
docker run --rm "$loaded" sh -c "command -v python3 && $TOOL --version | head -1" ||
    die "$TOOL does not run in strata's image $loaded"
docker rmi -f "$loaded" "$DOCKER_IMAGE" >/dev/null
