//! The setup of a sandbox as data: which mounts, in what order, then `pivot_root`. The plan
//! is computed by the parent and carried out in the child by an [`Ops`] implementation: the
//! real one makes the system calls, the recording one (for tests) only writes them down.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

/// A bind mount asked for by the user (`--mount SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// Where it appears inside the sandbox (absolute).
    pub target: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

impl BindMount {
    /// Parses `SRC:DST[:ro|:rw]`. `SRC` is made absolute against the current directory.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (rest, readonly) = if let Some(r) = spec.strip_suffix(":ro") {
            (r, true)
        } else if let Some(r) = spec.strip_suffix(":rw") {
            (r, false)
        } else {
            (spec, false)
        };
        let (src, dst) = rest
            .split_once(':')
            .ok_or_else(|| format!("`{spec}`: a mount is SRC:DST[:ro]"))?;
        if src.is_empty() || !dst.starts_with('/') {
            return Err(format!(
                "`{spec}`: a mount is SRC:DST[:ro] with an absolute DST"
            ));
        }
        let source = std::path::absolute(src).map_err(|e| format!("`{src}`: {e}"))?;
        Ok(Self {
            source,
            target: PathBuf::from(dst),
            readonly,
        })
    }
}

/// One step of the setup. Paths named `path` are inside the new root (resolved against it,
/// symlinks scoped to it); `host` paths are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make every mount private, so nothing done here propagates to the host.
    PrivatizeMounts,
    /// Mount the root file system at `target` (a host directory): an overlay of `lower` (top
    /// first) with `upper`/`work`; if the kernel refuses, fuse-overlayfs; else a copy of the
    /// lower directories into `upper`, bind-mounted.
    RootFs {
        /// Which mechanisms to try.
        mode: RootfsMode,
        /// Read-only layers, top first.
        lower: Vec<PathBuf>,
        /// Where changes go.
        upper: PathBuf,
        /// overlayfs's work directory (same file system as `upper`).
        work: PathBuf,
        /// The mount point, which becomes `/`.
        target: PathBuf,
    },
    /// A fresh file system (`proc`, `tmpfs`, `devpts`).
    Mount {
        /// File system type.
        fstype: &'static str,
        /// Inside path.
        path: PathBuf,
        /// Mount flags.
        flags: MsFlags,
        /// Options.
        data: String,
    },
    /// Bind-mount a host device node onto an empty file.
    BindDevice {
        /// Host device (`/dev/null`).
        host: PathBuf,
        /// Inside path.
        path: PathBuf,
    },
    /// Bind-mount a host file or directory (recursively).
    Bind {
        /// Host path.
        host: PathBuf,
        /// Inside path.
        path: PathBuf,
        /// Remount read-only.
        readonly: bool,
    },
    /// Create a directory (and its parents).
    Dir {
        /// Inside path.
        path: PathBuf,
    },
    /// Create (replace) a symlink.
    Symlink {
        /// Inside path.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// Set the UTS namespace's host name.
    Hostname(String),
    /// Bring the loopback interface up (in a new network namespace).
    LoopbackUp,
    /// `pivot_root` into the new root and detach the old one.
    PivotRoot,
}

/// How the throwaway root is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RootfsMode {
    /// overlayfs, else fuse-overlayfs, else a copy.
    #[default]
    Auto,
    /// overlayfs only.
    Overlay,
    /// fuse-overlayfs only.
    FuseOverlayfs,
    /// A copy of the lower directories (reflinked where possible); changes are not
    /// recorded as whiteouts.
    Copy,
}

/// What a sandbox's setup depends on.
#[derive(Debug, Clone)]
pub struct SetupSpec {
    /// How the root is made.
    pub rootfs_mode: RootfsMode,
    /// Read-only layers, top first.
    pub lower: Vec<PathBuf>,
    /// Upper (changes) directory.
    pub upper: PathBuf,
    /// overlayfs work directory.
    pub work: PathBuf,
    /// Mount point of the new root.
    pub root: PathBuf,
    /// Host network shared (else a new, empty network namespace).
    pub network: bool,
    /// User bind mounts.
    pub mounts: Vec<BindMount>,
    /// Host name inside.
    pub hostname: String,
    /// Working directory to create if missing.
    pub workdir: Option<PathBuf>,
}

/// Device nodes bind-mounted from the host into `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The setup steps, in order.
pub fn plan(spec: &SetupSpec) -> Vec<Op> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut ops = vec![
        Op::PrivatizeMounts,
        Op::RootFs {
            mode: spec.rootfs_mode,
            lower: spec.lower.clone(),
            upper: spec.upper.clone(),
            work: spec.work.clone(),
            target: spec.root.clone(),
        },
        Op::Mount {
            fstype: "proc",
            path: "/proc".into(),
            flags: nosuid_nodev | MsFlags::MS_NOEXEC,
            data: String::new(),
        },
        Op::Mount {
            fstype: "tmpfs",
            path: "/dev".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: "mode=0755,size=65536k".into(),
        },
    ];
    for dev in DEVICES {
        ops.push(Op::BindDevice {
            host: Path::new("/dev").join(dev),
            path: Path::new("/dev").join(dev),
        });
    }
    ops.push(Op::Mount {
        fstype: "devpts",
        path: "/dev/pts".into(),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620".into(),
    });
    ops.push(Op::Symlink {
        path: "/dev/ptmx".into(),
        target: "pts/ptmx".into(),
    });
    ops.push(Op::Mount {
        fstype: "tmpfs",
        path: "/dev/shm".into(),
        flags: nosuid_nodev,
        data: "mode=1777".into(),
    });
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            path: Path::new("/dev").join(name),
            target: target.into(),
        });
    }
    // Read-only; a new sysfs shows the sandbox's own network devices.
    ops.push(Op::Mount {
        fstype: "sysfs",
        path: "/sys".into(),
        flags: nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        data: String::new(),
    });
    ops.push(Op::Mount {
        fstype: "tmpfs",
        path: "/tmp".into(),
        flags: nosuid_nodev,
        data: "mode=1777".into(),
    });
    if spec.network {
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(file).exists() {
                ops.push(Op::Bind {
                    host: file.into(),
                    path: file.into(),
                    readonly: true,
                });
            }
        }
    } else {
        ops.push(Op::LoopbackUp);
    }
    for m in &spec.mounts {
        ops.push(Op::Bind {
            host: m.source.clone(),
            path: m.target.clone(),
            readonly: m.readonly,
        });
    }
    if let Some(dir) = &spec.workdir {
        ops.push(Op::Dir { path: dir.clone() });
    }
    ops.push(Op::Hostname(spec.hostname.clone()));
    ops.push(Op::PivotRoot);
    ops
}

/// Carries out setup steps. The real implementation ([`crate::real::RealOps`]) makes the
/// system calls in the child; [`RecordingOps`] writes them down.
pub trait Ops {
    /// Carries out one step. The error is a complete message (step, path, errno).
    fn apply(&mut self, op: &Op) -> Result<(), String>;
}

/// Writes every step down and succeeds (tests of the planning logic).
#[derive(Debug, Default)]
pub struct RecordingOps {
    /// The steps, in the order they were applied.
    pub applied: Vec<Op>,
}

impl Ops for RecordingOps {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.applied.push(op.clone());
        Ok(())
    }
}

/// Applies `ops` in order, stopping at the first failure.
pub fn apply_all(ops: &[Op], exec: &mut dyn Ops) -> Result<(), String> {
    ops.iter().try_for_each(|op| exec.apply(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: bool) -> SetupSpec {
        SetupSpec {
            rootfs_mode: RootfsMode::Auto,
            lower: vec!["/store/rootfs/abc".into()],
            upper: "/tmp/run/upper".into(),
            work: "/tmp/run/work".into(),
            root: "/tmp/run/merged".into(),
            network,
            mounts: vec![BindMount::parse("/srv/data:/data:ro").expect("parse")],
            hostname: "strata".into(),
            workdir: Some("/work".into()),
        }
    }

    fn position(ops: &[Op], pred: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(pred).expect("step present")
    }

    #[test]
    fn root_first_then_proc_dev_tmp_and_pivot_last() {
        let mut rec = RecordingOps::default();
        apply_all(&plan(&spec(false)), &mut rec).expect("record");
        let ops = rec.applied;
        assert_eq!(ops[0], Op::PrivatizeMounts);
        assert!(matches!(&ops[1], Op::RootFs { lower, .. } if lower.len() == 1));
        assert_eq!(ops.last(), Some(&Op::PivotRoot));
        let dev = position(
            &ops,
            |o| matches!(o, Op::Mount { path, .. } if path == Path::new("/dev")),
        );
        let null = position(
            &ops,
            |o| matches!(o, Op::BindDevice { path, .. } if path == Path::new("/dev/null")),
        );
        let pts = position(
            &ops,
            |o| matches!(o, Op::Mount { fstype: "devpts", data, .. } if data.contains("newinstance")),
        );
        let ptmx = position(
            &ops,
            |o| matches!(o, Op::Symlink { path, .. } if path == Path::new("/dev/ptmx")),
        );
        assert!(dev < null && null < pts && pts < ptmx, "{ops:#?}");
        for d in DEVICES {
            assert!(ops.iter().any(
                |o| matches!(o, Op::BindDevice { host, .. } if host == &Path::new("/dev").join(d))
            ));
        }
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::Mount { fstype: "proc", .. }))
        );
        assert!(ops.iter().any(
            |o| matches!(o, Op::Mount { fstype: "tmpfs", path, .. } if path == Path::new("/tmp"))
        ));
        assert!(ops.iter().any(|o| matches!(o, Op::Mount { fstype: "tmpfs", path, .. } if path == Path::new("/dev/shm"))));
        // No network: loopback only, no host files.
        assert!(ops.contains(&Op::LoopbackUp));
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Bind { host, .. } if host == Path::new("/etc/hosts")))
        );
        // The user's mount comes after /tmp and /dev, so it can land inside them.
        let user = position(
            &ops,
            |o| matches!(o, Op::Bind { path, readonly: true, .. } if path == Path::new("/data")),
        );
        let tmp = position(
            &ops,
            |o| matches!(o, Op::Mount { path, .. } if path == Path::new("/tmp")),
        );
        assert!(tmp < user);
        assert!(ops.contains(&Op::Dir {
            path: "/work".into()
        }));
        assert!(ops.contains(&Op::Hostname("strata".into())));
    }

    #[test]
    fn network_shares_resolver_files() {
        let ops = plan(&spec(true));
        assert!(!ops.contains(&Op::LoopbackUp));
        if Path::new("/etc/hosts").exists() {
            assert!(ops.iter().any(|o| matches!(o, Op::Bind { host, readonly: true, .. } if host == Path::new("/etc/hosts"))));
        }
    }

    #[test]
    fn mount_specs() {
        let m = BindMount::parse("/a:/b").expect("parse");
        assert_eq!(
            (m.source.as_path(), m.target.as_path(), m.readonly),
            (Path::new("/a"), Path::new("/b"), false)
        );
        assert!(BindMount::parse("/a:/b:ro").expect("parse").readonly);
        assert!(BindMount::parse("/a").is_err());
        assert!(BindMount::parse("/a:rel").is_err());
    }
}
