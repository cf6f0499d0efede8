#!/usr/bin/env bash
# bench/serve.sh: strata serve against its own backend registry, in the same run.
#
#   1. a new 5-package Debian image pulled through the server: cold Debian download cache vs
#      warm (each with an empty store and an empty backend repository, so the build and the
#      push are in both);
#   2. pull latency of an image the server has (`skopeo copy` of NAME:latest from the server)
#      vs the same image straight from the backend registry (`skopeo copy` of REPO:KEY), as a
#      ratio (target: overhead <= 10%, ratio <= 1.10);
#   3. manifest HEAD requests per second of a cached image through the server (`wrk`, HEAD of
#      NAME:latest, ApacheBench) vs the backend registry's own HEADs of the same manifest
#      (target >= 2,000/s).
#
# Settings (environment): BENCH_DIR (/var/tmp/strata-bench-serve), PACKAGES ("curl git jq less
# vim-tiny"), SUITE (bookworm), RUNS (10: pulls per side), BUILD_RUNS (1: cold/warm pairs),
# HEAD_SECONDS (10), CONNECTIONS (32), STRATA_BIN (default: cargo build --release).
# Needs docker-registry, skopeo, ab (apache2-utils), hyperfine, curl, jq, bc (installed with apt-get when
# missing, as root). Exits non-zero only when something fails, not when a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-serve}
PACKAGES=${PACKAGES:-"curl git jq less vim-tiny"}
SUITE=${SUITE:-bookworm}
RUNS=${RUNS:-10}
BUILD_RUNS=${BUILD_RUNS:-1}
HEAD_SECONDS=${HEAD_SECONDS:-10}
CONNECTIONS=${CONNECTIONS:-32}

missing=()
for pair in docker-registry:docker-registry skopeo:skopeo ab:apache2-utils hyperfine:hyperfine curl:curl jq:jq bc:bc; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/serve.sh: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi

if [ -z "${STRATA_BIN:-}" ]; then
  cargo build --release -p strata >&2
  STRATA_BIN=$PWD/target/release/strata
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
run_dir=$BENCH_DIR/results/$stamp
mkdir -p "$run_dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (at most 30 s) until http://127.0.0.1:$1/v2/ answers.
wait_port() {
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/v2/" && return 0
    sleep 0.1
  done
  echo "bench/serve.sh: nothing answers on port $1" >&2
  exit 1
}

reg_port=$(free_port)
mkdir -p "$run_dir/registry"
cat >"$run_dir/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $run_dir/registry/storage
http:
  addr: 127.0.0.1:$reg_port
EOF
docker-registry serve "$run_dir/registry/config.yml" >"$run_dir/registry/log" 2>&1 &
pids+=($!)
wait_port "$reg_port"

# start_server REPO STORE DEBIAN_CACHE: starts strata serve; sets $port and $server_pid.
start_server() {
  port=$(free_port)
  STRATA_DEBIAN_CACHE=$3 "$STRATA_BIN" --store "$2" serve --listen "127.0.0.1:$port" \
    --backend "docker://127.0.0.1:$reg_port/$1" --resolve-ttl 3600 \
    >>"$run_dir/serve.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_port "$port"
}

name="debian/$SUITE/$(tr ' ' '\n' <<<"$PACKAGES" | sed 's/+/_p/g' | sort -u | paste -sd/)"
manifest_path="/v2/$name/manifests/latest"
accept='application/vnd.oci.image.manifest.v1+json'

# 1. New image: cold vs warm Debian download cache.
cold_times=() warm_times=()
for i in $(seq 1 "$BUILD_RUNS"); do
  debs=$run_dir/debian-cache-$i
  for phase in cold warm; do
    start_server "bench-$phase-$i" "$run_dir/store-$phase-$i" "$debs"
    t0=$(date +%s.%N)
    curl -sf -o /dev/null -H "Accept: $accept" "http://127.0.0.1:$port$manifest_path"
    t1=$(date +%s.%N)
    dt=$(echo "$t1 - $t0" | bc)
    if [ $phase = cold ]; then cold_times+=("$dt"); else warm_times+=("$dt"); fi
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
cold=$(median "${cold_times[@]}")
warm=$(median "${warm_times[@]}")

# The cached image: served by a server whose backend repository has it.
start_server "bench-warm-1" "$run_dir/store-serve" "$run_dir/debian-cache-1"
key=$(curl -sfI -H "Accept: $accept" "http://127.0.0.1:$port$manifest_path" | tr -d '\r' |
  awk -F': ' 'tolower($1)=="strata-cache-key" {print $2}')
[ -n "$key" ] || { echo "bench/serve.sh: no cache key from the server" >&2; exit 1; }
layers=$(curl -sf -H "Accept: $accept" "http://127.0.0.1:$port$manifest_path" | jq '.layers | length')
bytes=$(curl -sf -H "Accept: $accept" "http://127.0.0.1:$port$manifest_path" | jq '[.layers[].size] | add')

# 2. Pull latency: server vs backend, interleaved by hyperfine's alternating runs.
pull_dir=$run_dir/pulled
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$run_dir/pull.json" \
  --prepare "rm -rf $pull_dir" \
  -n serve "skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$port/$name:latest dir:$pull_dir" \
  -n backend "skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$reg_port/bench-warm-1:$key dir:$pull_dir" \
  >"$run_dir/pull.txt"
pull_serve=$(jq '.results[] | select(.command=="serve") | .median' "$run_dir/pull.json")
pull_backend=$(jq '.results[] | select(.command=="backend") | .median' "$run_dir/pull.json")

# 3. Manifest HEADs per second, with ApacheBench (`ab -i`: HEAD; wrk cannot read HEAD answers
# that carry a Content-Length). Keep-alive connections, HEAD_SECONDS each.
rps() {
  ab -q -k -i -c "$CONNECTIONS" -t "$HEAD_SECONDS" -n 10000000 -H "Accept: $accept" "$1" \
    >"$run_dir/ab-$2.txt" 2>&1
  if ! grep -q '^Non-2xx responses' "$run_dir/ab-$2.txt" &&
    [ "$(awk '/^Failed requests/ {print $3}' "$run_dir/ab-$2.txt")" = 0 ]; then
    awk '/^Requests per second/ {print $4}' "$run_dir/ab-$2.txt"
  else
    echo "bench/serve.sh: HEADs to $1 failed:" >&2
    cat "$run_dir/ab-$2.txt" >&2
    exit 1
  fi
}
rps_serve=$(rps "http://127.0.0.1:$port$manifest_path" serve)
rps_backend=$(rps "http://127.0.0.1:$reg_port/v2/bench-warm-1/manifests/$key" backend)

ratio() { echo "scale=2; $1 / $2" | bc; }
verdict() { if [ "$(echo "$1" | bc)" = 1 ]; then echo PASS; else echo MISS; fi; }
pull_ratio=$(ratio "$pull_serve" "$pull_backend")
{
  echo "strata serve benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: nproc $(nproc), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "strata: $(git rev-parse --short HEAD)$(git diff --quiet || echo +uncommitted changes), $STRATA_BIN"
  echo "image: $name ($layers layers, $bytes bytes of blobs), key $key"
  echo
  printf '%-44s %12s %14s %8s  %-12s %s\n' measure strata baseline ratio target result
  printf '%-44s %11.2fs %13.2fs %8s  %-12s %s\n' "new image, cold vs warm download cache" \
    "$cold" "$warm" "$(ratio "$cold" "$warm")x" "(info)" "-"
  printf '%-44s %11.3fs %13.3fs %8s  %-12s %s\n' "pull of a cached image (server vs backend)" \
    "$pull_serve" "$pull_backend" "${pull_ratio}x" "<=1.10x" \
    "$(verdict "$pull_ratio <= 1.10")"
  printf '%-44s %10.0f/s %12.0f/s %8s  %-12s %s\n' "manifest HEAD (server vs backend)" \
    "$rps_serve" "$rps_backend" "$(ratio "$rps_serve" "$rps_backend")x" ">=2000/s" \
    "$(verdict "$rps_serve >= 2000")"
} | tee "$run_dir/table.txt"
