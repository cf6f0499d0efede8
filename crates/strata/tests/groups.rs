//! The account's supplementary groups take effect in containers (issue 13.5): the image's
//! `User` is the numeric uid alone, so podman and docker take the primary group from
//! `/etc/passwd` and add the groups `/etc/group` lists the account in, while Kubernetes'
//! `runAsNonRoot` still sees a numeric, non-root user.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

/// An image with busybox and an account `dev` (uid 1500) in the groups `docker` and `sudo`.
fn spec(work: &Work, name: &str) {
    let host = std::path::Path::new("/bin/busybox");
    assert!(
        host.is_file(),
        "/bin/busybox is missing; scripts/test installs busybox-static"
    );
    work.file("bb/bin/busybox", std::fs::read(host).unwrap(), 0o755);
    work.symlink("bb/bin/sh", "busybox");
    work.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    work.file("etc/group", "root:x:0:\nsudo:x:27:\n", 0o644);
    work.write_spec(&format!(
        "[image]\nname = \"{name}\"\n\n[base]\ntree = [ {{ src = \"bb/bin\", dest = \"/bin\" }}, \
         {{ src = \"etc\", dest = \"/etc\" }} ]\n\n[account]\nname = \"dev\"\nuid = 1500\n\
         groups = [\"docker\", \"sudo\"]\n\n[config]\ncmd = [\"/bin/busybox\", \"id\"]\n"
    ));
}

fn id_in(tool: &str, reference: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(tool);
    cmd.args(["run", "--rm", "--network=none"])
        .args(extra)
        .arg(reference);
    stdout(&run_ok(&mut cmd))
}

#[test]
fn supplementary_groups_are_effective_under_podman_and_docker() {
    if !require(&["podman", "docker"]) {
        return;
    }
    let work = Work::new();
    spec(&work, &unique_name("groups"));
    let archive = work.out("image.tar");
    let build = work.build(&format!("docker-archive:{}", archive.display()), &[]);
    let reference = build.reference();

    // The image's User is numeric and not root (what runAsNonRoot checks).
    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(config["config"]["User"], "1500");

    let podman = [
        "--cgroup-manager=cgroupfs",
        "--runtime=runc",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=20000:20000",
    ];
    podman_load(&archive);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{reference}"),
    };
    let id = id_in("podman", &image.reference, &podman);
    drop(image);
    assert_groups(&id, "podman");

    run_ok(Command::new("docker").arg("load").arg("-i").arg(&archive));
    let image = LoadedImage {
        tool: "docker",
        reference: reference.clone(),
    };
    let id = id_in("docker", &image.reference, &[]);
    assert_groups(&id, "docker");
}

/// `id` prints `uid=1500(dev) gid=G(dev) groups=G(dev),D(docker),27(sudo)`.
fn assert_groups(id: &str, tool: &str) {
    assert!(id.starts_with("uid=1500(dev) gid="), "{tool}: {id}");
    assert!(
        id.contains("(docker)"),
        "{tool}: the docker group applies: {id}"
    );
    assert!(
        id.contains("27(sudo)"),
        "{tool}: the sudo group applies: {id}"
    );
}

/// `[services] enable` makes the links `systemctl enable` would (issue 13.3), read from the
/// unit's `[Install]` section; an unknown unit is an error naming the units there are.
#[test]
fn services_enable_makes_the_install_links() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    let name = unique_name("services");
    spec(&work, &name);
    work.file(
        "units/demo.service",
        "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/busybox sleep 1\n[Install]\nWantedBy=multi-user.target\nAlias=demo-alias.service\n",
        0o644,
    );
    let text = std::fs::read_to_string(work.spec()).unwrap().replace(
        "{ src = \"etc\", dest = \"/etc\" } ]",
        "{ src = \"etc\", dest = \"/etc\" }, { src = \"units\", dest = \"/usr/lib/systemd/system\" } ]",
    );
    work.write_spec(&format!("{text}\n[services]\nenable = [\"demo\"]\n"));
    let archive = work.out("image.tar");
    let build = work.build(&format!("docker-archive:{}", archive.display()), &[]);
    podman_load(&archive);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    let links = stdout(&run_ok(
        Command::new("podman")
            .args([
                "run",
                "--rm",
                "--network=none",
                "--cgroup-manager=cgroupfs",
                "--runtime=runc",
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=20000:20000",
            ])
            .arg(&image.reference)
            .args([
                "/bin/busybox",
                "sh",
                "-c",
                "cd /etc/systemd/system && for l in multi-user.target.wants/demo.service demo-alias.service; do /bin/busybox readlink $l; done",
            ]),
    ));
    assert_eq!(
        links,
        "/usr/lib/systemd/system/demo.service\n/usr/lib/systemd/system/demo.service\n"
    );
    drop(image);

    work.write_spec(&format!("{text}\n[services]\nenable = [\"dmeo\"]\n"));
    let o = run(work
        .strata()
        .arg("build")
        .arg(work.spec())
        .arg("--output")
        .arg(format!("oci:{}", work.out("oci").display())));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no unit `dmeo.service` in the image (units: demo.service)"),
        "{err}"
    );
    assert!(
        err.contains("strata.toml:"),
        "the error points at the spec: {err}"
    );
}
