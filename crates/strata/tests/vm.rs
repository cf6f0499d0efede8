//! Bootable disk images (`raw:FILE`, `qcow2:FILE`) end to end, live against the real Debian
//! mirror: a spec with `[boot]` becomes a GPT disk (ESP with systemd-boot, ext4 root), two
//! builds in separate stores give the same bytes, and the disk boots in QEMU without KVM
//! (OVMF → systemd-boot → kernel → systemd) to a unit that prints a marker with the image's
//! baked revision and powers the machine off.
//!
//! One image is built per store and shared by the assertions: boots under software emulation
//! take tens of seconds, so the test boots once (the qcow2) and proves the raw file holds the
//! same disk with `qemu-img compare`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::qemu::{self, Disk};
use common::*;

const DISK_TOOLS: &[&str] = &[
    "mkfs.ext4",
    "mkfs.vfat",
    "mcopy",
    "sfdisk",
    "qemu-img",
    "mksquashfs",
    "xorriso",
];

/// A unit that prints what the test checks on the serial console, then powers off (also when
/// it fails, so a broken image ends the boot early).
const MARKER_UNIT: &str = r#"[Unit]
Description=strata boot marker
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c '. /etc/os-release; echo "STRATA-BOOT-MARKER revision=$IMAGE_REVISION version=$IMAGE_VERSION id=$IMAGE_ID host=$(cat /etc/hostname) root=$(findmnt -n -o SOURCE /) esp=$(findmnt -n -o SOURCE /boot/efi) owner=$(stat -c %%U:%%G /etc/shadow)"'

[Install]
WantedBy=multi-user.target
"#;

const SPEC: &str = r#"[image]
name = "vmtest"
version = "1.2"
revision = "r42"

[base]
debian = { packages = [] }
tree = [{ src = "marker.service", dest = "/etc/systemd/system/strata-marker.service", mode = 0o644 }]

[base.links]
# No network in the test VM: nothing may wait for it.
"/etc/systemd/system/systemd-networkd-wait-online.service" = "/dev/null"
"/etc/systemd/system/multi-user.target.wants/strata-marker.service" = "/etc/systemd/system/strata-marker.service"

[boot]
hostname = "vmtest-host"
label = "VM test 1.2 (r42)"
free_space = "64M"
installer = true
"#;

fn vm_work() -> Work {
    let work = Work::new();
    work.file("marker.service", MARKER_UNIT, 0o644);
    work.write_spec(SPEC);
    work
}

/// `strata build SPEC --output DEST --json` with the shared Debian cache.
fn build(work: &Work, dest: &str) -> Build {
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(dest)
            .arg("--json"),
    );
    Build {
        json: serde_json::from_slice(&o.stdout).expect("build --json output"),
    }
}

/// Whether two files have the same bytes (read in chunks: disks are hundreds of MiB).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// The free bytes of the ext4 file system starting at byte `offset` of `disk` (from its
/// superblock).
fn ext4_free_bytes(disk: &Path, offset: u64) -> u64 {
    let mut f = File::open(disk).unwrap();
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(offset + 1024)).unwrap();
    f.read_exact(&mut sb).unwrap();
    assert_eq!(
        u16::from_le_bytes([sb[0x38], sb[0x39]]),
        0xEF53,
        "no ext4 at {offset}"
    );
    let free = u64::from(u32::from_le_bytes(sb[0x0C..0x10].try_into().unwrap()))
        | u64::from(u32::from_le_bytes(sb[0x158..0x15C].try_into().unwrap())) << 32;
    free * (1024u64 << u32::from_le_bytes(sb[0x18..0x1C].try_into().unwrap()))
}

#[test]
fn raw_and_qcow2_disks_boot_to_the_marker_and_are_reproducible() {
    if !require(DISK_TOOLS) || !require(qemu::QEMU_TOOLS) {
        return;
    }
    // Two stores, so every step (configure with the kernel's initramfs hook, staging,
    // mkfs.ext4) runs twice, at different times.
    let (a, b) = (vm_work(), vm_work());
    let (a_qcow2, a_raw) = (a.out("disk.qcow2"), a.out("disk.raw"));
    let (b_qcow2, b_raw) = (b.out("disk.qcow2"), b.out("disk.raw"));
    let built = build(&a, &format!("qcow2:{}", a_qcow2.display()));
    build(&a, &format!("raw:{}", a_raw.display()));
    build(&b, &format!("raw:{}", b_raw.display()));
    let b_built = build(&b, &format!("qcow2:{}", b_qcow2.display()));
    let disk = &built.json["disk"];
    // The reports agree but for the file written.
    let mut b_disk = b_built.json["disk"].clone();
    b_disk["file"] = disk["file"].clone();
    assert_eq!(disk, &b_disk);
    assert!(
        same_bytes(&a_raw, &b_raw),
        "two builds of the same spec gave different raw disks"
    );
    assert!(
        same_bytes(&a_qcow2, &b_qcow2),
        "two builds of the same spec gave different qcow2 disks"
    );
    // The raw file and the qcow2 file hold the same disk.
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&a_raw)
            .arg(&a_qcow2),
    );

    // The partition table: GPT with the ESP and an x86-64 root, the disk GUID strata reports.
    let table = stdout(&run_ok(Command::new("sfdisk").arg("--json").arg(&a_raw)));
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(
        pt["id"].as_str().unwrap().to_lowercase(),
        disk["disk_guid"].as_str().unwrap()
    );
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    // The root file system has the requested free space, and not much more.
    let root_start = parts[1]["start"].as_u64().unwrap() * 512;
    let free = ext4_free_bytes(&a_raw, root_start);
    assert!(
        ((64 << 20)..=(64 << 20) + (96 << 20)).contains(&free),
        "the root file system has {} MiB free for free_space = 64M",
        free >> 20
    );

    let vm = qemu::boot(
        &a.root().join("vm"),
        &[Disk::snapshot(&a_qcow2, "qcow2")],
        Duration::from_secs(300),
    );
    let marker = vm.line_with("STRATA-BOOT-MARKER").unwrap_or_else(|| {
        panic!(
            "no marker on the serial console after {:?} (powered off: {}):\n{}",
            vm.elapsed,
            vm.powered_off,
            vm.tail()
        )
    });
    eprintln!("booted to the marker in {:?}: {marker}", vm.elapsed);
    for expected in [
        "revision=r42",
        "version=1.2",
        "id=vmtest",
        "host=vmtest-host",
        "root=/dev/vda2",
        "esp=/dev/vda1",
        "owner=root:shadow",
    ] {
        assert!(
            marker.contains(expected),
            "the marker lacks `{expected}`: {marker}"
        );
    }
    // systemd-boot drew its menu (on the firmware console, which is the serial port) with the
    // spec's label.
    assert!(
        vm.serial.contains("VM test 1.2 (r42)"),
        "the boot menu label is not on the console:\n{}",
        vm.tail()
    );
    assert!(vm.powered_off, "the VM did not power off:\n{}", vm.tail());

    // The live ISO of the same image: reproducible, and it boots from a CD-ROM to the marker
    // with its root an overlay over the ISO's squashfs.
    let (a_iso, b_iso) = (a.out("live.iso"), b.out("live.iso"));
    build(&a, &format!("iso:{}", a_iso.display()));
    build(&b, &format!("iso:{}", b_iso.display()));
    assert!(
        same_bytes(&a_iso, &b_iso),
        "two builds of the same spec gave different ISOs"
    );
    let info = stdout(&run_ok(
        Command::new("xorriso")
            .args(["-indev"])
            .arg(&a_iso)
            .args(["-pvd_info"]),
    ));
    assert!(info.contains("Volume Id    : VMTEST"), "{info}");
    // The installer: the live system, booted from the ISO with a blank second disk, writes
    // the disk image to it and powers off; the disk then holds exactly the raw disk and boots
    // on its own to the marker.
    let blank = a.out("blank.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&blank)
            .arg("1G"),
    );
    let vm = qemu::boot(
        &a.root().join("vm-iso"),
        &[
            Disk::snapshot(&a_iso, "iso"),
            Disk {
                path: blank.clone(),
                format: "qcow2",
                writable: true,
            },
        ],
        Duration::from_secs(420),
    );
    let installed = vm
        .line_with("STRATA-INSTALLER installed to")
        .unwrap_or_else(|| {
            panic!(
                "the ISO's installer did not install after {:?} (powered off: {}):\n{}",
                vm.elapsed,
                vm.powered_off,
                vm.tail()
            )
        });
    eprintln!("the live ISO installed in {:?}: {installed}", vm.elapsed);
    assert!(
        vm.powered_off,
        "the installer did not power off:\n{}",
        vm.tail()
    );
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&a_raw)
            .arg(&blank),
    );
    let vm = qemu::boot(
        &a.root().join("vm-installed"),
        &[Disk::snapshot(&blank, "qcow2")],
        Duration::from_secs(300),
    );
    let marker = vm.line_with("STRATA-BOOT-MARKER").unwrap_or_else(|| {
        panic!(
            "the installed disk printed no marker after {:?}:\n{}",
            vm.elapsed,
            vm.tail()
        )
    });
    assert!(
        marker.contains("revision=r42") && marker.contains("root=/dev/vda2"),
        "{marker}"
    );
}

#[test]
fn disk_outputs_need_a_boot_table() {
    let work = Work::new();
    work.file("hello.txt", "hi\n", 0o644);
    work.write_spec("[base]\ntree = [{ src = \"hello.txt\", dest = \"/hello.txt\" }]\n");
    let out = work
        .strata()
        .arg("build")
        .arg(work.spec())
        .arg("--output")
        .arg(format!("raw:{}", work.out("disk.raw").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("needs a [boot] table"), "{err}");
    assert!(!work.out("disk.raw").exists());
}

const CLOUD_SPEC: &str = r#"[image]
name = "vmcloud"
revision = "c7"

[base]
debian = { packages = ["sudo"] }

[base.links]
"/etc/systemd/system/systemd-networkd-wait-online.service" = "/dev/null"

[account]
name = "dev"
shell = "/bin/bash"

[boot]
cloud_init = true
free_space = "64M"
"#;

/// The stand-in for Coder's agent init script: reports who runs it with which token (through
/// passwordless sudo, which the user-data grants), then powers the VM off.
const AGENT_INIT: &str = r#"#!/bin/sh
echo "STRATA-AGENT user=$(id -un) uid=$(id -u) token=$CODER_AGENT_TOKEN home=$HOME host=$(hostname) revision=$(. /etc/os-release; echo $IMAGE_REVISION)" | sudo -n tee /dev/ttyS0 >/dev/null
sudo -n systemctl poweroff
"#;

/// Base64 (standard alphabet, padded) for the user-data's `encoding: b64`.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Coder VM workspace on Proxmox, end to end without Proxmox: the template of
/// `strata coder template --kind proxmox` parses as HCL, its cloud-init user-data (with the
/// values Terraform would interpolate) goes on a NoCloud `cidata` volume as Proxmox's
/// cloud-init drive would, and the VM made from the spec's qcow2 boots, takes the host name,
/// creates the workspace account with passwordless sudo and runs the agent's init script as
/// that account with the agent token.
#[test]
fn proxmox_template_user_data_boots_the_agent_as_the_workspace_user() {
    if !require(DISK_TOOLS) || !require(qemu::QEMU_TOOLS) || !require(&["python3"]) {
        return;
    }
    let work = Work::new();
    work.write_spec(CLOUD_SPEC);
    let disk = work.out("cloud.qcow2");
    build(&work, &format!("qcow2:{}", disk.display()));

    let dir = work.out("template-proxmox");
    run_ok(
        work.strata_debian()
            .args(["coder", "template"])
            .arg(work.spec())
            .args(["--kind", "proxmox", "--out"])
            .arg(&dir),
    );
    let hcl = parse_hcl_file(&dir.join("main.tf"));
    let providers = &hcl["terraform"][0]["required_providers"][0];
    assert_eq!(providers["proxmox"]["source"], "bpg/proxmox");
    let vm = hcl_block(
        &hcl,
        "resource",
        &["proxmox_virtual_environment_vm", "workspace"],
    );
    assert_eq!(vm["clone"][0]["vm_id"], "${var.template_vm_id}");
    assert_eq!(vm["bios"], "ovmf");
    assert_eq!(
        vm["initialization"][0]["user_data_file_id"],
        "${proxmox_virtual_environment_file.cloud_config[0].id}"
    );
    let file = hcl_block(
        &hcl,
        "resource",
        &["proxmox_virtual_environment_file", "cloud_config"],
    );
    assert_eq!(file["content_type"], "snippets");
    let raw = file["source_raw"][0]["data"].as_str().unwrap();
    let mut user_data = heredoc_text(raw);
    // What Terraform would put there for workspace `WS-Proxmox` of the template's account.
    for (expr, value) in [
        (
            "${lower(data.coder_workspace.me.name)}",
            "ws-proxmox".to_owned(),
        ),
        ("${local.username}", "dev".to_owned()),
        ("${local.uid}", "1000".to_owned()),
        ("${local.home}", "/home/dev".to_owned()),
        ("${local.shell}", "/bin/bash".to_owned()),
        (
            "${base64encode(coder_agent.main.init_script)}",
            base64(AGENT_INIT.as_bytes()),
        ),
        ("${coder_agent.main.token}", "token-4f2a9c".to_owned()),
    ] {
        assert!(
            user_data.contains(expr),
            "the user-data lacks {expr}:\n{user_data}"
        );
        user_data = user_data.replace(expr, &value);
    }
    assert!(
        !user_data.contains("${"),
        "the user-data interpolates more than the test knows:\n{user_data}"
    );
    assert!(user_data.starts_with("#cloud-config\n"), "{user_data}");

    // The seed: a FAT volume labelled CIDATA with user-data and meta-data.
    let seed_dir = work.root().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(seed_dir.join("user-data"), &user_data).unwrap();
    std::fs::write(seed_dir.join("meta-data"), "instance-id: strata-test-1\n").unwrap();
    let seed = work.out("seed.img");
    run_ok(
        Command::new("mkfs.vfat")
            .args(["-n", "CIDATA", "-C"])
            .arg(&seed)
            .arg("2048"),
    );
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&seed)
            .arg(seed_dir.join("user-data"))
            .arg(seed_dir.join("meta-data"))
            .arg("::"),
    );

    let vm = qemu::boot(
        &work.root().join("vm"),
        &[Disk::snapshot(&disk, "qcow2"), Disk::snapshot(&seed, "raw")],
        Duration::from_secs(420),
    );
    let line = vm.line_with("STRATA-AGENT").unwrap_or_else(|| {
        panic!(
            "the agent's init script reported nothing after {:?} (powered off: {}):\n{}",
            vm.elapsed,
            vm.powered_off,
            vm.tail()
        )
    });
    eprintln!("the agent ran after {:?}: {line}", vm.elapsed);
    for expected in [
        "user=dev",
        "uid=1000",
        "token=token-4f2a9c",
        "home=/home/dev",
        "host=ws-proxmox",
        "revision=c7",
    ] {
        assert!(
            line.contains(expected),
            "the agent's line lacks `{expected}`: {line}"
        );
    }
    assert!(vm.powered_off, "the VM did not power off:\n{}", vm.tail());
}
