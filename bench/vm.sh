#!/usr/bin/env bash
# Benchmark: a bootable qcow2 of the Debian dev set (bash coreutils git curl ca-certificates
# sudo python3 jq, plus what [boot] adds: the cloud kernel, systemd, udev, initramfs-tools,
# systemd-boot-efi, live-boot), live against the Debian mirror, next to the hand pipeline on
# the same packages in the same run:
#   strata cold:  `strata build --output qcow2:` into an empty store (downloads into an empty
#                 download cache, layers, the configure step with the kernel's initramfs hook,
#                 staging, mkfs.ext4 -d, ESP, GPT, qemu-img convert)
#   strata warm:  the same again into the same store (the container image is cached; the disk
#                 is made again)
#   pipeline:     mmdebstrap --variant=apt --include=... bookworm DIR (root mode), the same
#                 machine files, mkfs.ext4 -d, mkfs.vfat + mcopy (systemd-boot, kernel,
#                 initramfs), sfdisk, dd, qemu-img convert
#   boot:         OVMF → systemd-boot → kernel → systemd until the marker unit prints, in QEMU
#                 without KVM, for both disks
# Targets: warm ≤ 10 s; cold ≥ 2× faster than the pipeline; the raw disk no larger than its
# content plus the requested free space (and the ESP and partition overhead).
#
# Run as root from anywhere:  bench/vm.sh     (mmdebstrap is installed with apt-get if missing)
# Environment: BENCH_DIR (default /var/tmp/strata-bench-vm), BOOT=0 to skip the boots,
# STRATA_BIN to time a given strata binary instead of building the release one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/var/tmp/strata-bench-vm}
BOOT=${BOOT:-1}
PACKAGES=(bash coreutils git curl ca-certificates sudo python3 jq)
BOOT_PACKAGES=(linux-image-cloud-amd64 systemd-sysv udev initramfs-tools kmod systemd-boot-efi live-boot)
FREE_MB=256

die() { echo "vm.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

for tool in mmdebstrap:mmdebstrap qemu-img:qemu-utils mkfs.vfat:dosfstools mcopy:mtools \
    sfdisk:fdisk qemu-system-x86_64:qemu-system-x86 bc:bc; do
    command -v "${tool%%:*}" >/dev/null || apt-get install -y "${tool#*:}" >/dev/null ||
        die "cannot install ${tool#*:}"
done
unset STRATA_DEBIAN_CACHE SOURCE_DATE_EPOCH

if [ -n "${STRATA_BIN:-}" ]; then
    STRATA=$STRATA_BIN # e.g. a debug build, when a release build is not at hand
else
    log "building strata (release)"
    cargo build --release -q -p strata
    STRATA=$ROOT/target/release/strata
fi

# The last run's files are removed when this one ends, not now: ext4 skips the inodes it freed
# in the last minutes when it allocates new ones, and the scan for them slowed the first tool
# to write files after a large `rm -rf` (strata's cold build, ~30% on a 750 MiB tree).
if [ -e "$BENCH_DIR" ]; then
    mv "$BENCH_DIR" "$BENCH_DIR.old-$$"
    trap 'rm -rf "$BENCH_DIR.old-$$"' EXIT
fi
mkdir -p "$BENCH_DIR/spec"
cat >"$BENCH_DIR/spec/marker.service" <<'EOF'
[Unit]
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'echo STRATA-BENCH-MARKER'
[Install]
WantedBy=multi-user.target
EOF
list() { printf '"%s", ' "$@" | sed 's/, $//'; }
cat >"$BENCH_DIR/spec/strata.toml" <<EOF
[image]
name = "bench-vm"
revision = "bench"

[base]
debian = { packages = [$(list "${PACKAGES[@]}")] }
tree = [{ src = "marker.service", dest = "/etc/systemd/system/strata-marker.service", mode = 0o644 }]

[base.links]
"/etc/systemd/system/systemd-networkd-wait-online.service" = "/dev/null"
"/etc/systemd/system/multi-user.target.wants/strata-marker.service" = "/etc/systemd/system/strata-marker.service"

[boot]
free_space = "${FREE_MB}M"
EOF

STORE=$BENCH_DIR/store
build() {
    "$STRATA" --store "$STORE" build "$BENCH_DIR/spec/strata.toml" \
        --output "qcow2:$BENCH_DIR/strata.qcow2" --json >"$BENCH_DIR/$1.json" 2>"$BENCH_DIR/$1.log" ||
        { cat "$BENCH_DIR/$1.log" >&2; die "strata build ($1) failed"; }
}
log "strata cold"
t0=$(now); build cold; t1=$(now); COLD=$(secs "$t0" "$t1")
log "strata warm"
t0=$(now); build warm; t1=$(now); WARM=$(secs "$t0" "$t1")
"$STRATA" --store "$STORE" build "$BENCH_DIR/spec/strata.toml" --output "raw:$BENCH_DIR/strata.raw" \
    >/dev/null 2>&1 || die "strata build (raw) failed"

log "pipeline: mmdebstrap + mkfs.ext4 -d + systemd-boot + qemu-img convert"
P=$BENCH_DIR/pipeline
mkdir -p "$P"
t0=$(now)
include=$(IFS=,; echo "${PACKAGES[*]},${BOOT_PACKAGES[*]}")
mmdebstrap --quiet --variant=apt --include="$include" bookworm "$P/root" \
    http://deb.debian.org/debian >"$P/mmdebstrap.log" 2>&1 || { tail "$P/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
cp "$BENCH_DIR/spec/marker.service" "$P/root/etc/systemd/system/strata-marker.service"
ln -sf /etc/systemd/system/strata-marker.service "$P/root/etc/systemd/system/multi-user.target.wants/strata-marker.service"
ln -sf /dev/null "$P/root/etc/systemd/system/systemd-networkd-wait-online.service"
RU=3f0e6a52-8c55-4d5f-9d7e-2a7b8d6c1e01
echo "UUID=$RU / ext4 rw 0 1" >"$P/root/etc/fstab"
echo bench-vm >"$P/root/etc/hostname"
K=$(ls "$P"/root/boot/vmlinuz-* | tail -1); I=$(ls "$P"/root/boot/initrd.img-* | tail -1)
used=$(du -s --block-size=1M "$P/root" | cut -f1)
ROOT_MB=$((used + used / 10 + FREE_MB + 32))
mkfs.ext4 -q -F -d "$P/root" -U "$RU" -L root "$P/root.img" "${ROOT_MB}M"
mkdir -p "$P/esp/EFI/BOOT" "$P/esp/loader/entries"
cp "$P/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$P/esp/EFI/BOOT/BOOTX64.EFI"
cp "$K" "$P/esp/vmlinuz"; cp "$I" "$P/esp/initrd.img"
printf 'default bench.conf\ntimeout 0\n' >"$P/esp/loader/loader.conf"
printf 'title bench\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=UUID=%s rw console=ttyS0\n' "$RU" \
    >"$P/esp/loader/entries/bench.conf"
mkfs.vfat -C -F 32 -n ESP "$P/esp.img" $((64 * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$P/esp.img" "$P/esp/EFI" "$P/esp/loader" "$P/esp/vmlinuz" "$P/esp/initrd.img" ::
truncate -s $((1 + 64 + ROOT_MB + 1))M "$P/disk.raw"
sfdisk -q "$P/disk.raw" <<EOF
label: gpt
start=2048, size=$((64 * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
start=$((65 * 2048)), size=$((ROOT_MB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
EOF
dd if="$P/esp.img" of="$P/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$P/root.img" of="$P/disk.raw" bs=1M seek=65 conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$P/disk.raw" "$P/pipeline.qcow2"
t1=$(now); PIPE=$(secs "$t0" "$t1")

boot_time() {
    local disk=$1 log=$BENCH_DIR/boot-$2.log vars=$BENCH_DIR/vars-$2.fd t0 pid
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$vars"
    t0=$(now)
    qemu-system-x86_64 -machine q35 -m 1024 -smp 2 -nographic -no-reboot -display none -nic none \
        -serial stdio -monitor none \
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
        -drive if=pflash,format=raw,file="$vars" \
        -drive file="$disk",format=qcow2,if=virtio,snapshot=on </dev/null >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        grep -aq STRATA-BENCH-MARKER "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    local t1; t1=$(now)
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    grep -aq STRATA-BENCH-MARKER "$log" && secs "$t0" "$t1" || echo "no-marker"
}
if [ "$BOOT" = 1 ]; then
    log "booting both disks"
    BOOT_S=$(boot_time "$BENCH_DIR/strata.qcow2" strata)
    BOOT_P=$(boot_time "$P/pipeline.qcow2" pipeline)
else
    BOOT_S=skipped BOOT_P=skipped
fi

disk_mb=$(($(stat -c %s "$BENCH_DIR/strata.raw") >> 20))
root_mb=$(jq -r '.disk.root_size' "$BENCH_DIR/warm.json" 2>/dev/null || echo 0)
root_mb=$((root_mb >> 20))
content_mb=$(du -s --block-size=1M "$P/root" | cut -f1)
printf '\n%-34s %10s %10s %8s\n' "measure" "strata" "pipeline" "ratio"
printf '%-34s %10.1f %10.1f %7.2fx\n' "qcow2, cold (s)" "$COLD" "$PIPE" "$(echo "$PIPE / $COLD" | bc -l)"
printf '%-34s %10.1f %10.1f %7.2fx\n' "qcow2, warm store (s)" "$WARM" "$PIPE" "$(echo "$PIPE / $WARM" | bc -l)"
printf '%-34s %10s %10s\n' "boot to marker, no KVM (s)" "$BOOT_S" "$BOOT_P"
printf '%-34s %10s %10s\n' "qcow2 size (MiB)" "$(($(stat -c %s "$BENCH_DIR/strata.qcow2") >> 20))" \
    "$(($(stat -c %s "$P/pipeline.qcow2") >> 20))"
printf '%-34s %10s %10s\n' "raw disk (MiB)" "$disk_mb" "$((1 + 64 + ROOT_MB + 1))"
printf '%-34s %10s   (mmdebstrap tree %s MiB + free %s MiB)\n' "root file system (MiB)" "$root_mb" "$content_mb" "$FREE_MB"
