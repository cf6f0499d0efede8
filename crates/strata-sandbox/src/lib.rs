//! Running commands inside an image's root file system, isolated and without root on the
//! host.
//!
//! A [`Sandbox`] is a stack of read-only directories (usually one: an image unpacked once
//! into the store by [`prepare_rootfs`]) plus settings. [`Sandbox::run`] mounts a throwaway
//! overlay over them (overlayfs in the user namespace, else fuse-overlayfs, else a copy), so
//! the directories are never modified, and runs one command in new user, mount, PID, UTS
//! and IPC namespaces (and a new network namespace unless asked for the host's), with
//! `/proc`, a minimal `/dev`, a tmpfs `/tmp`, and `pivot_root` into the new root. Root inside
//! is the caller outside; see [`IdMapping`].
//!
//! The setup is planned as data ([`plan::plan`]) and carried out by an [`plan::Ops`]
//! implementation, so the planning is tested without privileges.
//!
//! A step that needs a run's *changes* (the Debian configure layer: `dpkg --configure -a`
//! with no network, its effects as one layer) sets [`Sandbox::keep_changes`]: the overlay's
//! upper directory is kept there and [`changes::scan_upper`] lists what was added, modified
//! and deleted.
//!
//! ```no_run
//! # fn main() -> Result<(), strata_sandbox::SandboxError> {
//! use strata_sandbox::{Command, Sandbox, Stdio, User, changes::scan_upper};
//! // Package trees unpacked by strata (top first), a directory for this run's changes.
//! let mut sandbox = Sandbox::new(vec!["/store/pkgs".into()], "/store/v1/tmp".into());
//! sandbox.keep_changes = Some("/store/configure-1234".into()); // network stays off
//! let log = std::fs::File::create("/store/configure-1234.log").expect("log");
//! let status = sandbox.run(Command {
//!     argv: vec!["dpkg".into(), "--configure".into(), "-a".into()],
//!     env: vec![
//!         "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
//!         "DEBIAN_FRONTEND=noninteractive".into(),
//!         "SOURCE_DATE_EPOCH=1".into(),
//!     ],
//!     user: User::root(),
//!     workdir: "/".into(),
//!     tty: false,
//!     stdin: Stdio::Null,
//!     stdout: Stdio::Fd(log.try_clone().expect("dup").into()),
//!     stderr: Stdio::Fd(log.into()),
//! })?;
//! assert_eq!(status.code(), 0);
//! for change in scan_upper(std::path::Path::new("/store/configure-1234/upper"))? {
//!     // Upsert(path) → add upper/path to the layer; Delete(path) → `.wh.NAME`;
//!     // Opaque(dir) → `dir/.wh..wh..opq`.
//!     let _ = change;
//! }
//! # Ok(())
//! # }
//! ```

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod changes;
pub mod idmap;
pub mod image;
pub mod paths;
pub mod plan;
pub mod real;
pub mod rootfs;
mod spawn;
pub mod user;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;

pub use idmap::{IdMapping, IdRange, MapWriter};
pub use image::{RunRequest, image_command};
pub use plan::{BindMount, RootfsMode};
pub use rootfs::{
    LayerFile, keep_rootfs, layers_key, prepare_rootfs, prepare_rootfs_over_kept,
    remove_unused_rootfs, rootfs_build_dir, unpack_over, unpack_rootfs,
};
pub use spawn::{in_user_namespace, remove_tree};
pub use user::{User, resolve_user};

/// A sandbox failure. Messages name the path, the system call and the errno.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file operation on the host failed.
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
    /// A system call failed.
    #[error("{call} failed")]
    Sys {
        /// The call and its argument.
        call: String,
        /// The errno.
        #[source]
        errno: Errno,
    },
    /// The kernel refused to create a user namespace.
    #[error(
        "cannot create a user namespace ({0}): unprivileged user namespaces are disabled on this \
         machine. Allow them with `sysctl -w user.max_user_namespaces=15000` (it must be non-zero), \
         on Debian kernels before 11 also `sysctl -w kernel.unprivileged_userns_clone=1`, and on \
         Ubuntu 23.10 or later `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an \
         AppArmor profile allowing `userns` for strata); or run strata as root"
    )]
    NoUserNamespaces(Errno),
    /// Writing the id maps failed.
    #[error("cannot write the user namespace's id map: {0}")]
    IdMap(String),
    /// A layer holds something that cannot be unpacked safely.
    #[error("layer `{layer}`: `{entry}` {reason}")]
    Layer {
        /// The blob.
        layer: PathBuf,
        /// The member.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// Setting up the sandbox failed (inside the new namespaces).
    #[error("setting up the sandbox failed: {0}")]
    Setup(String),
    /// The command could not be executed.
    #[error("cannot run the command: {message}")]
    Exec {
        /// What went wrong, naming the command.
        message: String,
        /// The command was not found (exit status 127; else 126).
        not_found: bool,
    },
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
}

/// The error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's view: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(c) => c,
            Self::Signaled(s) => 128 + s,
        }
    }
}

/// Where one of the command's standard streams goes.
#[derive(Debug, Default)]
pub enum Stdio {
    /// strata's own.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// This file or pipe.
    Fd(OwnedFd),
}

/// The command to run.
#[derive(Debug)]
pub struct Command {
    /// Program and arguments; a program without `/` is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Who runs it.
    pub user: User,
    /// Working directory inside (created when missing).
    pub workdir: String,
    /// Give it a new pseudo-terminal, connected to strata's terminal.
    pub tty: bool,
    /// Standard input (ignored with `tty`).
    pub stdin: Stdio,
    /// Standard output (ignored with `tty`).
    pub stdout: Stdio,
    /// Standard error (ignored with `tty`).
    pub stderr: Stdio,
}

/// A root file system and the isolation settings to run commands in.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The read-only directories making up `/`, top first (overlay order).
    pub lower: Vec<PathBuf>,
    /// Where per-run temporary directories go (the store's `tmp/`).
    pub scratch: PathBuf,
    /// The id mapping.
    pub ids: IdMapping,
    /// Share the host's network (and its `resolv.conf` and `hosts`).
    pub network: bool,
    /// Extra bind mounts.
    pub mounts: Vec<BindMount>,
    /// Host name inside.
    pub hostname: String,
    /// Keep the run's changes: the overlay upper directory is `DIR/upper` (created; left in
    /// place after the run for [`changes::scan_upper`]). Needs overlayfs or fuse-overlayfs.
    pub keep_changes: Option<PathBuf>,
    /// How the throwaway root is made (default: the best the kernel allows).
    pub rootfs_mode: RootfsMode,
}

impl Sandbox {
    /// A sandbox over `lower` (top first) with this process's id mapping, no network, no
    /// extra mounts.
    pub fn new(lower: Vec<PathBuf>, scratch: PathBuf) -> Self {
        Self {
            lower,
            scratch,
            ids: IdMapping::detect(),
            network: false,
            mounts: Vec::new(),
            hostname: "strata".into(),
            keep_changes: None,
            rootfs_mode: RootfsMode::Auto,
        }
    }

    /// The lower directories as paths (for [`resolve_user`]).
    pub fn roots(&self) -> Vec<&Path> {
        self.lower.iter().map(PathBuf::as_path).collect()
    }

    /// The namespaces a run creates (besides the user namespace).
    pub fn clone_flags(&self) -> CloneFlags {
        let mut flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        if !self.network {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        flags
    }

    /// The setup steps for a run whose temporary directory is `run_dir`.
    pub fn setup_spec(&self, run_dir: &Path, workdir: &str) -> plan::SetupSpec {
        let (upper, work) = match &self.keep_changes {
            Some(dir) => (dir.join("upper"), dir.join("work")),
            None => (run_dir.join("upper"), run_dir.join("work")),
        };
        plan::SetupSpec {
            rootfs_mode: self.rootfs_mode,
            lower: self.lower.clone(),
            upper,
            work,
            root: run_dir.join("root"),
            network: self.network,
            mounts: self.mounts.clone(),
            hostname: self.hostname.clone(),
            workdir: (workdir != "/").then(|| PathBuf::from(workdir)),
        }
    }

    /// Runs `command` and waits for it. Signals strata receives (INT, TERM, HUP, QUIT, USR1,
    /// USR2) are passed on; the run's temporary directories are removed afterwards.
    pub fn run(&self, command: Command) -> Result<ExitStatus, SandboxError> {
        fs::create_dir_all(&self.scratch).map_err(|source| SandboxError::Io {
            action: "create",
            path: self.scratch.clone(),
            source,
        })?;
        sweep_dead(&self.ids, &self.scratch, "run-");
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("run-{}-", std::process::id()))
            .tempdir_in(&self.scratch)
            .map_err(|source| SandboxError::Io {
                action: "create a temporary directory in",
                path: self.scratch.clone(),
                source,
            })?
            .keep();
        let result = self.run_in(&run_dir, command);
        let cleanup = remove_tree(&self.ids, &run_dir);
        if let Some(dir) = &self.keep_changes {
            let _ = remove_tree(&self.ids, &dir.join("work"));
        }
        let status = result?;
        cleanup?;
        Ok(status)
    }

    fn run_in(&self, run_dir: &Path, command: Command) -> Result<ExitStatus, SandboxError> {
        let spec = self.setup_spec(run_dir, &command.workdir);
        for dir in [&spec.upper, &spec.work, &spec.root] {
            fs::create_dir_all(dir).map_err(|source| SandboxError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        }
        let ops = plan::plan(&spec);
        let cstr = |s: &str, what: &str| {
            CString::new(s)
                .map_err(|_| SandboxError::Invalid(format!("{what} `{s}` holds a NUL byte")))
        };
        let argv = command
            .argv
            .iter()
            .map(|a| cstr(a, "argument"))
            .collect::<Result<Vec<_>, _>>()?;
        if argv.is_empty() {
            return Err(SandboxError::Invalid("no command to run".into()));
        }
        let env = command
            .env
            .iter()
            .map(|e| cstr(e, "environment entry"))
            .collect::<Result<Vec<_>, _>>()?;
        let path_var = command
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_owned();
        let (console_parent, console_child) = if command.tty {
            let (a, b) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|errno| SandboxError::Sys {
                call: "socketpair".into(),
                errno,
            })?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let exec = spawn::Exec {
            argv,
            env,
            path_var,
            uid: command.user.uid,
            gid: command.user.gid,
            groups: command.user.groups.clone(),
            workdir: cstr(&command.workdir, "working directory")?,
            stdin: command.stdin,
            stdout: command.stdout,
            stderr: command.stderr,
            pty_slave: None,
            console: console_child,
        };
        let (err_r, err_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| SandboxError::Sys {
                call: "pipe2".into(),
                errno,
            })?;
        let root = spec.root.clone();
        let pid = spawn::fork_in_namespaces(&self.ids, self.clone_flags(), move || {
            spawn::outer_main(ops, root, exec, err_w)
        })?;
        let _forwarding = spawn::Forwarding::start(pid);
        let master = console_parent.as_ref().and_then(spawn::receive_console);
        drop(console_parent);
        let mut tty = match master {
            Some(m) => Some(
                spawn::TtySession::start(m).map_err(|source| SandboxError::Io {
                    action: "set up the terminal",
                    path: "/dev/tty".into(),
                    source,
                })?,
            ),
            None => None,
        };
        let mut message = Vec::new();
        let mut file = fs::File::from(err_r);
        let _ = io::Read::read_to_end(&mut file, &mut message);
        let status = spawn::wait_for(pid)?;
        if let Some(t) = tty.as_mut() {
            t.finish();
        }
        drop(tty);
        if let Some((&kind, text)) = message.split_first() {
            let text = String::from_utf8_lossy(text).into_owned();
            return Err(match kind {
                b'N' => SandboxError::Exec {
                    message: text,
                    not_found: true,
                },
                b'X' => SandboxError::Exec {
                    message: text,
                    not_found: false,
                },
                _ if !self.ids.is_host_root() && text.contains("Operation not permitted") => {
                    SandboxError::Setup(format!(
                        "{text} (a security module may forbid unprivileged user namespaces: \
                         on Ubuntu see `kernel.apparmor_restrict_unprivileged_userns`)"
                    ))
                }
                _ => SandboxError::Setup(text),
            });
        }
        Ok(status)
    }
}

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Removes run directories of strata processes that no longer exist (killed with SIGKILL).
/// A private directory in memory (under `/dev/shm`, when it is a tmpfs with `min_free`
/// bytes free) for throwaway trees: a root file system unpacked for one run and the run's
/// changes. Writing there skips the disk's journal and the `fsync`s dpkg makes. Entries left
/// by processes that died (named `PID-...`) are removed first. `None` when there is no such
/// place (a container's 64 MB `/dev/shm`, say) or it is not safely ours; use the store then.
pub fn memory_scratch(ids: &IdMapping, min_free: u64) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let shm = Path::new("/dev/shm");
    let st = nix::sys::statfs::statfs(shm).ok()?;
    if st.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    let free = st.blocks_available().saturating_mul(st.block_size() as u64);
    if free < min_free {
        return None;
    }
    let uid = nix::unistd::geteuid().as_raw();
    let dir = shm.join(format!("strata-{uid}"));
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    // /dev/shm is shared by every user: use the directory only if it is ours and private.
    let meta = fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    sweep_dead(ids, &dir, "");
    Some(dir)
}

/// Removes the entries of `dir` named `PREFIXPID-...` whose process no longer exists.
fn sweep_dead(ids: &IdMapping, dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_tree(ids, &entry.path());
        }
    }
}
