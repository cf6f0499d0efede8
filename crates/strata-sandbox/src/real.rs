//! The real [`Ops`]: mounts, `pivot_root`, host name, loopback. Runs in the sandbox's first
//! process, inside its new user and mount namespaces, before anything of the image runs.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use crate::paths::resolve_in_root;
use crate::plan::{Op, Ops, RootfsMode};

/// Carries out setup steps with real system calls; inside paths resolve against `root`.
#[derive(Debug)]
pub struct RealOps {
    /// The new root's mount point (host path).
    pub root: PathBuf,
    /// How the root file system was mounted (`overlay`, `fuse-overlayfs` or `copy`).
    pub rootfs_kind: Option<&'static str>,
}

fn sys(call: &str, path: &Path) -> impl FnOnce(Errno) -> String {
    let msg = format!("{call} `{}`", path.display());
    move |e| format!("{msg}: {} ({})", e.desc(), e as i32)
}

fn io(call: &str, path: &Path) -> impl FnOnce(io::Error) -> String {
    let msg = format!("{call} `{}`", path.display());
    move |e| format!("{msg}: {e}")
}

/// Mount options of the file system at `path` that a bind remount must keep (the kernel
/// refuses to drop locked flags in a user namespace).
fn locked_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(st) = statvfs(path) {
        let f = st.flags();
        for (fs_flag, ms_flag) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs_flag) {
                flags |= ms_flag;
            }
        }
    }
    flags
}

/// overlayfs escapes: `\`, `,` and `:` in a path are written `\\`, `\,` and `\:`.
fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RealOps {
    /// Operations on the new root mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            rootfs_kind: None,
        }
    }

    fn inside(&self, path: &Path, follow_last: bool) -> Result<PathBuf, String> {
        resolve_in_root(&self.root, path, follow_last).map_err(io("resolve", path))
    }

    fn rootfs(
        &mut self,
        mode: RootfsMode,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), String> {
        let lowers: Vec<String> = lower.iter().map(|p| escape(p)).collect();
        let base = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            escape(upper),
            escape(work)
        );
        // In a user namespace overlayfs keeps its metadata in user.* xattrs (kernel ≥ 5.11).
        let mut first_err = None;
        let overlay = matches!(mode, RootfsMode::Auto | RootfsMode::Overlay);
        let attempts = if overlay {
            vec![format!("{base},userxattr"), base.clone()]
        } else {
            Vec::new()
        };
        for data in attempts {
            match mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.as_str()),
            ) {
                Ok(()) => {
                    self.rootfs_kind = Some("overlay");
                    return Ok(());
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if mode == RootfsMode::Overlay {
            return Err(format!(
                "mount overlayfs on `{}`: {}",
                target.display(),
                first_err.map_or("?", |e| e.desc())
            ));
        }
        if mode == RootfsMode::Copy {
            return self.copy_root(lower, upper, target, first_err);
        }
        let fuse = Command::new("fuse-overlayfs")
            .arg("-o")
            .arg(&base)
            .arg(target)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if matches!(fuse, Ok(s) if s.success()) {
            self.rootfs_kind = Some("fuse-overlayfs");
            return Ok(());
        }
        if mode == RootfsMode::FuseOverlayfs {
            return Err(format!(
                "fuse-overlayfs could not mount `{}` ({fuse:?})",
                target.display()
            ));
        }
        self.copy_root(lower, upper, target, first_err)
    }

    fn copy_root(
        &mut self,
        lower: &[PathBuf],
        upper: &Path,
        target: &Path,
        first_err: Option<Errno>,
    ) -> Result<(), String> {
        // Last resort: a private copy (reflinked where the file system can).
        for dir in lower.iter().rev() {
            let status = Command::new("cp")
                .arg("-a")
                .arg("--reflink=auto")
                .arg(format!("{}/.", dir.display()))
                .arg(upper)
                .stdin(std::process::Stdio::null())
                .status()
                .map_err(io("run cp to copy", dir))?;
            if !status.success() {
                return Err(format!(
                    "overlayfs failed ({}), fuse-overlayfs is unavailable, and copying `{}` failed ({status})",
                    first_err.map_or("?", |e| e.desc()),
                    dir.display()
                ));
            }
        }
        mount(
            Some(upper),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("bind-mount the copied root", upper))?;
        self.rootfs_kind = Some("copy");
        Ok(())
    }

    fn bind(&mut self, host: &Path, path: &Path, readonly: bool) -> Result<(), String> {
        let meta = fs::metadata(host).map_err(io("mount", host))?;
        let target = if meta.is_dir() {
            let t = self.inside(path, true)?;
            fs::create_dir_all(&t).map_err(io("create the mount point", &t))?;
            t
        } else {
            // A file mount point: a symlink there (resolv.conf often is one) is replaced.
            let t = self.inside(path, false)?;
            if let Ok(m) = fs::symlink_metadata(&t)
                && !m.is_file()
            {
                if m.is_dir() {
                    fs::remove_dir_all(&t).map_err(io("replace", &t))?;
                } else {
                    fs::remove_file(&t).map_err(io("replace", &t))?;
                }
            }
            if let Some(parent) = t.parent() {
                fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            if !t.exists() {
                fs::File::create(&t).map_err(io("create the mount point", &t))?;
            }
            t
        };
        mount(
            Some(host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("bind-mount", host))?;
        if readonly {
            let flags =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(&target);
            mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
                .map_err(sys("remount read-only", &target))?;
        }
        Ok(())
    }
}

impl Ops for RealOps {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::PrivatizeMounts => mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(sys("make mounts private under", Path::new("/"))),
            Op::RootFs {
                mode,
                lower,
                upper,
                work,
                target,
            } => self.rootfs(*mode, lower, upper, work, target),
            Op::Mount {
                fstype,
                path,
                flags,
                data,
            } => {
                let target = self.inside(path, true)?;
                fs::create_dir_all(&target).map_err(io("create the mount point", &target))?;
                let data = (!data.is_empty()).then_some(data.as_str());
                match mount(Some(*fstype), &target, Some(*fstype), *flags, data) {
                    Ok(()) => Ok(()),
                    // Some hosts hide parts of /proc, which forbids a new proc mount in a user
                    // namespace; the host's /proc is the fallback (its PID view is wider).
                    Err(Errno::EPERM) if *fstype == "proc" => mount(
                        Some("/proc"),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(sys("bind-mount /proc onto", &target)),
                    // A new sysfs needs a network namespace of our own; with the host's
                    // network, the host's /sys, read-only.
                    Err(Errno::EPERM) if *fstype == "sysfs" => {
                        mount(
                            Some("/sys"),
                            &target,
                            None::<&str>,
                            MsFlags::MS_BIND | MsFlags::MS_REC,
                            None::<&str>,
                        )
                        .map_err(sys("bind-mount /sys onto", &target))?;
                        let flags = MsFlags::MS_BIND
                            | MsFlags::MS_REMOUNT
                            | MsFlags::MS_RDONLY
                            | locked_flags(&target);
                        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
                            .map_err(sys("remount read-only", &target))
                    }
                    Err(e) => Err(sys(&format!("mount {fstype} on"), &target)(e)),
                }
            }
            Op::BindDevice { host, path } => {
                if !host.exists() {
                    return Ok(()); // a host without it (no /dev/tty in some containers)
                }
                let target = self.inside(path, false)?;
                fs::File::create(&target).map_err(io("create", &target))?;
                mount(
                    Some(host.as_path()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(sys("bind-mount", host))
            }
            Op::Bind {
                host,
                path,
                readonly,
            } => self.bind(host, path, *readonly),
            Op::Dir { path } => {
                let target = self.inside(path, true)?;
                if !target.is_dir() {
                    fs::create_dir_all(&target).map_err(io("create", &target))?;
                    let _ = fs::set_permissions(&target, fs::Permissions::from_mode(0o755));
                }
                Ok(())
            }
            Op::Symlink { path, target } => {
                let link = self.inside(path, false)?;
                match fs::symlink_metadata(&link) {
                    Ok(m) if m.is_dir() => {
                        fs::remove_dir_all(&link).map_err(io("replace", &link))?
                    }
                    Ok(_) => fs::remove_file(&link).map_err(io("replace", &link))?,
                    Err(_) => {}
                }
                std::os::unix::fs::symlink(target, &link).map_err(io("create the symlink", &link))
            }
            Op::Hostname(name) => {
                nix::unistd::sethostname(name).map_err(sys("set the host name", Path::new(name)))
            }
            Op::LoopbackUp => loopback_up(),
            Op::PivotRoot => {
                let root = &self.root;
                nix::unistd::chdir(root).map_err(sys("chdir", root))?;
                nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root into", root))?;
                umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root", root))?;
                nix::unistd::chdir("/").map_err(sys("chdir", Path::new("/")))
            }
        }
    }
}

/// `ip link set lo up` through `SIOCGIFFLAGS`/`SIOCSIFFLAGS`.
#[allow(unsafe_code)]
fn loopback_up() -> Result<(), String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket for bringing up lo: {e}"))?;
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags member of
    // `req`, a valid, exclusively borrowed `ifreq` that outlives the call; the socket fd is
    // open for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!("SIOCGIFFLAGS lo: {}", io::Error::last_os_error()));
    }
    // SAFETY: the kernel just filled the flags member of the union, so reading it is sound.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!("SIOCSIFFLAGS lo: {}", io::Error::last_os_error()));
    }
    Ok(())
}
