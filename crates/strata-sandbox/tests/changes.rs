//! A run with `keep_changes` over a plain directory (the shape of a later Debian *configure*
//! step: no network, root inside, the run's effects read back from the overlay's upper
//! directory).

#![allow(missing_docs)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_sandbox::changes::{Change, scan_upper};
use strata_sandbox::{Command, ExitStatus, Sandbox, Stdio, User};
use strata_test_support::{require, require_that};

fn busybox_root(dir: &Path) -> bool {
    if !require(&["static:/bin/busybox"]) {
        return false;
    }
    let bytes = fs::read("/bin/busybox").expect("read /bin/busybox");
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::write(dir.join("bin/busybox"), bytes).expect("write");
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).expect("symlink");
    fs::create_dir_all(dir.join("etc/old")).expect("mkdir");
    fs::write(dir.join("etc/old/x"), "x").expect("write");
    fs::write(dir.join("etc/gone.conf"), "gone").expect("write");
    fs::write(dir.join("etc/kept.conf"), "kept").expect("write");
    true
}

#[test]
fn keep_changes_records_additions_deletions_and_opaque_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lower = tmp.path().join("lower");
    if !busybox_root(&lower) {
        return;
    }
    let changes_dir = tmp.path().join("changes");
    let mut sandbox = Sandbox::new(vec![lower.clone()], tmp.path().join("scratch"));
    sandbox.keep_changes = Some(changes_dir.clone());
    let (mut out_r, out_w) = std::io::pipe().expect("pipe");
    let script = "echo new > /etc/new.conf; rm /etc/gone.conf; rm -r /etc/old; \
                  mkdir /etc/old; echo y > /etc/old/y; echo ok";
    let status = sandbox.run(Command {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into(), "DEBIAN_FRONTEND=noninteractive".into()],
        user: User::root(),
        workdir: "/".into(),
        tty: false,
        stdin: Stdio::Null,
        stdout: Stdio::Fd(out_w.into()),
        stderr: Stdio::Inherit,
    });
    let status = match status {
        Ok(s) => s,
        Err(e) if e.to_string().contains("user namespace") => {
            require_that(false, &format!("no user namespaces here: {e}"));
            return;
        }
        Err(e) => panic!("run: {e}"),
    };
    let mut text = String::new();
    out_r.read_to_string(&mut text).expect("read");
    assert_eq!(status, ExitStatus::Exited(0), "{text}");
    assert_eq!(text, "ok\n");
    // The lower directory is untouched.
    assert!(lower.join("etc/gone.conf").exists() && lower.join("etc/old/x").exists());
    assert!(!lower.join("etc/new.conf").exists());
    let changes = scan_upper(&changes_dir.join("upper")).expect("scan");
    assert!(
        changes.contains(&Change::Upsert("etc/new.conf".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Change::Delete("etc/gone.conf".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Change::Opaque("etc/old".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Change::Upsert("etc/old/y".into())),
        "{changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::Upsert(p) if p == Path::new("etc/kept.conf")))
    );
    assert!(
        !changes_dir.join("work").exists(),
        "overlayfs's work directory is removed"
    );
}

/// Each way of making the throwaway root runs the command and leaves the lower directory as
/// it was.
#[test]
fn every_root_mechanism_is_throwaway() {
    use strata_sandbox::RootfsMode;
    let tmp = tempfile::tempdir().expect("tempdir");
    let lower = tmp.path().join("lower");
    if !busybox_root(&lower) {
        return;
    }
    for mode in [
        RootfsMode::Overlay,
        RootfsMode::FuseOverlayfs,
        RootfsMode::Copy,
    ] {
        if mode == RootfsMode::FuseOverlayfs
            && !(require(&["fuse-overlayfs"])
                && require_that(Path::new("/dev/fuse").exists(), "/dev/fuse is missing"))
        {
            continue;
        }
        let mut sandbox = Sandbox::new(vec![lower.clone()], tmp.path().join("scratch"));
        sandbox.rootfs_mode = mode;
        let (mut out_r, out_w) = std::io::pipe().expect("pipe");
        let result = sandbox.run(Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "rm /etc/kept.conf && echo z > /etc/z && /bin/busybox cat /etc/old/x".into(),
            ],
            env: vec!["PATH=/bin".into()],
            user: User::root(),
            workdir: "/".into(),
            tty: false,
            stdin: Stdio::Null,
            stdout: Stdio::Fd(out_w.into()),
            stderr: Stdio::Inherit,
        });
        let status = match result {
            Ok(s) => s,
            Err(e) if e.to_string().contains("user namespace") => {
                require_that(false, &format!("no user namespaces here: {e}"));
                return;
            }
            Err(e) => panic!("{mode:?}: {e}"),
        };
        let mut text = String::new();
        out_r.read_to_string(&mut text).expect("read");
        assert_eq!(
            (status, text.as_str()),
            (ExitStatus::Exited(0), "x"),
            "{mode:?}"
        );
        assert!(
            lower.join("etc/kept.conf").exists(),
            "{mode:?} changed the lower dir"
        );
        assert!(
            !lower.join("etc/z").exists(),
            "{mode:?} changed the lower dir"
        );
        let left: Vec<_> = fs::read_dir(tmp.path().join("scratch"))
            .expect("scratch")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{mode:?} left {left:?}");
    }
}
