//! Bootable disk images of a strata image, rootless and reproducible.
//!
//! [`write_disk`] turns a built image whose spec has `[boot]` into a GPT disk, as a raw file or
//! a qcow2 file:
//!
//! | partition | content |
//! |---|---|
//! | 1, EFI system partition (FAT32, label = the volume ID) | `EFI/BOOT/BOOTX64.EFI` (systemd-boot from the image's `systemd-boot-efi`), `loader/loader.conf`, `loader/entries/strata.conf` (the boot menu entry: title = the label, the image version), the image's kernel and initramfs |
//! | 2, Linux root (x86-64) (ext4, label `root`) | the image's flattened root file system, owners as in the image, with `/etc/fstab`, `/etc/hostname` and `/etc/os-release` (`IMAGE_ID`, `IMAGE_VERSION`) written for the machine |
//!
//! Nothing needs root, loop devices or mounts: the image is unpacked by `strata-sandbox` (in a
//! user namespace with the caller's id map, so files keep the image's owners), the root file
//! system is made by `mkfs.ext4 -d` inside that namespace, the ESP by `mkfs.vfat` and `mcopy`,
//! the partition table by `sfdisk` on a regular file, and qcow2 by `qemu-img convert`.
//!
//! The bytes depend only on the image (its configuration digest, which lists its layers' diff
//! ids), the `[boot]` settings and `SOURCE_DATE_EPOCH`: the disk and partition GUIDs, the ext4
//! UUID and directory hash seed and the FAT serial are derived from them ([`Identity`]), and
//! every inode time is set to `SOURCE_DATE_EPOCH` after `mkfs.ext4` ([`ext4::clamp_inode_times`]).

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod ext4;
mod root;

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use strata_oci::output::BuiltImage;
use strata_sandbox::{IdMapping, LayerFile, SandboxError};
use strata_spec::{BootSection, Spec};
use strata_store::Store;

/// The file format of a disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The disk's bytes, sparse where zero.
    Raw,
    /// QEMU's qcow2 (made from the raw disk by `qemu-img convert`).
    Qcow2,
    /// A live ISO: the root file system as a squashfs under a memory overlay (live-boot),
    /// booted by systemd-boot from an El Torito EFI image.
    Iso,
}

/// A failure to make a disk image. Messages name the file, the tool or the image path.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file operation failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tool failed or could not be started.
    #[error("`{tool}` failed: {message}")]
    Tool {
        /// The program.
        tool: String,
        /// Its status and the end of its output, or why it could not run.
        message: String,
    },
    /// The image lacks something a bootable disk needs.
    #[error("{0}")]
    Image(String),
    /// Unpacking the image or running in the user namespace failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VmError {
    let path = path.to_owned();
    move |source| VmError::Io {
        action,
        path,
        source,
    }
}

/// Runs a tool and fails with its output when it fails.
pub(crate) fn run_tool(cmd: &mut Command) -> Result<(), VmError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| VmError::Tool {
        tool: tool.clone(),
        message: format!(
            "cannot run it ({e}); install {}",
            match tool.as_str() {
                "mkfs.ext4" => "e2fsprogs",
                "mkfs.vfat" => "dosfstools",
                "mcopy" | "mmd" => "mtools",
                "sfdisk" => "fdisk",
                "qemu-img" => "qemu-utils",
                other => other,
            }
        ),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(VmError::Tool {
        tool,
        message: format!("{}: {}", out.status, tail(&out.stdout, &out.stderr)),
    })
}

fn tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("; ")
}

/// The identifiers of one disk, derived from a seed: the same image and settings give the same
/// GUIDs, UUIDs and serials on every build.
#[derive(Debug, Clone)]
pub struct Identity {
    seed: [u8; 32],
}

impl Identity {
    /// The identity for the image with configuration digest `config_digest` and the disk
    /// settings `settings` (any canonical text of them).
    pub fn new(config_digest: &str, settings: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"strata-disk-v1\0");
        h.update(config_digest.as_bytes());
        h.update(b"\0");
        h.update(settings.as_bytes());
        Self {
            seed: h.finalize().into(),
        }
    }

    fn bytes(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// A random-looking (version 4, RFC 4122 variant) UUID for `purpose`, lower case.
    pub fn uuid(&self, purpose: &str) -> String {
        let mut b = self.bytes(purpose);
        b[6] = (b[6] & 0x0F) | 0x40;
        b[8] = (b[8] & 0x3F) | 0x80;
        let h = hex::encode(&b[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The FAT volume serial, 8 upper-case hex digits.
    pub fn fat_serial(&self) -> String {
        hex::encode_upper(&self.bytes("esp-serial")[..4])
    }
}

/// What to make.
#[derive(Debug)]
pub struct DiskRequest<'a> {
    /// The spec the image was built from (its `[boot]` and `[image]`).
    pub spec: &'a Spec,
    /// The built image.
    pub image: &'a BuiltImage,
    /// The store holding its blobs (and the unpacked root file system, kept for later runs).
    pub store: &'a Store,
    /// Raw or qcow2.
    pub format: Format,
    /// The file to write (replaced atomically; nothing is left there on failure).
    pub output: &'a Path,
    /// Every time in the disk is at most this (and the inode and FAT times are this).
    pub source_date_epoch: u64,
}

/// What [`write_disk`] made.
#[derive(Debug, Clone)]
pub struct DiskReport {
    /// The file written.
    pub output: PathBuf,
    /// Its length in bytes (the virtual disk size for raw).
    pub file_size: u64,
    /// The virtual disk size in bytes.
    pub disk_size: u64,
    /// The GPT disk GUID.
    pub disk_guid: String,
    /// The root file system's UUID (`root=UUID=...`, `/etc/fstab`).
    pub root_uuid: String,
    /// The root file system's size in bytes.
    pub root_size: u64,
    /// The ESP's FAT serial (`XXXX-XXXX`, as in `/etc/fstab` and `/dev/disk/by-uuid`).
    pub esp_uuid: String,
    /// The kernel version booted (`6.1.0-…-cloud-amd64`).
    pub kernel: String,
    /// The boot menu label.
    pub label: String,
    /// `/etc/os-release`'s `IMAGE_VERSION` (empty when the spec sets no version or revision).
    pub image_version: String,
}

/// The values the disk is made with, from the spec (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `IMAGE_ID` of `/etc/os-release`: the last component of `[image] name`.
    pub image_id: String,
    /// `IMAGE_VERSION`: `[image] version`, else `[image] revision` (may be empty).
    pub image_version: String,
    /// `[image] revision` (may be empty), as `IMAGE_REVISION`.
    pub revision: String,
    /// `/etc/hostname`.
    pub hostname: String,
    /// The boot menu entry's title.
    pub label: String,
    /// The volume ID (the ESP's FAT label is its first 11 characters).
    pub volume_id: String,
    /// The kernel command line after `root=`: strata's console settings, then `[boot] cmdline`.
    pub cmdline: Vec<String>,
    /// Fixed root file system size, if set.
    pub root_size: Option<u64>,
    /// Free space to leave in the root file system.
    pub free_space: u64,
    /// cloud-init is installed and configured.
    pub cloud_init: bool,
    /// An ISO carries the disk and installs it.
    pub installer: bool,
}

impl Settings {
    /// The settings for `spec`'s `[boot]`.
    pub fn new(spec: &Spec, boot: &BootSection) -> Self {
        let last = spec
            .image
            .name
            .rsplit('/')
            .next()
            .unwrap_or("strata")
            .to_owned();
        let annotation = |k: &str| {
            spec.image
                .annotations
                .get(&format!("org.opencontainers.image.{k}"))
                .cloned()
                .unwrap_or_default()
        };
        let (version, revision) = (annotation("version"), annotation("revision"));
        let image_version = if version.is_empty() {
            revision.clone()
        } else {
            version
        };
        let mut hostname: String = last
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63)
            .collect();
        hostname = hostname.trim_matches('-').to_owned();
        if hostname.is_empty() {
            hostname = "strata".into();
        }
        let volume_id: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let label = match &boot.label {
            Some(l) => l.clone(),
            None => format!("{last} {image_version}").trim().to_owned(),
        };
        let mut cmdline = vec![
            "rw".to_owned(),
            "console=tty0".to_owned(),
            "console=ttyS0,115200n8".to_owned(),
        ];
        cmdline.extend(boot.cmdline.iter().cloned());
        Self {
            image_id: last.to_ascii_lowercase(),
            image_version,
            revision,
            hostname: boot.hostname.clone().unwrap_or(hostname),
            label,
            volume_id: boot.volume_id.clone().unwrap_or(volume_id),
            cmdline,
            root_size: boot.root_size,
            free_space: boot.free_space,
            cloud_init: boot.cloud_init,
            installer: boot.installer,
        }
    }

    /// A canonical text of the settings (for [`Identity`]).
    pub fn canonical(&self) -> String {
        format!("{self:?}")
    }
}

/// Alignment of partitions: 1 MiB.
const MIB: u64 = 1 << 20;
/// GPT type GUID of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// The root partition's GPT type for the image architecture (the Discoverable Partitions
/// Specification's, so systemd's generators know it too).
fn root_type(architecture: &str) -> Result<&'static str, VmError> {
    match architecture {
        "amd64" => Ok("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "arm64" => Ok("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        other => Err(VmError::Image(format!(
            "disk images are made for amd64 (and laid out for arm64), not for `{other}`"
        ))),
    }
}

/// The removable-media boot loader path UEFI firmware looks for, per architecture.
fn efi_boot_name(architecture: &str) -> (&'static str, &'static str) {
    match architecture {
        "arm64" => ("BOOTAA64.EFI", "systemd-bootaa64.efi"),
        _ => ("BOOTX64.EFI", "systemd-bootx64.efi"),
    }
}

/// Makes the disk image `req` asks for.
pub fn write_disk(req: &DiskRequest<'_>) -> Result<DiskReport, VmError> {
    let boot = req.spec.boot.as_ref().ok_or_else(|| {
        VmError::Image(format!(
            "{}: a disk image needs a [boot] table in the spec (the kernel, init and boot \
             settings)",
            req.spec.path.display()
        ))
    })?;
    let architecture = req.spec.image.architecture.as_str();
    let root_type = root_type(architecture)?;
    let settings = Settings::new(req.spec, boot);
    let identity = Identity::new(
        req.image.config_digest.as_str(),
        &format!("{}\0{}", settings.canonical(), req.source_date_epoch),
    );
    let ids = IdMapping::detect();
    let layers: Vec<LayerFile> = req
        .image
        .layers
        .iter()
        .map(|l| LayerFile {
            path: l.path.clone(),
            compression: l.compression,
        })
        .collect();
    let diff_ids: Vec<&str> = req
        .image
        .layers
        .iter()
        .map(|l| l.digests.diff_id.as_str())
        .collect();
    let rootfs = strata_sandbox::prepare_rootfs_over_kept(
        req.store,
        req.image.config_digest.hex(),
        &layers,
        &diff_ids,
        &ids,
    )?;

    let scratch = req.store.scratch_dir();
    fs::create_dir_all(&scratch).map_err(io_err("create", &scratch))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("disk-{}-", std::process::id()))
        .tempdir_in(&scratch)
        .map_err(io_err("create a temporary directory in", &scratch))?;
    let build = if req.format == Format::Iso {
        build_iso
    } else {
        build_in
    };
    let result = build(
        req,
        &settings,
        &identity,
        root_type,
        &rootfs,
        &ids,
        work.path(),
    );
    // The staged tree holds files of the image's owners: removed in the user namespace.
    let _ = strata_sandbox::remove_tree(&ids, &work.path().join("stage"));
    result
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    req: &DiskRequest<'_>,
    settings: &Settings,
    identity: &Identity,
    root_type: &str,
    rootfs: &Path,
    ids: &IdMapping,
    work: &Path,
) -> Result<DiskReport, VmError> {
    let architecture = req.spec.image.architecture.as_str();
    let sde = req.source_date_epoch;
    let (kernel_version, vmlinuz, initrd) = find_kernel(rootfs)?;
    let root_uuid = identity.uuid("root-fs");
    let serial = identity.fat_serial();
    let esp_uuid = format!("{}-{}", &serial[..4], &serial[4..]);

    // The root file system.
    let os_release = os_release(rootfs, settings)?;
    let mut fstab = format!(
        "# Written by strata: the root and EFI system partitions by file system UUID.\n\
         UUID={root_uuid} / ext4 rw,relatime,errors=remount-ro 0 1\n\
         UUID={esp_uuid} /boot/efi vfat umask=0077 0 0\n"
    );
    if !fstab.ends_with('\n') {
        fstab.push('\n');
    }
    let mut files = vec![
        root::StagedFile::new("etc/os-release", os_release, 0o644),
        root::StagedFile::new("etc/hostname", format!("{}\n", settings.hostname), 0o644),
        root::StagedFile::new("etc/fstab", fstab, 0o644),
        root::StagedFile::new(
            "etc/kernel/cmdline",
            format!("root=UUID={root_uuid} {}\n", settings.cmdline.join(" ")),
            0o644,
        ),
    ];
    if settings.cloud_init {
        files.push(cloud_init_file());
    }
    let root_img = work.join("root.img");
    let plan = root::RootPlan {
        rootfs: rootfs.to_owned(),
        stage: work.join("stage"),
        image: root_img.clone(),
        config: work.join("mke2fs.conf"),
        files,
        dirs: vec!["boot/efi".to_owned()],
        uuid: root_uuid.clone(),
        source_date_epoch: sde,
        root_size: settings.root_size,
        free_space: settings.free_space,
        squashfs: false,
    };
    let root_size = root::make_root(&plan, ids)?;
    ext4::clamp_inode_times(&root_img, sde).map_err(io_err("set the inode times of", &root_img))?;

    // The EFI system partition.
    let esp_dir = work.join("esp");
    let options = format!("root=UUID={root_uuid} {}", settings.cmdline.join(" "));
    let esp_files = esp_files(
        architecture,
        rootfs,
        settings,
        &kernel_version,
        vmlinuz,
        initrd,
        &options,
    )?;
    let esp_img = work.join("esp.img");
    let esp_size = make_esp(&esp_dir, &esp_img, &esp_files, settings, &serial, sde, true)?;

    // The disk: GPT, partitions at 1 MiB boundaries, 1 MiB at the end for the backup table.
    let esp_start = MIB;
    let root_start = esp_start + esp_size;
    let disk_size = root_start + root_size + MIB;
    let disk_guid = identity.uuid("disk");
    let raw = work.join("disk.raw");
    // The root file system image becomes the disk where its file system can move its data
    // up without copying it (ext4, XFS); else it is copied into a new disk file.
    let root_in_place =
        insert_hole(&root_img, root_start).map_err(io_err("make room in", &root_img))?;
    if root_in_place {
        fs::rename(&root_img, &raw).map_err(io_err("rename", &root_img))?;
    }
    {
        let f = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&raw)
            .map_err(io_err("create", &raw))?;
        f.set_len(disk_size).map_err(io_err("size", &raw))?;
    }
    let script = format!(
        "label: gpt\nlabel-id: {disk_guid}\nunit: sectors\nfirst-lba: 2048\n\
         start={}, size={}, type={ESP_TYPE}, uuid={}, name=\"esp\"\n\
         start={}, size={}, type={root_type}, uuid={}, name=\"root\"\n",
        esp_start / 512,
        esp_size / 512,
        identity.uuid("esp-partition"),
        root_start / 512,
        root_size / 512,
        identity.uuid("root-partition"),
    );
    sfdisk(&raw, &script)?;
    copy_into(&esp_img, &raw, esp_start)?;
    if !root_in_place {
        copy_into(&root_img, &raw, root_start)?;
    }

    // The output, atomically.
    let out = req.output;
    let temp = temp_beside(out)?;
    let temp_path = temp.path().to_owned();
    match req.format {
        Format::Raw | Format::Iso => {
            copy_into(&raw, &temp_path, 0)?;
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&temp_path)
                .map_err(io_err("open", &temp_path))?;
            f.set_len(disk_size).map_err(io_err("size", &temp_path))?;
            f.sync_all().map_err(io_err("write", &temp_path))?;
        }
        Format::Qcow2 => {
            run_tool(
                Command::new("qemu-img")
                    .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&temp_path),
            )?;
        }
    }
    let file_size = persist(temp, out)?;
    Ok(DiskReport {
        output: out.to_owned(),
        file_size,
        disk_size,
        disk_guid,
        root_uuid,
        root_size,
        esp_uuid,
        kernel: kernel_version,
        label: settings.label.clone(),
        image_version: settings.image_version.clone(),
    })
}

/// The ESP's files: systemd-boot as the removable-media loader, its configuration, one entry
/// with `options`, the kernel and the initramfs.
fn esp_files(
    architecture: &str,
    rootfs: &Path,
    settings: &Settings,
    kernel_version: &str,
    vmlinuz: PathBuf,
    initrd: PathBuf,
    options: &str,
) -> Result<Vec<(String, EspContent)>, VmError> {
    let (boot_name, loader_name) = efi_boot_name(architecture);
    let loader = rootfs.join("usr/lib/systemd/boot/efi").join(loader_name);
    if !loader.is_file() {
        return Err(VmError::Image(format!(
            "the image has no `/usr/lib/systemd/boot/efi/{loader_name}` (package systemd-boot-efi, \
             which [boot] installs)"
        )));
    }
    let entry = format!(
        "title {}\nversion {}\nlinux /vmlinuz\ninitrd /initrd.img\noptions {options}\n",
        settings.label,
        if settings.image_version.is_empty() {
            kernel_version
        } else {
            &settings.image_version
        },
    );
    Ok(vec![
        (format!("EFI/BOOT/{boot_name}"), EspContent::File(loader)),
        (
            "loader/loader.conf".into(),
            EspContent::Text("default strata.conf\ntimeout 1\nconsole-mode keep\n".into()),
        ),
        ("loader/entries/strata.conf".into(), EspContent::Text(entry)),
        ("vmlinuz".into(), EspContent::File(vmlinuz)),
        ("initrd.img".into(), EspContent::File(initrd)),
    ])
}

/// A temporary file beside `out`, renamed over it by [`persist`].
fn temp_beside(out: &Path) -> Result<tempfile::NamedTempFile, VmError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    tempfile::Builder::new()
        .prefix(&strata_oci::output::temp_prefix())
        .tempfile_in(&parent)
        .map_err(io_err("create a temporary file in", &parent))
}

fn persist(temp: tempfile::NamedTempFile, out: &Path) -> Result<u64, VmError> {
    let temp_path = temp.path().to_owned();
    fs::set_permissions(&temp_path, fs::Permissions::from_mode(0o644))
        .map_err(io_err("set the mode of", &temp_path))?;
    temp.persist(out)
        .map_err(|e| io_err("write", out)(e.error))?;
    Ok(fs::metadata(out).map_err(io_err("stat", out))?.len())
}

/// The live ISO: the staged root as `/live/filesystem.squashfs` (live-boot's default), an El
/// Torito EFI boot image (the ESP, with `boot=live` on the kernel command line), the volume ID
/// of `[boot]`, every time `SOURCE_DATE_EPOCH` (xorriso honours it).
#[allow(clippy::too_many_arguments)]
fn build_iso(
    req: &DiskRequest<'_>,
    settings: &Settings,
    identity: &Identity,
    _root_type: &str,
    rootfs: &Path,
    ids: &IdMapping,
    work: &Path,
) -> Result<DiskReport, VmError> {
    let architecture = req.spec.image.architecture.as_str();
    let sde = req.source_date_epoch;
    let (kernel_version, vmlinuz, initrd) = find_kernel(rootfs)?;
    let os_release = os_release(rootfs, settings)?;
    let mut files = vec![
        root::StagedFile::new("etc/os-release", os_release, 0o644),
        root::StagedFile::new("etc/hostname", format!("{}\n", settings.hostname), 0o644),
        root::StagedFile::new(
            "etc/fstab",
            "# Written by strata: a live system; / is the ISO's squashfs under a memory overlay.\n",
            0o644,
        ),
    ];
    if settings.cloud_init {
        files.push(cloud_init_file());
    }
    let iso_dir = work.join("iso");
    let live = iso_dir.join("live");
    fs::create_dir_all(&live).map_err(io_err("create", &live))?;
    if settings.installer {
        // The disk the installer writes: the raw disk of the same image and settings, made
        // in a work directory of its own.
        let install = iso_dir.join("install");
        fs::create_dir_all(&install).map_err(io_err("create", &install))?;
        let disk_work = work.join("disk");
        fs::create_dir_all(&disk_work).map_err(io_err("create", &disk_work))?;
        let disk_path = install.join("disk.img");
        let disk_req = DiskRequest {
            spec: req.spec,
            image: req.image,
            store: req.store,
            format: Format::Raw,
            output: &disk_path,
            source_date_epoch: sde,
        };
        let result = build_in(
            &disk_req, settings, identity, _root_type, rootfs, ids, &disk_work,
        );
        let _ = strata_sandbox::remove_tree(ids, &disk_work.join("stage"));
        result?;
        files.push(root::StagedFile::new(
            "usr/lib/strata/install-disk",
            INSTALLER_SCRIPT,
            0o755,
        ));
        files.push(root::StagedFile::new(
            "etc/systemd/system/strata-install.service",
            INSTALLER_UNIT,
            0o644,
        ));
        files.push(root::StagedFile::link(
            "etc/systemd/system/multi-user.target.wants/strata-install.service",
            "/etc/systemd/system/strata-install.service",
        ));
    }
    let squashfs = live.join("filesystem.squashfs");
    let plan = root::RootPlan {
        rootfs: rootfs.to_owned(),
        stage: work.join("stage"),
        image: squashfs.clone(),
        config: work.join("mke2fs.conf"),
        files,
        dirs: vec![],
        uuid: identity.uuid("root-fs"),
        source_date_epoch: sde,
        root_size: None,
        free_space: 0,
        squashfs: true,
    };
    let root_size = root::make_root(&plan, ids)?;
    let _ = fs::remove_file(live.join("filesystem.size"));
    let options = format!(
        "boot=live live-media-path=/live {}",
        settings.cmdline.join(" ")
    );
    let esp = esp_files(
        architecture,
        rootfs,
        settings,
        &kernel_version,
        vmlinuz,
        initrd,
        &options,
    )?;
    let boot_dir = iso_dir.join("boot");
    fs::create_dir_all(&boot_dir).map_err(io_err("create", &boot_dir))?;
    let serial = identity.fat_serial();
    make_esp(
        &work.join("esp"),
        &boot_dir.join("efi.img"),
        &esp,
        settings,
        &serial,
        sde,
        false,
    )?;
    // xorriso records the tree's times: every entry gets SOURCE_DATE_EPOCH.
    set_tree_times(&iso_dir, sde)?;
    let temp = temp_beside(req.output)?;
    let _ = fs::remove_file(temp.path());
    run_tool(
        Command::new("xorriso")
            .env("SOURCE_DATE_EPOCH", sde.to_string())
            .env("LC_ALL", "C")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-R",
                "-J",
                "-V",
                &settings.volume_id,
            ])
            .args([
                "-e",
                "boot/efi.img",
                "-no-emul-boot",
                "-isohybrid-gpt-basdat",
            ])
            .arg("-o")
            .arg(temp.path())
            .arg(&iso_dir),
    )?;
    let file_size = persist(temp, req.output)?;
    Ok(DiskReport {
        output: req.output.to_owned(),
        file_size,
        disk_size: file_size,
        disk_guid: String::new(),
        root_uuid: String::new(),
        root_size,
        esp_uuid: format!("{}-{}", &serial[..4], &serial[4..]),
        kernel: kernel_version,
        label: settings.label.clone(),
        image_version: settings.image_version.clone(),
    })
}

/// Sets the modification time of `dir` and everything below it to `sde`.
fn set_tree_times(dir: &Path, sde: u64) -> Result<(), VmError> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sde);
    let mut stack = vec![dir.to_owned()];
    let mut dirs = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err("list", &d))?.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                File::options()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_modified(time))
                    .map_err(io_err("set the time of", &p))?;
            }
        }
        dirs.push(d);
    }
    // Directories last, deepest first: filling them changed their times.
    for d in dirs.iter().rev() {
        File::open(d)
            .and_then(|f| f.set_modified(time))
            .map_err(io_err("set the time of", d))?;
    }
    Ok(())
}

/// The live system's installer: writes `/install/disk.img` of the boot medium to the first
/// disk that is not removable, not zram, loop or a CD, not the boot medium, at least as large
/// as the image, and empty (no partition table, no file system signature), then powers off.
const INSTALLER_SCRIPT: &str = r#"#!/bin/sh
# Written by strata ([boot] installer = true).
set -eu
say() { echo "STRATA-INSTALLER $*" >/dev/console; echo "STRATA-INSTALLER $*" >/dev/ttyS0 2>/dev/null || true; }
src=/run/live/medium/install/disk.img
[ -f "$src" ] || { say "no disk image at $src"; exit 0; }
medium=$(findmnt -n -o SOURCE /run/live/medium || true)
medium_disk=$(lsblk -n -d -o PKNAME "$medium" 2>/dev/null || true)
need=$(stat -c %s "$src")
lsblk -d -n -b -o NAME,TYPE,RM,SIZE | while read -r name type rm size; do
    case "$name" in zram*|loop*|sr*|ram*) continue ;; esac
    [ "$type" = disk ] && [ "$rm" = 0 ] || continue
    [ "/dev/$name" != "$medium" ] && [ "$name" != "$medium_disk" ] || continue
    [ "$size" -ge "$need" ] || continue
    # Empty: no partitions, no partition table, no file system signature.
    [ "$(lsblk -n -o NAME "/dev/$name" | wc -l)" = 1 ] || continue
    [ -z "$(blkid -p -o value -s TYPE "/dev/$name" 2>/dev/null)" ] || continue
    [ -z "$(blkid -p -o value -s PTTYPE "/dev/$name" 2>/dev/null)" ] || continue
    say "writing $src to /dev/$name"
    dd if="$src" of="/dev/$name" bs=4M conv=fsync status=none
    sync
    say "installed to /dev/$name; powering off"
    poweroff -f
done
say "no empty disk to install to; the live system runs on"
"#;

const INSTALLER_UNIT: &str = "[Unit]\n\
Description=Install the disk image to an empty disk (strata)\n\
After=local-fs.target systemd-udev-settle.service\n\
Wants=systemd-udev-settle.service\n\
Before=multi-user.target\n\
ConditionPathExists=/run/live/medium/install/disk.img\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/usr/lib/strata/install-disk\n\
StandardOutput=journal+console\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

fn cloud_init_file() -> root::StagedFile {
    root::StagedFile::new(
        "etc/cloud/cloud.cfg.d/90-strata-datasources.cfg",
        "# Written by strata: Proxmox and other hypervisors give user-data on a NoCloud\n\
         # (cidata) or ConfigDrive (config-2) volume.\n\
         datasource_list: [ NoCloud, ConfigDrive, None ]\n",
        0o644,
    )
}

/// The newest kernel in the image's `/boot` and its initramfs.
fn find_kernel(rootfs: &Path) -> Result<(String, PathBuf, PathBuf), VmError> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .map_err(|_| {
            VmError::Image(
                "the image has no /boot: [boot]'s kernel package did not install a kernel".into(),
            )
        })?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    let Some(version) = versions.pop() else {
        return Err(VmError::Image(
            "the image has no /boot/vmlinuz-*: [boot]'s kernel package did not install a kernel"
                .into(),
        ));
    };
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(VmError::Image(format!(
            "the image has no /boot/initrd.img-{version}: the kernel's initramfs hook did not run \
             (it runs in the configure step: keep [base].debian's `configure` on, and \
             initramfs-tools installed)"
        )));
    }
    Ok((
        version.clone(),
        boot.join(format!("vmlinuz-{version}")),
        initrd,
    ))
}

/// Compares kernel versions by their numeric runs (`6.1.0-10` < `6.1.0-9` as text, not here).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut num = String::new();
        let mut text = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !text.is_empty() {
                    out.push((0, std::mem::take(&mut text)));
                }
                num.push(c);
            } else {
                if !num.is_empty() {
                    out.push((num.parse().unwrap_or(u64::MAX), String::new()));
                    num.clear();
                }
                text.push(c);
            }
        }
        if !num.is_empty() {
            out.push((num.parse().unwrap_or(u64::MAX), String::new()));
        }
        if !text.is_empty() {
            out.push((0, text));
        }
        out
    }
    parts(a).cmp(&parts(b))
}

/// `/etc/os-release`: the image's own (Debian's `/usr/lib/os-release`) with `IMAGE_ID`,
/// `IMAGE_VERSION` and `IMAGE_REVISION` set.
fn os_release(rootfs: &Path, settings: &Settings) -> Result<String, VmError> {
    let mut base = String::new();
    for candidate in ["usr/lib/os-release", "etc/os-release"] {
        let p = rootfs.join(candidate);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            base = fs::read_to_string(&p).map_err(io_err("read", &p))?;
            break;
        }
    }
    let mut out: String = base
        .lines()
        .filter(|l| {
            !["IMAGE_ID=", "IMAGE_VERSION=", "IMAGE_REVISION="]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let quote = |v: &str| {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' | '`' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    };
    out.push_str(&format!("IMAGE_ID={}\n", quote(&settings.image_id)));
    if !settings.image_version.is_empty() {
        out.push_str(&format!(
            "IMAGE_VERSION={}\n",
            quote(&settings.image_version)
        ));
    }
    if !settings.revision.is_empty() {
        out.push_str(&format!("IMAGE_REVISION={}\n", quote(&settings.revision)));
    }
    Ok(out)
}

enum EspContent {
    File(PathBuf),
    Text(String),
}

/// FAT has no times before 1980.
const FAT_EPOCH: u64 = 315_532_800;

/// Makes the FAT32 ESP image; returns its size in bytes.
fn make_esp(
    dir: &Path,
    img: &Path,
    files: &[(String, EspContent)],
    settings: &Settings,
    serial: &str,
    sde: u64,
    roomy: bool,
) -> Result<u64, VmError> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sde.max(FAT_EPOCH));
    let mut content = 0u64;
    for (rel, c) in files {
        let dest = dir.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        match c {
            EspContent::File(src) => {
                fs::copy(src, &dest).map_err(io_err("copy", src))?;
            }
            EspContent::Text(t) => fs::write(&dest, t).map_err(io_err("write", &dest))?,
        }
        let f = File::options()
            .write(true)
            .open(&dest)
            .map_err(io_err("open", &dest))?;
        content += f.metadata().map_err(io_err("stat", &dest))?.len();
        f.set_modified(time)
            .map_err(io_err("set the time of", &dest))?;
    }
    // Directories too: mcopy -m keeps their times as well.
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).map_err(io_err("list", &d))?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
        File::open(&d)
            .and_then(|f| f.set_modified(time))
            .map_err(io_err("set the time of", &d))?;
    }
    // Room for a second kernel and initramfs (an update), at least 64 MiB, whole MiB.
    // An ISO's boot image only needs what it holds (FAT32 needs 33 MiB at least).
    let size = if roomy {
        (content * 2 + 16 * MIB).max(64 * MIB)
    } else {
        (content + content / 10 + 4 * MIB).max(36 * MIB)
    }
    .div_ceil(MIB)
        * MIB;
    let label: String = settings.volume_id.chars().take(11).collect();
    run_tool(
        Command::new("mkfs.vfat")
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", sde.max(FAT_EPOCH).to_string())
            .args(["--invariant", "-i", serial, "-C", "-F", "32", "-S", "512"])
            .args(["-s", "1", "-n", &label])
            .arg(img)
            .arg((size / 1024).to_string()),
    )?;
    let mut mcopy = Command::new("mcopy");
    mcopy
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", sde.max(FAT_EPOCH).to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-m", "-p", "-Q", "-i"])
        .arg(img);
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|(rel, _)| rel.split('/').next().map(str::to_owned))
        .collect();
    tops.sort();
    tops.dedup();
    for t in &tops {
        mcopy.arg(dir.join(t));
    }
    mcopy.arg("::");
    run_tool(&mut mcopy)?;
    Ok(size)
}

fn sfdisk(raw: &Path, script: &str) -> Result<(), VmError> {
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(raw)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| VmError::Tool {
            tool: "sfdisk".into(),
            message: format!("cannot run it ({e}); install fdisk"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io_err("write the partition table of", raw))?;
    }
    let out = child.wait_with_output().map_err(io_err("partition", raw))?;
    if !out.status.success() {
        return Err(VmError::Tool {
            tool: "sfdisk".into(),
            message: format!("{}: {}", out.status, tail(&out.stdout, &out.stderr)),
        });
    }
    Ok(())
}

/// Copies `src` into `dest` at byte `offset`, skipping runs of zeros (the destination is
/// sparse and already zero there).
fn copy_into(src: &Path, dest: &Path, offset: u64) -> Result<(), VmError> {
    let mut from = File::open(src).map_err(io_err("open", src))?;
    let mut to = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dest)
        .map_err(io_err("open", dest))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let r = from.read(&mut buf[n..]).map_err(io_err("read", src))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        // Whole 4 KiB blocks of zeros are skipped.
        let mut i = 0;
        while i < n {
            let end = (i + 4096).min(n);
            let block = &buf[i..end];
            if block.iter().any(|&b| b != 0) {
                to.seek(SeekFrom::Start(pos + i as u64))
                    .map_err(io_err("seek in", dest))?;
                to.write_all(block).map_err(io_err("write", dest))?;
            }
            i = end;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Inserts `len` bytes of hole at the start of the file at `path`, moving its data up without
/// copying it (`FALLOC_FL_INSERT_RANGE`; `len` a multiple of the file system's block size).
/// `Ok(false)`, the file unchanged, where the file system cannot.
fn insert_hole(path: &Path, len: u64) -> io::Result<bool> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let file = File::options().write(true).open(path)?;
    let Ok(len) = i64::try_from(len) else {
        return Ok(false);
    };
    match fallocate(&file, FallocateFlags::FALLOC_FL_INSERT_RANGE, 0, len) {
        Ok(()) => Ok(true),
        Err(
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS,
        ) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable_and_distinct() {
        let a = Identity::new("sha256:aa", "s");
        let b = Identity::new("sha256:aa", "s");
        let c = Identity::new("sha256:ab", "s");
        assert_eq!(a.uuid("disk"), b.uuid("disk"));
        assert_ne!(a.uuid("disk"), a.uuid("root-fs"));
        assert_ne!(a.uuid("disk"), c.uuid("disk"));
        let u = a.uuid("disk");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(a.fat_serial().len(), 8);
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        let mut v = [
            "6.1.0-9-cloud-amd64",
            "6.1.0-10-cloud-amd64",
            "5.10.0-1-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v.last(), Some(&"6.1.0-10-cloud-amd64"));
    }
}
