#!/usr/bin/env bash
# Benchmark: the Debian dev set (git curl ca-certificates sudo python3) built by `strata build`
# and by mmdebstrap, with the network taken out of the comparison: both tools fetch every index
# and .deb through the same local apt-cacher-ng on 127.0.0.1, warmed beforehand and then switched
# to offline mode (it serves from its cache only; nothing leaves the machine while timing).
# bench/debian.sh measures the same thing live against deb.debian.org, where ~60 MB of downloads
# dominate both tools; this script measures the tools.
#
# Each strata build is made twice over: declarative (`configure = false`, issue 3: the packages'
# files plus the generated system files) and configured (the default since issue 4: the packages'
# maintainer scripts run into a configure layer, as mmdebstrap runs them).
#   cold             empty --store AND empty STRATA_DEBIAN_CACHE: every InRelease, Packages.xz and
#                    .deb is fetched again (from the proxy), verified, extracted and layered; no lock
#                    file, so it resolves in memory. Declarative once with --output oci:DIR, once
#                    with --output docker-archive:FILE (mmdebstrap writes a tarball); configured
#                    with docker-archive:
#   warm             the same build again into the same store (every layer cached)
#   add-one          jq added to [user], built into that warm store (its .debs come from the proxy)
#   mmdebstrap --variant=apt --include=git,curl,ca-certificates,sudo,python3 bookworm OUT.tar
#                    with its default sources (bookworm, bookworm-updates, bookworm-security, main)
#                    pointed at the same proxy; fresh output every time
# Each measurement is taken ROUNDS times, interleaved (the order of strata and mmdebstrap
# alternates between rounds), and the median is reported with its ratio to mmdebstrap.
# Targets: issue 3 item 9, declarative cold >= 6x faster than mmdebstrap and warm add-one under
# 1 s; issue 4 item 6, configured cold >= 3x faster than mmdebstrap.
# Finally the configured jq image is loaded into podman and `git --version` is run in it
# (untimed).
#
# Run as root from anywhere:  bench/debian-proxy.sh
# (installs apt-cacher-ng and mmdebstrap with apt-get when missing; the proxy runs in the
# foreground of a background job with a private config, cache and log dir, and is stopped on exit)
# Environment:
#   BENCH_DIR    scratch directory (default /var/tmp/strata-bench-debian-proxy)
#   PORT         proxy port on 127.0.0.1 (default 3999)
#   ROUNDS       rounds; the median is reported (default 3)
#   UPSTREAM     where the proxy fetches deb.debian.org/debian from (default http://deb.debian.org/debian/)
#   PODMAN       0 skips the podman check (default 1)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-debian-proxy}
PORT=${PORT:-3999}
ROUNDS=${ROUNDS:-3}
UPSTREAM=${UPSTREAM:-http://deb.debian.org/debian/}
PODMAN=${PODMAN:-1}
PACKAGES=(git curl ca-certificates sudo python3)
PROXY=http://127.0.0.1:$PORT/deb.debian.org
MIRROR=$PROXY/debian
SECURITY_MIRROR=$PROXY/debian-security

die() {
    echo "debian-proxy.sh: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap root mode, apt-cacher-ng install)"
for tool in apt-cacher-ng mmdebstrap; do
    if ! command -v $tool >/dev/null; then
        log "installing $tool"
        DEBIAN_FRONTEND=noninteractive apt-get install -y $tool >/dev/null || die "cannot install $tool"
    fi
done
command -v cargo >/dev/null || die "cargo is missing"

log "building strata (release)"
cargo build --release -q -p strata
mkdir -p "$BENCH_DIR"
# A private copy: others may rebuild target/release while this runs.
cp "$ROOT/target/release/strata" "$BENCH_DIR/strata"
STRATA=$BENCH_DIR/strata

# --- the proxy -------------------------------------------------------------------------------
ACNG=$BENCH_DIR/acng
rm -rf "$ACNG"
mkdir -p "$ACNG/conf" "$ACNG/cache" "$ACNG/log"
cp /etc/apt-cacher-ng/* "$ACNG/conf/"
rm -f "$ACNG/conf/zz_debconf.conf"
# Debian's package leaves backends_debian empty (debconf); name the upstream explicitly.
echo "$UPSTREAM" >"$ACNG/conf/backends_debian"
PROXY_PID=
stop_proxy() {
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=
    fi
}
trap stop_proxy EXIT
trap 'exit 130' INT TERM
# start_proxy OFFLINE(0|1)
start_proxy() {
    stop_proxy
    apt-cacher-ng -c "$ACNG/conf" ForeGround=1 Port="$PORT" BindAddress=127.0.0.1 \
        CacheDir="$ACNG/cache" LogDir="$ACNG/log" SocketPath="$ACNG/socket" PidFile="$ACNG/pid" \
        Offlinemode="$1" >>"$ACNG/stdout" 2>&1 &
    PROXY_PID=$!
    for _ in $(seq 50); do
        curl -fsS -o /dev/null "$MIRROR/dists/bookworm/InRelease" 2>/dev/null && return 0
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$ACNG/stdout" >&2
    die "apt-cacher-ng did not serve $MIRROR/dists/bookworm/InRelease on port $PORT"
}

# --- the two tools ---------------------------------------------------------------------------
mkdir -p "$BENCH_DIR/spec"
SPEC=$BENCH_DIR/spec/strata.toml
STORE=$BENCH_DIR/store
CACHE=$BENCH_DIR/debian-cache
list() { printf '"%s", ' "$@" | sed 's/, $//'; }
# write_spec CONFIGURE(true|false) USER-PACKAGES...
write_spec() {
    local configure=$1
    shift
    cat >"$SPEC" <<EOF
[image]
name = "bench-debian-proxy"

[base]
debian = { packages = [$(list "${PACKAGES[@]}")], mirror = "$MIRROR", security_mirror = "$SECURITY_MIRROR", configure = $configure }

[user]
debian = { packages = [$(list "$@")], configure = $configure }
EOF
}
now() { date +%s.%N; }
# strata_try LABEL OUTPUT [ARGS...]: one `strata build`; prints the seconds it took. Returns 2
# when it failed with "Peer disconnected": strata's HTTP client does not retry a GET on a pooled
# connection that the proxy has closed (apt does); such a failure is counted and the run repeated.
strata_try() {
    local label=$1 out=$2 t0 t1
    shift 2
    t0=$(now)
    if STRATA_DEBIAN_CACHE=$CACHE "$STRATA" --store "$STORE" build "$SPEC" --output "$out" "$@" \
        >"$BENCH_DIR/$label.out" 2>"$BENCH_DIR/$label.log"; then
        t1=$(now)
        echo "$t1 - $t0" | bc -l
        return 0
    fi
    if grep -q 'Peer disconnected' "$BENCH_DIR/$label.log"; then
        echo "$label: $(grep -o 'downloading [^ ]*: io: Peer disconnected' "$BENCH_DIR/$label.log")" \
            >>"$BENCH_DIR/retries"
        log "strata build ($label) failed with 'Peer disconnected'; repeating it"
        return 2
    fi
    cat "$BENCH_DIR/$label.log" >&2
    die "strata build ($label) failed"
}
# strata_build LABEL OUTPUT [ARGS...]: into the current store.
strata_build() {
    local _
    for _ in 1 2 3; do
        strata_try "$@" && return 0
    done
    die "strata build ($1) failed three times"
}
# strata_cold CONFIGURE LABEL OUTPUT [ARGS...]: empty store and download cache, no lock (reset
# before every attempt).
strata_cold() {
    local _ configure=$1
    shift
    for _ in 1 2 3; do
        rm -rf "$STORE" "$CACHE" "$BENCH_DIR/spec/strata.lock" "$BENCH_DIR/oci"
        mkdir -p "$CACHE"
        write_spec "$configure" less
        strata_try "$@" && return 0
    done
    die "strata build ($1) failed three times"
}
mmdeb_build() {
    local t0 t1
    rm -f "$BENCH_DIR/mmdebstrap.tar"
    t0=$(now)
    mmdebstrap --quiet --variant=apt --include="$(
        IFS=,
        echo "${PACKAGES[*]}"
    )" bookworm "$BENCH_DIR/mmdebstrap.tar" \
        "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main" >"$BENCH_DIR/mmdebstrap.log" 2>&1 || {
        cat "$BENCH_DIR/mmdebstrap.log" >&2
        die "mmdebstrap failed"
    }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

log "warming the proxy (online): one untimed run of each tool, with and without jq"
start_proxy 0
strata_cold false warmup "docker-archive:$BENCH_DIR/strata.tar" >/dev/null
write_spec false less jq
strata_build warmup-jq "docker-archive:$BENCH_DIR/strata.tar" >/dev/null
mmdeb_build >/dev/null
log "proxy cache: $(du -sh "$ACNG/cache" | cut -f1); switching it to offline mode"
start_proxy 1
errors_before=$(cat "$ACNG"/log/*.log 2>/dev/null | grep -c '|E|' || true)

rm -f "$BENCH_DIR/retries"
cold_oci=() cold=() warm=() addone=() ccold=() cwarm=() caddone=() mmdeb=() loads=()
strata_round() {
    local r=$1
    log "round $r: strata declarative cold, oci:"
    cold_oci+=("$(strata_cold false cold-oci "oci:$BENCH_DIR/oci")")
    log "round $r: strata declarative cold, docker-archive:"
    cold+=("$(strata_cold false cold "docker-archive:$BENCH_DIR/strata.tar")")
    log "round $r: strata declarative warm"
    warm+=("$(strata_build warm "docker-archive:$BENCH_DIR/strata.tar")")
    log "round $r: strata declarative warm, jq added to [user]"
    write_spec false less jq
    addone+=("$(strata_build addone "docker-archive:$BENCH_DIR/strata.tar")")
    log "round $r: strata configured cold, docker-archive:"
    ccold+=("$(strata_cold true ccold "docker-archive:$BENCH_DIR/strata.tar")")
    log "round $r: strata configured warm"
    cwarm+=("$(strata_build cwarm "docker-archive:$BENCH_DIR/strata.tar")")
    log "round $r: strata configured warm, jq added to [user]"
    write_spec true less jq
    caddone+=("$(strata_build caddone "docker-archive:$BENCH_DIR/strata.tar")")
    cp "$BENCH_DIR/strata.tar" "$BENCH_DIR/image.tar"
}
mmdeb_round() {
    log "round $1: mmdebstrap"
    mmdeb+=("$(mmdeb_build)")
}
for round in $(seq "$ROUNDS"); do
    loads+=("$(load)")
    if [ $((round % 2)) = 1 ]; then
        strata_round "$round"
        mmdeb_round "$round"
    else
        mmdeb_round "$round"
        strata_round "$round"
    fi
done
loads+=("$(load)")
errors_after=$(cat "$ACNG"/log/*.log 2>/dev/null | grep -c '|E|' || true)
[ "$errors_after" = "$errors_before" ] ||
    die "the proxy logged $((errors_after - errors_before)) errors while timing (see $ACNG/log)"
stop_proxy

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
med() { printf '%s\n' "$@" | median; }
m=$(med "${mmdeb[@]}")
row() { # LABEL SECONDS...
    local label=$1 v
    shift
    v=$(med "$@")
    printf '%-58s %8.2f %9.1fx   (%s)\n' "$label" "$v" "$(echo "$m / $v" | bc -l)" "$(printf '%.2f ' "$@")"
}
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ); strata $(git -C "$ROOT" describe --always --dirty 2>/dev/null); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');" \
    "load (1/5/15 min) before each round and at the end: $(printf '[%s] ' "${loads[@]}")"
printf '%-58s %8s %10s   %s\n' "measurement (median of $ROUNDS, via local proxy)" "seconds" "vs mmdeb" "(rounds)"
row "declarative cold, oci: (empty store + download cache)" "${cold_oci[@]}"
row "declarative cold, docker-archive:" "${cold[@]}"
row "declarative warm (all layers cached)" "${warm[@]}"
row "declarative warm, jq added to [user]" "${addone[@]}"
row "configured cold, docker-archive: (maintainer scripts)" "${ccold[@]}"
row "configured warm" "${cwarm[@]}"
row "configured warm, jq added to [user]" "${caddone[@]}"
row "mmdebstrap --variant=apt (tar)" "${mmdeb[@]}"
c=$(med "${cold[@]}")
co=$(med "${cold_oci[@]}")
a=$(med "${addone[@]}")
cc=$(med "${ccold[@]}")
echo "configured jq image $(du -h "$BENCH_DIR/image.tar" | cut -f1) (docker-archive)," \
    "mmdebstrap tar $(du -h "$BENCH_DIR/mmdebstrap.tar" | cut -f1)"
[ -s "$BENCH_DIR/retries" ] &&
    echo "strata runs repeated after 'Peer disconnected' (not timed): $(grep -c '' "$BENCH_DIR/retries")" \
        "($(sort "$BENCH_DIR/retries" | uniq -c | sed 's/^ *//' | paste -sd';'))"
awk -v c="$c" -v co="$co" -v m="$m" -v a="$a" -v cc="$cc" 'BEGIN {
    printf "issue 3 target, declarative cold >= 6x faster than mmdebstrap: %s (docker-archive %.1fx, oci %.1fx)\n",
        (m / c >= 6 && m / co >= 6 ? "PASS" : "MISS"), m / c, m / co
    printf "issue 3 target, declarative warm add-one under 1 s: %s (%.2f s)\n", (a < 1 ? "PASS" : "MISS"), a
    printf "issue 4 target, configured cold >= 3x faster than mmdebstrap: %s (%.1fx)\n",
        (m / cc >= 3 ? "PASS" : "MISS"), m / cc
}'

if [ "$PODMAN" = 1 ]; then
    log "podman: load the configured jq image and run git --version in it"
    img=$(podman load -i "$BENCH_DIR/image.tar" 2>&1 | sed -n 's/^Loaded image: *//p' | tail -1)
    [ -n "$img" ] || die "podman load printed no image name"
    out=$(podman run --rm --cgroup-manager=cgroupfs --runtime=runc --ulimit nofile=20000:20000 \
        --ulimit nproc=20000:20000 --network=none "$img" git --version) || die "podman run failed"
    echo "podman run $img git --version: $out"
    podman rmi "$img" >/dev/null 2>&1 || true
fi
