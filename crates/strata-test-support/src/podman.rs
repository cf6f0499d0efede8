//! podman with the settings this machine (and CI's) needs: cgroupfs, runc, and ulimits that
//! fit a rootless container.

use std::process::{Command, Stdio};

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
