//! podman with the settings this machine (and CI's) needs: cgroupfs, runc, and ulimits that
//! fit a rootless container.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::work::run_ok;

/// The flags every `podman run` of the tests takes.
pub const PODMAN_RUN_FLAGS: [&str; 6] = [
    "--cgroup-manager=cgroupfs",
    "--runtime=runc",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=20000:20000",
];

/// `podman --cgroup-manager=cgroupfs --runtime=runc` (add the subcommand).
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--cgroup-manager=cgroupfs", "--runtime=runc"])
        .stdin(Stdio::null());
    cmd
}

/// `podman run --rm` with [`PODMAN_RUN_FLAGS`] (add more flags, the image and its command).
pub fn podman_run() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm"])
        .args(PODMAN_RUN_FLAGS)
        .stdin(Stdio::null());
    cmd
}

/// One test's hold on podman's image store while it adds or removes images (dropped: released).
///
/// containers/storage reuses a layer another image already holds and then fails with "layer not
/// known" when a parallel test's `rmi` removes that image mid-load; every load, pull and removal
/// of the tests takes this (a `flock`, so test binaries and processes exclude each other too).
pub struct PodmanStoreLock(#[allow(dead_code)] File);

/// Waits for [`PodmanStoreLock`].
pub fn podman_store_lock() -> PodmanStoreLock {
    let path = std::env::temp_dir().join("strata-tests-podman-store.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    PodmanStoreLock(file)
}

/// `podman load -i ARCHIVE` under [`podman_store_lock`]; panics on failure.
pub fn podman_load(archive: &Path) -> Output {
    let _store = podman_store_lock();
    run_ok(Command::new("podman").arg("load").arg("-i").arg(archive))
}

/// `podman pull --tls-verify=false REFERENCE` under [`podman_store_lock`]; panics on failure.
pub fn podman_pull(reference: &str) -> Output {
    let _store = podman_store_lock();
    run_ok(podman().args(["pull", "--tls-verify=false", reference]))
}
