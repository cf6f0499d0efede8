//! Processes: forking into new namespaces, writing the id maps, the sandbox's init, the
//! command, signal forwarding and the terminal.
//!
//! ```text
//! strata (host)                 writes the id maps, forwards signals, pumps the pty, cleans up
//!  └─ outer (new user, mount, UTS, IPC, network ns)   forwards signals, passes the status on
//!      └─ init, PID 1 (new PID ns)   mounts, pivot_root, forwards signals, reaps
//!          └─ the command          user, groups, workdir, env; execve
//! ```
//!
//! Each child asks for SIGKILL when its parent dies, and when init exits the kernel kills
//! whatever is left in the PID namespace, so nothing outlives strata. Failures before the
//! command starts travel back on a close-on-exec pipe: an empty pipe at EOF means the command
//! was executed.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, getpid, getppid, pipe2};

use crate::idmap::{IdMapping, MapWriter};
use crate::plan::{Op, apply_all};
use crate::real::RealOps;
use crate::{ExitStatus, SandboxError, Stdio};

/// Ends a forked child at once: no atexit handlers, no flushing of buffers the parent owns.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it ends the process without running any code
    // of the parent's (no atexit handlers, no destructors, no stdio flushing).
    unsafe { libc::_exit(code) }
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn read_to_end(fd: OwnedFd) -> Vec<u8> {
    let mut file = fs::File::from(fd);
    let mut out = Vec::new();
    loop {
        match file.read_to_end(&mut out) {
            Ok(_) => return out,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return out,
        }
    }
}

fn wait_child(pid: Pid) -> Result<ExitStatus, SandboxError> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                return Err(SandboxError::Sys {
                    call: format!("waitpid {pid}"),
                    errno,
                });
            }
        }
    }
}

/// Writes the id maps of the process `pid`, which has just created its user namespace.
pub(crate) fn write_maps(pid: Pid, ids: &IdMapping) -> Result<(), SandboxError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    match &ids.writer {
        MapWriter::Direct => {
            if !ids.is_host_root() {
                // Required before an unprivileged gid_map write.
                let p = proc.join("setgroups");
                fs::write(&p, "deny").map_err(|source| SandboxError::Io {
                    action: "write",
                    path: p,
                    source,
                })?;
            }
            for (file, ranges) in [("uid_map", &ids.uids), ("gid_map", &ids.gids)] {
                let p = proc.join(file);
                fs::write(&p, IdMapping::map_text(ranges)).map_err(|source| SandboxError::Io {
                    action: "write",
                    path: p,
                    source,
                })?;
            }
        }
        MapWriter::Helpers {
            newuidmap,
            newgidmap,
        } => {
            for (helper, ranges) in [(newuidmap, &ids.uids), (newgidmap, &ids.gids)] {
                let out = std::process::Command::new(helper)
                    .args(IdMapping::helper_args(pid.as_raw(), ranges))
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|source| SandboxError::Io {
                        action: "run",
                        path: helper.clone(),
                        source,
                    })?;
                if !out.status.success() {
                    return Err(SandboxError::IdMap(format!(
                        "{} {} failed ({}): {}",
                        helper.display(),
                        IdMapping::helper_args(pid.as_raw(), ranges).join(" "),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Forks a child that creates new namespaces (`flags` plus a user namespace), waits for the
/// parent to write its id maps, becomes root there and runs `child`, exiting with what it
/// returns. Returns the child's pid.
#[allow(unsafe_code)] // see the SAFETY comment inside
pub(crate) fn fork_in_namespaces<F: FnOnce() -> i32>(
    ids: &IdMapping,
    flags: CloneFlags,
    child: F,
) -> Result<Pid, SandboxError> {
    let pipe = |what: &str| {
        pipe2(OFlag::O_CLOEXEC).map_err(|errno| SandboxError::Sys {
            call: format!("pipe2 ({what})"),
            errno,
        })
    };
    let (ready_r, ready_w) = pipe("ready")?;
    let (go_r, go_w) = pipe("go")?;
    let parent = getpid();
    // SAFETY: the child only runs code of this crate: system calls, plus allocation, which
    // glibc's fork makes safe (its atfork handlers leave the allocator consistent). It uses
    // no lock another thread of the parent could hold (no stdio, no environment writes), and
    // leaves with `exit_now`, never returning into the parent's code.
    match unsafe { fork() } {
        Err(errno) => Err(SandboxError::Sys {
            call: "fork".into(),
            errno,
        }),
        Ok(ForkResult::Child) => {
            drop(ready_r);
            drop(go_w);
            let _ = set_pdeathsig(Signal::SIGKILL);
            if getppid() != parent {
                exit_now(1);
            }
            if let Err(errno) = unshare(flags | CloneFlags::CLONE_NEWUSER) {
                write_all(&ready_w, format!("E{}", errno as i32).as_bytes());
                exit_now(1);
            }
            write_all(&ready_w, b"u");
            drop(ready_w);
            let mut byte = [0u8; 1];
            if !matches!(nix::unistd::read(&go_r, &mut byte), Ok(1)) {
                exit_now(1); // the parent could not map us
            }
            drop(go_r);
            let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
            let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
            exit_now(child())
        }
        Ok(ForkResult::Parent { child: pid }) => {
            drop(ready_w);
            drop(go_r);
            drop(child);
            let answer = read_to_end(ready_r);
            let fail = |e: SandboxError| {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = wait_child(pid);
                e
            };
            match answer.first() {
                Some(b'u') => {}
                Some(b'E') => {
                    let n: i32 = String::from_utf8_lossy(&answer[1..]).parse().unwrap_or(0);
                    return Err(fail(SandboxError::NoUserNamespaces(Errno::from_raw(n))));
                }
                _ => {
                    return Err(fail(SandboxError::Setup(
                        "the sandbox process died before creating its namespaces".into(),
                    )));
                }
            }
            if let Err(e) = write_maps(pid, ids) {
                return Err(fail(e));
            }
            write_all(&go_w, b"g");
            Ok(pid)
        }
    }
}

/// Runs `f` as root of a user namespace with the caller's id map (to create or remove files
/// owned by subordinate ids) and waits for it.
pub fn in_user_namespace<F: FnOnce() -> Result<(), String>>(
    ids: &IdMapping,
    f: F,
) -> Result<(), SandboxError> {
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|errno| SandboxError::Sys {
        call: "pipe2".into(),
        errno,
    })?;
    let pid = fork_in_namespaces(ids, CloneFlags::CLONE_NEWNS, move || match f() {
        Ok(()) => 0,
        Err(msg) => {
            write_all(&err_w, msg.as_bytes());
            1
        }
    })?;
    let msg = read_to_end(err_r);
    let status = wait_child(pid)?;
    if !msg.is_empty() {
        return Err(SandboxError::Setup(
            String::from_utf8_lossy(&msg).into_owned(),
        ));
    }
    if status != ExitStatus::Exited(0) {
        return Err(SandboxError::Setup(format!(
            "the user-namespace helper ended with {status:?}"
        )));
    }
    Ok(())
}

/// Removes a directory tree that may hold files owned by subordinate ids or without write
/// permission (overlayfs's work directory).
pub fn remove_tree(ids: &IdMapping, path: &Path) -> Result<(), SandboxError> {
    let direct = match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => e,
    };
    if ids.is_host_root() {
        return Err(SandboxError::Io {
            action: "remove",
            path: path.to_owned(),
            source: direct,
        });
    }
    let target = path.to_owned();
    in_user_namespace(ids, move || {
        fs::remove_dir_all(&target).map_err(|e| format!("remove `{}`: {e}", target.display()))
    })
}

/// Everything the command's process needs, prepared before forking.
pub(crate) struct Exec {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub path_var: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub workdir: CString,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// The command's terminal (opened by init inside the sandbox's own devpts).
    pub pty_slave: Option<OwnedFd>,
    /// With a terminal: init sends the terminal's master side to strata on this socket.
    pub console: Option<OwnedFd>,
}

/// Opens a pseudo-terminal in the sandbox's `/dev/pts` (so `tty` names it inside) and sends
/// its master side over `console`; returns the slave side.
fn open_console(console: &OwnedFd) -> Result<OwnedFd, String> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let sys = |call: &str| {
        let call = call.to_owned();
        move |e: Errno| format!("{call}: {}", e.desc())
    };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("open /dev/ptmx"))?;
    grantpt(&master).map_err(sys("grantpt"))?;
    unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys("ptsname"))?;
    let slave = fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| format!("open `{name}`: {e}"))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        console.as_raw_fd(),
        &[io::IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("send the terminal to strata"))?;
    Ok(OwnedFd::from(slave))
}

/// Receives the terminal's master side from init; `None` when init failed before sending.
#[allow(unsafe_code)] // see the SAFETY comment inside
pub(crate) fn receive_console(console: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        console.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor in our table for this
            // message (SCM_RIGHTS); nothing else refers to it, so we are its only owner.
            return Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// Signals strata passes on to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Child side of the protocol on the error pipe: `S` a setup failure, `N` a command not
/// found, `X` another exec failure.
fn fail(err: &OwnedFd, kind: u8, msg: &str, code: i32) -> ! {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(msg.as_bytes());
    write_all(err, &bytes);
    exit_now(code)
}

/// The outer process (in the new namespaces, not yet in the PID namespace): forks init and
/// relays signals to it until it exits; returns init's status as an exit code.
#[allow(unsafe_code)] // see the SAFETY comment inside
pub(crate) fn outer_main(ops: Vec<Op>, root: PathBuf, exec: Exec, err: OwnedFd) -> i32 {
    let set = forwarded_set();
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    // SAFETY: this process is single-threaded (a fresh fork), so fork has no hazards here.
    let init = match unsafe { fork() } {
        Err(e) => fail(&err, b'S', &format!("fork init: {}", e.desc()), 125),
        Ok(ForkResult::Child) => init_main(ops, root, exec, err),
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(err);
    drop(exec);
    relay(&set, init)
}

/// Waits for `child` while passing forwarded signals on to it; returns its exit code
/// (128 + signal when it was killed).
fn relay(set: &SigSet, child: Pid) -> i32 {
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        return 128 + sig as i32;
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(_) => {}
        }
    }
}

/// PID 1 of the sandbox: sets up the root, starts the command, reaps, relays signals.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn init_main(ops: Vec<Op>, root: PathBuf, mut exec: Exec, err: OwnedFd) -> ! {
    let _ = set_pdeathsig(Signal::SIGKILL);
    let _ = nix::unistd::setgroups(&[]);
    let mut real = RealOps::new(root);
    if let Err(msg) = apply_all(&ops, &mut real) {
        fail(&err, b'S', &msg, 125);
    }
    if let Some(console) = exec.console.take() {
        match open_console(&console) {
            Ok(slave) => exec.pty_slave = Some(slave),
            Err(msg) => fail(&err, b'S', &msg, 125),
        }
    }
    let set = forwarded_set();
    // SAFETY: single-threaded process (a fresh fork), so fork has no hazards here.
    let command = match unsafe { fork() } {
        Err(e) => fail(&err, b'S', &format!("fork the command: {}", e.desc()), 125),
        Ok(ForkResult::Child) => command_main(exec, err),
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(err);
    drop(exec);
    exit_now(relay(&set, command))
}

fn redirect(stdio: &Stdio, fd: i32, err: &OwnedFd) {
    let target = match stdio {
        Stdio::Inherit => return,
        Stdio::Null => match fs::File::options()
            .read(fd == 0)
            .write(fd != 0)
            .open("/dev/null")
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => fail(err, b'S', &format!("open /dev/null: {e}"), 125),
        },
        Stdio::Fd(owned) => match owned.try_clone() {
            Ok(f) => f,
            Err(e) => fail(err, b'S', &format!("dup: {e}"), 125),
        },
    };
    let result = match fd {
        0 => nix::unistd::dup2_stdin(&target),
        1 => nix::unistd::dup2_stdout(&target),
        _ => nix::unistd::dup2_stderr(&target),
    };
    if let Err(e) = result {
        fail(err, b'S', &format!("dup2 onto fd {fd}: {}", e.desc()), 125);
    }
}

/// The command: terminal, identity, directory, then execve.
fn command_main(exec: Exec, err: OwnedFd) -> ! {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = set_pdeathsig(Signal::SIGKILL);
    if let Some(slave) = &exec.pty_slave {
        let _ = nix::unistd::setsid();
        if let Err(e) = rustix::process::ioctl_tiocsctty(slave) {
            fail(&err, b'S', &format!("TIOCSCTTY: {e}"), 125);
        }
        for fd in 0..3 {
            redirect(
                &Stdio::Fd(
                    slave.try_clone().unwrap_or_else(|e| {
                        fail(&err, b'S', &format!("dup the terminal: {e}"), 125)
                    }),
                ),
                fd,
                &err,
            );
        }
    } else {
        redirect(&exec.stdin, 0, &err);
        redirect(&exec.stdout, 1, &err);
        redirect(&exec.stderr, 2, &err);
    }
    let groups: Vec<Gid> = exec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups)
        && !groups.is_empty()
    {
        fail(
            &err,
            b'S',
            &format!("setgroups {:?}: {}", exec.groups, e.desc()),
            125,
        );
    }
    let gid = Gid::from_raw(exec.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        fail(
            &err,
            b'S',
            &format!(
                "cannot switch to gid {}: {} (ids other than 0 need a range for this user in /etc/subgid and newgidmap)",
                exec.gid,
                e.desc()
            ),
            125,
        );
    }
    let uid = Uid::from_raw(exec.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        fail(
            &err,
            b'S',
            &format!(
                "cannot switch to uid {}: {} (ids other than 0 need a range for this user in /etc/subuid and newuidmap)",
                exec.uid,
                e.desc()
            ),
            125,
        );
    }
    if let Err(e) = nix::unistd::chdir(exec.workdir.as_c_str()) {
        fail(
            &err,
            b'S',
            &format!(
                "cannot change to the working directory `{}`: {}",
                exec.workdir.to_string_lossy(),
                e.desc()
            ),
            125,
        );
    }
    let Some(arg0) = exec.argv.first() else {
        fail(&err, b'S', "no command to run", 125);
    };
    let name = arg0.to_string_lossy().into_owned();
    let candidates: Vec<String> = if name.contains('/') {
        vec![name.clone()]
    } else {
        exec.path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| format!("{d}/{name}"))
            .collect()
    };
    let mut last = Errno::ENOENT;
    for candidate in candidates {
        let Ok(path) = CString::new(candidate) else {
            continue;
        };
        let Err(e) = nix::unistd::execve(&path, &exec.argv, &exec.env);
        // Keep the most telling error: "permission denied" beats "not found".
        if e != Errno::ENOENT && e != Errno::ENOTDIR || last == Errno::ENOENT {
            last = e;
        }
    }
    if last == Errno::ENOENT || last == Errno::ENOTDIR {
        fail(
            &err,
            b'N',
            &format!("`{name}` not found (PATH={})", exec.path_var),
            127,
        )
    } else {
        fail(&err, b'X', &format!("`{name}`: {}", last.desc()), 126)
    }
}

/// The pid signals are forwarded to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid > 0
        && let Ok(sig) = Signal::try_from(sig)
    {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by strata to
/// `pid` while alive; the previous handlers come back when dropped.
pub(crate) struct Forwarding {
    old: Vec<(Signal, nix::sys::signal::SigAction)>,
}

impl Forwarding {
    #[allow(unsafe_code)]
    pub(crate) fn start(pid: Pid) -> Self {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, sigaction};
        FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(forward_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for sig in FORWARDED {
            // SAFETY: the handler is async-signal-safe: it loads an atomic and calls kill(2).
            if let Ok(prev) = unsafe { sigaction(sig, &action) } {
                old.push((sig, prev));
            }
        }
        Self { old }
    }
}

impl Drop for Forwarding {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        FORWARD_TO.store(0, Ordering::SeqCst);
        for (sig, prev) in &self.old {
            // SAFETY: restores the handler that was installed before `start`.
            let _ = unsafe { nix::sys::signal::sigaction(*sig, prev) };
        }
    }
}

/// Waits for the outer process and returns its status.
pub(crate) fn wait_for(pid: Pid) -> Result<ExitStatus, SandboxError> {
    wait_child(pid)
}

/// The host side of a terminal session: the host terminal in raw mode, bytes copied both
/// ways, window size followed. Restores the terminal when dropped.
pub(crate) struct TtySession {
    saved: Option<nix::sys::termios::Termios>,
    output: Option<std::thread::JoinHandle<()>>,
}

impl TtySession {
    pub(crate) fn start(master: OwnedFd) -> io::Result<Self> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        let mut to_master = fs::File::from(master.try_clone()?);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_master.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let winsize_master = master.try_clone()?;
        std::thread::spawn(move || {
            let mut last = None;
            loop {
                if let Ok(ws) = rustix::termios::tcgetwinsize(io::stdin()) {
                    let key = (ws.ws_row, ws.ws_col);
                    if last != Some(key) {
                        last = Some(key);
                        if rustix::termios::tcsetwinsize(&winsize_master, ws).is_err() {
                            break;
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        let mut from_master = fs::File::from(master);
        let output = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut out = io::stdout();
            loop {
                match from_master.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // EIO: every holder of the other side is gone
                }
            }
        });
        Ok(Self {
            saved,
            output: Some(output),
        })
    }

    /// Waits until the command's output is drained.
    pub(crate) fn finish(&mut self) {
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
    }
}

impl Drop for TtySession {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
