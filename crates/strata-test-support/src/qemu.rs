//! Booting disk images in QEMU for tests, without KVM: UEFI firmware (OVMF), the serial
//! console captured to a file, no reboot, disks in snapshot mode (never written) unless asked,
//! and a time limit after which the VM is killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The OVMF firmware code (read-only) and the template of its variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The template of OVMF's variable store; each boot gets a copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The tools a boot test needs (for [`crate::require`]).
pub const QEMU_TOOLS: &[&str] = &["qemu-system-x86_64", OVMF_CODE, OVMF_VARS];

/// One disk of the VM.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// `raw`, `qcow2` or `iso` (a CD-ROM).
    pub format: &'static str,
    /// Writes go to the file (else snapshot=on: the file is never changed).
    pub writable: bool,
}

impl Disk {
    /// A disk in snapshot mode.
    pub fn snapshot(path: &Path, format: &'static str) -> Self {
        Self {
            path: path.to_owned(),
            format,
            writable: false,
        }
    }
}

/// How a boot ended.
#[derive(Debug)]
pub struct Boot {
    /// Everything the serial console printed.
    pub serial: String,
    /// The VM powered off by itself (else it was killed at the time limit).
    pub powered_off: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Boot {
    /// The first serial line containing `marker`.
    pub fn line_with(&self, marker: &str) -> Option<String> {
        self.serial
            .lines()
            .find(|l| l.contains(marker))
            .map(|l| l.trim().to_owned())
    }

    /// The last lines of the serial log, for failure messages.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Boots `disks` (the first is the boot disk) with OVMF and waits up to `limit` for the VM to
/// power off. `work` holds the firmware variables and the serial log.
pub fn boot(work: &Path, disks: &[Disk], limit: Duration) -> Boot {
    fs::create_dir_all(work).expect("create the VM's work directory");
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars).expect("copy OVMF's variable store");
    let log = work.join("serial.log");
    let log_file = fs::File::create(&log).expect("create the serial log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-m", "1024", "-smp", "2"])
        .args([
            "-nographic",
            "-no-reboot",
            "-display",
            "none",
            "-nic",
            "none",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
    for (i, d) in disks.iter().enumerate() {
        let snapshot = if d.writable { "off" } else { "on" };
        let spec = if d.format == "iso" {
            format!(
                "file={},format=raw,media=cdrom,if=none,id=cd{i},readonly=on",
                d.path.display()
            )
        } else {
            format!(
                "file={},format={},if=virtio,snapshot={snapshot}",
                d.path.display(),
                d.format
            )
        };
        cmd.arg("-drive").arg(spec);
        if d.format == "iso" {
            // A virtio-scsi CD-ROM: Debian's cloud kernel has no AHCI (SATA) driver.
            cmd.args(["-device", &format!("virtio-scsi-pci,id=scsi{i}")]);
            cmd.args(["-device", &format!("scsi-cd,bus=scsi{i}.0,drive=cd{i}")]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup the log"))
        .stderr(log_file);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start qemu-system-x86_64");
    let mut powered_off = false;
    while start.elapsed() < limit {
        if let Some(_status) = child.try_wait().expect("wait for QEMU") {
            powered_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !powered_off {
        // Only the VM this function started.
        let _ = child.kill();
    }
    let _ = child.wait();
    let serial = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    Boot {
        serial,
        powered_off,
        elapsed: start.elapsed(),
    }
}
