//! The root file system image: the image's unpacked root staged with hard links (never
//! changed in place), the machine's files written over it, sized, and `mkfs.ext4 -d` run on
//! it. Everything that touches the image's files runs as root of a user namespace with the
//! caller's id map (or as root), so owners are kept.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use strata_sandbox::IdMapping;

use crate::{MIB, VmError, io_err};

/// A file strata writes into the root file system (replacing what the image has there).
#[derive(Debug, Clone)]
pub(crate) struct StagedFile {
    /// Path relative to `/`.
    pub rel: String,
    pub content: Vec<u8>,
    pub mode: u32,
    /// `content` is the target of a symbolic link.
    pub symlink: bool,
}

impl StagedFile {
    pub fn new(rel: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            rel: rel.to_owned(),
            content: content.into(),
            mode,
            symlink: false,
        }
    }

    /// A symbolic link at `rel` to `target`.
    pub fn link(rel: &str, target: &str) -> Self {
        Self {
            rel: rel.to_owned(),
            content: target.as_bytes().to_vec(),
            mode: 0o777,
            symlink: true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RootPlan {
    pub rootfs: PathBuf,
    pub stage: PathBuf,
    pub image: PathBuf,
    pub config: PathBuf,
    pub files: Vec<StagedFile>,
    pub dirs: Vec<String>,
    pub uuid: String,
    pub source_date_epoch: u64,
    pub root_size: Option<u64>,
    pub free_space: u64,
    /// Make a compressed read-only squashfs (a live system's root) instead of ext4.
    pub squashfs: bool,
}

/// `mke2fs.conf` of strata's own, so the host's does not change the file system.
fn mke2fs_conf() -> String {
    format!(
        "[defaults]\n\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n\
         \tdefault_mntopts = acl,user_xattr\n\tenable_periodic_fsck = 0\n\tblocksize = 4096\n\
         \tinode_size = 256\n\tinode_ratio = 16384\n\n[fs_types]\n\text4 = {{\n\t\tfeatures = {}\n\t}}\n",
        crate::ext4::FEATURES
    )
}

/// Makes `plan.image`; returns its size in bytes.
pub(crate) fn make_root(plan: &RootPlan, ids: &IdMapping) -> Result<u64, VmError> {
    fs::write(&plan.config, mke2fs_conf()).map_err(io_err("write", &plan.config))?;
    let size_file = plan.image.with_extension("size");
    let run = || -> Result<(), String> {
        let size = stage_and_mkfs(plan)?;
        fs::write(&size_file, size.to_string())
            .map_err(|e| format!("write `{}`: {e}", size_file.display()))
    };
    if ids.is_host_root() {
        run().map_err(VmError::Image)?;
    } else {
        strata_sandbox::in_user_namespace(ids, run)?;
    }
    let text = fs::read_to_string(&size_file).map_err(io_err("read", &size_file))?;
    text.trim()
        .parse()
        .map_err(|_| VmError::Image(format!("`{}` holds no size", size_file.display())))
}

fn stage_and_mkfs(plan: &RootPlan) -> Result<u64, String> {
    // Hard links: the staged tree shares the unpacked image's files, which stay untouched
    // (strata's files replace links, never write through them).
    let cp = |link: bool| {
        let _ = fs::remove_dir_all(&plan.stage);
        let mut c = Command::new("cp");
        c.arg("-a");
        if link {
            c.arg("-l");
        }
        c.arg("--").arg(&plan.rootfs).arg(&plan.stage);
        c.output()
    };
    let linked = cp(true).map_err(|e| format!("run cp: {e}"))?;
    if !linked.status.success() {
        let copied = cp(false).map_err(|e| format!("run cp: {e}"))?;
        if !copied.status.success() {
            return Err(format!(
                "cannot stage the root file system in `{}`: {}",
                plan.stage.display(),
                String::from_utf8_lossy(&copied.stderr).trim()
            ));
        }
    }
    let time = UNIX_EPOCH + Duration::from_secs(plan.source_date_epoch);
    for d in &plan.dirs {
        let p = plan.stage.join(d);
        fs::create_dir_all(&p).map_err(|e| format!("create `{}`: {e}", p.display()))?;
    }
    for f in &plan.files {
        let p = plan.stage.join(&f.rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("create `{}`: {e}", parent.display()))?;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                return Err(format!(
                    "the image has a directory at /{}, where strata writes a file",
                    f.rel
                ));
            }
            Ok(_) => fs::remove_file(&p).map_err(|e| format!("remove `{}`: {e}", p.display()))?,
            Err(_) => {}
        }
        if f.symlink {
            let target = String::from_utf8_lossy(&f.content).into_owned();
            std::os::unix::fs::symlink(&target, &p)
                .map_err(|e| format!("link `{}`: {e}", p.display()))?;
            continue;
        }
        fs::write(&p, &f.content).map_err(|e| format!("write `{}`: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode))
            .map_err(|e| format!("set the mode of `{}`: {e}", p.display()))?;
        let file = fs::File::options()
            .write(true)
            .open(&p)
            .map_err(|e| format!("open `{}`: {e}", p.display()))?;
        file.set_modified(time)
            .map_err(|e| format!("set the time of `{}`: {e}", p.display()))?;
    }
    if plan.squashfs {
        return squashfs(plan);
    }
    let usage = measure(&plan.stage).map_err(|e| format!("measure the root file system: {e}"))?;
    let inodes = usage.inodes + 4096 + plan.free_space / 16384;
    let content = usage.blocks * 4096 + inodes * 256;
    let mut size = match plan.root_size {
        Some(s) => s,
        None => {
            let base = content + content / 20 + plan.free_space + 16 * MIB;
            let journal = if base < (1 << 30) { 16 * MIB } else { 64 * MIB };
            (base + journal).div_ceil(4 * MIB) * 4 * MIB
        }
    };
    let mut last = String::new();
    // A computed size that proves too small (large directories, extent trees) grows; a size
    // the spec fixed does not.
    for _ in 0..3 {
        let _ = fs::remove_file(&plan.image);
        let out = Command::new("mkfs.ext4")
            .env("MKE2FS_CONFIG", &plan.config)
            .env("E2FSPROGS_FAKE_TIME", plan.source_date_epoch.to_string())
            .env("LC_ALL", "C")
            .args([
                "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
            ])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-U")
            .arg(&plan.uuid)
            .arg("-E")
            .arg(format!("hash_seed={},root_owner=0:0", plan.uuid))
            .args(["-L", "root", "-d"])
            .arg(&plan.stage)
            .arg(&plan.image)
            .arg(format!("{}k", size / 1024))
            .output()
            .map_err(|e| format!("cannot run mkfs.ext4 ({e}); install e2fsprogs"))?;
        if out.status.success() {
            return Ok(size);
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned();
        if plan.root_size.is_some() {
            return Err(format!(
                "mkfs.ext4 failed for [boot] root_size = {} MiB (the content needs about {} MiB): {last}",
                size / MIB,
                content / MIB
            ));
        }
        size = (size + size / 4).div_ceil(4 * MIB) * 4 * MIB;
    }
    Err(format!("mkfs.ext4 failed: {last}"))
}

/// `mksquashfs` of the staged tree: owners as staged, every time `SOURCE_DATE_EPOCH`.
fn squashfs(plan: &RootPlan) -> Result<u64, String> {
    let _ = fs::remove_file(&plan.image);
    let sde = plan.source_date_epoch.to_string();
    let out = Command::new("mksquashfs")
        .env("SOURCE_DATE_EPOCH", &sde)
        .env("LC_ALL", "C")
        .arg(&plan.stage)
        .arg(&plan.image)
        .args(["-noappend", "-no-progress", "-quiet", "-comp", "zstd"])
        .output()
        .map_err(|e| format!("cannot run mksquashfs ({e}); install squashfs-tools"))?;
    if !out.status.success() {
        return Err(format!(
            "mksquashfs failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::metadata(&plan.image)
        .map(|m| m.len())
        .map_err(|e| format!("stat `{}`: {e}", plan.image.display()))
}

#[derive(Debug, Default)]
struct Usage {
    blocks: u64,
    inodes: u64,
}

/// Blocks (4 KiB) and inodes the tree needs, hard links counted once.
fn measure(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let mut entries = 0u64;
        for e in fs::read_dir(&dir)? {
            let e = e?;
            entries += 1;
            let m = fs::symlink_metadata(e.path())?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            usage.inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                usage.blocks += m.len().div_ceil(4096);
            } else if m.file_type().is_symlink() && m.len() > 59 {
                usage.blocks += 1;
            }
        }
        usage.blocks += 1 + entries * 40 / 4096;
    }
    Ok(usage)
}
