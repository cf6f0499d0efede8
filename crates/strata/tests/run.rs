//! `strata run`: the real binary runs commands in images built from small tree specs that
//! hold the host's static busybox, in its rootless sandbox.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A spec whose image holds busybox (`/bin/busybox`, `/bin/sh`), an /etc/passwd with a
/// `coder` account (1000), and `/work` owned by it; the config runs as 1000 in /work.
fn busybox_spec(work: &Work) {
    let host = Path::new("/bin/busybox");
    assert!(
        host.is_file(),
        "/bin/busybox is missing; scripts/test installs busybox-static"
    );
    work.file(
        "bb/bin/busybox",
        fs::read(host).expect("read busybox"),
        0o755,
    );
    work.symlink("bb/bin/sh", "busybox");
    work.file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000::/home/coder:/bin/sh\n",
        0o644,
    );
    work.file("etc/group", "root:x:0:\ncoder:x:1000:\n", 0o644);
    work.dir("work", 0o755);
    work.write_spec(
        r#"
[image]
name = "run-test"

[base]
tree = [ { src = "bb/bin", dest = "/bin" }, { src = "etc", dest = "/etc" } ]

[user]
tree = [ { src = "work", dest = "/work", uid = 1000, gid = 1000 } ]

[config]
env = { GREETING = "hello-from-strata" }
workdir = "/work"
user = "1000:1000"
"#,
    );
}

fn strata_run(work: &Work, target: &str, args: &[&str]) -> Command {
    let mut cmd = work.strata();
    cmd.arg("run").arg(target).args(args);
    cmd
}

/// Runs `strata run SPEC ARGS` and returns its output (any status).
fn run_spec(work: &Work, args: &[&str]) -> Output {
    run(&mut strata_run(work, &work.spec().to_string_lossy(), args))
}

fn run_spec_ok(work: &Work, args: &[&str]) -> String {
    let out = run_spec(work, args);
    assert!(
        out.status.success(),
        "strata run {args:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn run_dirs(work: &Work) -> Vec<String> {
    fs::read_dir(work.store().join("v1/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("run-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn runs_a_command_and_passes_its_exit_status() {
    let work = Work::new();
    busybox_spec(&work);
    assert_eq!(
        run_spec_ok(&work, &["--", "/bin/busybox", "echo", "hi"]),
        "hi\n"
    );
    let out = run_spec(&work, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = run_spec(&work, &["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143), "killed by SIGTERM → 128+15");
    let out = run_spec(&work, &["--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));
    assert!(
        run_dirs(&work).is_empty(),
        "temporary run directories left: {:?}",
        run_dirs(&work)
    );
}

#[test]
fn image_config_and_overrides() {
    let work = Work::new();
    busybox_spec(&work);
    let out = run_spec_ok(
        &work,
        &[
            "--",
            "sh",
            "-c",
            "/bin/busybox id -u; /bin/busybox id -g; pwd; /bin/busybox env",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["1000", "1000", "/work"], "{out}");
    assert!(out.contains("GREETING=hello-from-strata"), "{out}");
    assert!(out.contains("HOME=/home/coder"), "{out}");
    assert!(out.contains("PATH=/usr/local/sbin"), "{out}");

    let out = run_spec_ok(
        &work,
        &[
            "--user",
            "0",
            "--workdir",
            "/tmp",
            "--env",
            "GREETING=over",
            "--env",
            "EXTRA=1",
            "--",
            "sh",
            "-c",
            "/bin/busybox id -u; pwd; echo $GREETING $EXTRA",
        ],
    );
    assert_eq!(out, "0\n/tmp\nover 1\n");
    let out = run_spec_ok(
        &work,
        &["--user", "coder", "--", "/bin/busybox", "id", "-un"],
    );
    assert_eq!(
        out, "coder\n",
        "a user name is looked up in the image's /etc/passwd"
    );
    let out = run_spec(&work, &["--user", "nosuchuser", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("/etc/passwd"), "{}", stderr(&out));
}

#[test]
fn own_pid_namespace_and_no_network_by_default() {
    let work = Work::new();
    busybox_spec(&work);
    let pid: u32 = run_spec_ok(&work, &["--", "sh", "-c", "echo $$"])
        .trim()
        .parse()
        .expect("a pid");
    assert!(
        pid <= 3,
        "the command runs in its own PID namespace (pid {pid})"
    );
    let procs = run_spec_ok(&work, &["--", "/bin/busybox", "ls", "/proc"]);
    let count = procs
        .split_whitespace()
        .filter(|n| n.parse::<u32>().is_ok())
        .count();
    assert!(
        count <= 4,
        "only the sandbox's processes are visible: {procs}"
    );

    let interfaces = |out: &str| -> Vec<String> {
        out.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_owned())
            .collect()
    };
    let sys_net = run_spec_ok(&work, &["--", "/bin/busybox", "ls", "/sys/class/net"]);
    assert_eq!(sys_net.trim(), "lo", "/sys is the sandbox's own");
    let out = run_spec(
        &work,
        &[
            "--user",
            "0",
            "--",
            "sh",
            "-c",
            "echo 1 > /sys/kernel/profiling",
        ],
    );
    assert!(!out.status.success(), "/sys is read-only");
    let isolated = run_spec_ok(&work, &["--", "/bin/busybox", "cat", "/proc/net/dev"]);
    assert_eq!(interfaces(&isolated), ["lo"], "{isolated}");
    let shared = run_spec_ok(
        &work,
        &["--network", "--", "/bin/busybox", "cat", "/proc/net/dev"],
    );
    let mut host = interfaces(&fs::read_to_string("/proc/net/dev").expect("host net"));
    let mut inside = interfaces(&shared);
    host.sort();
    inside.sort();
    assert_eq!(inside, host, "--network shares the host's interfaces");
    let sys_net = run_spec_ok(
        &work,
        &["--network", "--", "/bin/busybox", "ls", "/sys/class/net"],
    );
    assert_eq!(sys_net.split_whitespace().count(), host.len(), "{sys_net}");
    if Path::new("/etc/resolv.conf").exists() {
        let resolv = run_spec_ok(
            &work,
            &["--network", "--", "/bin/busybox", "cat", "/etc/resolv.conf"],
        );
        assert_eq!(
            resolv,
            fs::read_to_string("/etc/resolv.conf").expect("host resolv.conf")
        );
    }
}

#[test]
fn mounts_and_a_throwaway_root() {
    let work = Work::new();
    busybox_spec(&work);
    let host_dir = work.out("shared");
    fs::create_dir_all(&host_dir).expect("mkdir");
    fs::set_permissions(&host_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::write(host_dir.join("in.txt"), "from the host\n").expect("write");
    let rw = format!("{}:/mnt/shared", host_dir.display());
    let out = run_spec_ok(
        &work,
        &[
            "--mount",
            &rw,
            "--",
            "sh",
            "-c",
            "/bin/busybox cat /mnt/shared/in.txt; echo back > /mnt/shared/out.txt",
        ],
    );
    assert_eq!(out, "from the host\n");
    assert_eq!(
        fs::read_to_string(host_dir.join("out.txt")).expect("written"),
        "back\n"
    );
    let ro = format!("{}:/mnt/shared:ro", host_dir.display());
    let out = run_spec(
        &work,
        &[
            "--mount",
            &ro,
            "--",
            "sh",
            "-c",
            "echo no > /mnt/shared/ro.txt",
        ],
    );
    assert!(!out.status.success(), "a read-only mount refuses writes");
    assert!(stderr(&out).contains("Read-only"), "{}", stderr(&out));
    assert!(!host_dir.join("ro.txt").exists());

    // A file written in one run is gone in the next; the cached rootfs never changes.
    let rootfs_dir = work.store().join("v1/sources/rootfs");
    let before = snapshot(&rootfs_dir);
    run_spec_ok(
        &work,
        &[
            "--user",
            "0",
            "--",
            "sh",
            "-c",
            "echo x > /work/scratch && rm /bin/sh && echo y > /etc/passwd",
        ],
    );
    let out = run_spec(&work, &["--", "/bin/busybox", "ls", "/work/scratch"]);
    assert!(
        !out.status.success(),
        "the file of the previous run is gone"
    );
    run_spec_ok(&work, &["--", "/bin/busybox", "test", "-e", "/bin/sh"]);
    let after = snapshot(&rootfs_dir);
    assert_same_tree(&after.nodes, &before.nodes);
    assert!(run_dirs(&work).is_empty(), "{:?}", run_dirs(&work));
}

/// Runs `busybox cat` with `data` on strata's stdin and `args` before the command.
fn cat_stdin(work: &Work, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "/bin/busybox", "cat"]);
    let mut cmd = strata_run(work, &work.spec().to_string_lossy(), &all);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn strata");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"data\nmore data\n")
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn stdin_is_passed_through_with_i() {
    let work = Work::new();
    busybox_spec(&work);
    for flag in ["-i", "--interactive"] {
        let out = cat_stdin(&work, &[flag]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "data\nmore data\n", "{flag}");
    }
}

#[test]
fn without_i_stdin_is_dev_null() {
    let work = Work::new();
    busybox_spec(&work);
    let out = cat_stdin(&work, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "",
        "the command read strata's stdin without -i"
    );
}

/// `dest = "/"`: a directory holding a whole root file system becomes the image's top level.
#[test]
fn tree_dest_root_copies_a_whole_root_file_system() {
    let work = Work::new();
    work.file(
        "rootfs/bin/busybox",
        fs::read("/bin/busybox").expect("read busybox"),
        0o755,
    );
    work.symlink("rootfs/bin/sh", "busybox");
    work.file("rootfs/etc/motd", "a whole root file system\n", 0o644);
    work.dir("rootfs/tmp", 0o1777);
    work.write_spec(
        r#"
[image]
name = "dest-root"

[base]
tree = [ { src = "rootfs", dest = "/" } ]
"#,
    );
    let out = run_spec_ok(
        &work,
        &[
            "--",
            "/bin/sh",
            "-c",
            "cat /etc/motd; ls -ld /tmp | cut -c1-10",
        ],
    );
    assert_eq!(out, "a whole root file system\ndrwxrwxrwt\n");
}

/// Pids of processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sigterm_kills_the_command_and_leaves_nothing() {
    let work = Work::new();
    busybox_spec(&work);
    // Build first, so the signal lands while the command runs.
    run_spec_ok(&work, &["--", "/bin/busybox", "true"]);
    let flag_dir = work.out("flag");
    fs::create_dir_all(&flag_dir).expect("mkdir");
    fs::set_permissions(&flag_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    let marker = format!("{}", 40000 + std::process::id() % 20000);
    let mount = format!("{}:/flag", flag_dir.display());
    let script = format!("echo up > /flag/started; exec /bin/busybox sleep {marker}");
    let mut cmd = strata_run(
        &work,
        &work.spec().to_string_lossy(),
        &["--mount", &mount, "--", "sh", "-c", &script],
    );
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flag_dir.join("started").exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !processes_with(&format!("sleep {marker}")).is_empty(),
        "the command runs"
    );
    let pid = nix_pid(child.id());
    run_ok(Command::new("kill").arg("-TERM").arg(&pid));
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143), "strata exits 128+SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        processes_with(&format!("sleep {marker}")).is_empty(),
        "the command was killed with strata"
    );
    assert!(run_dirs(&work).is_empty(), "{:?}", run_dirs(&work));
}

fn nix_pid(id: u32) -> String {
    id.to_string()
}

/// Starts a long command whose command line holds a unique marker; returns strata's process
/// once the command runs.
fn start_sleeper(work: &Work, marker: &str) -> std::process::Child {
    let flag_dir = work.out(&format!("flag-{marker}"));
    fs::create_dir_all(&flag_dir).expect("mkdir");
    fs::set_permissions(&flag_dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    let mount = format!("{}:/flag", flag_dir.display());
    let script = format!("echo up > /flag/started; exec /bin/busybox sleep {marker}");
    let mut cmd = strata_run(
        work,
        &work.spec().to_string_lossy(),
        &["--mount", &mount, "--", "sh", "-c", &script],
    );
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flag_dir.join("started").exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn ctrl_c_and_kill_leave_nothing_behind() {
    let work = Work::new();
    busybox_spec(&work);
    run_spec_ok(&work, &["--", "/bin/busybox", "true"]);
    // Ctrl-C: SIGINT is passed on; the command dies of it and strata reports 130.
    let marker = format!("{}", 60000 + std::process::id() % 5000);
    let mut child = start_sleeper(&work, &marker);
    run_ok(Command::new("kill").arg("-INT").arg(child.id().to_string()));
    assert_eq!(child.wait().expect("wait").code(), Some(130));
    std::thread::sleep(Duration::from_millis(300));
    assert!(processes_with(&format!("sleep {marker}")).is_empty());
    assert!(run_dirs(&work).is_empty(), "{:?}", run_dirs(&work));

    // SIGKILL gives strata no chance to clean up: the sandbox dies with it (parent-death
    // signal, then the PID namespace), and the next run removes the stale directory.
    let marker = format!("{}", 65000 + std::process::id() % 5000);
    let mut child = start_sleeper(&work, &marker);
    run_ok(
        Command::new("kill")
            .arg("-KILL")
            .arg(child.id().to_string()),
    );
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&format!("sleep {marker}")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the command outlived a killed strata"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run_spec_ok(&work, &["--", "/bin/busybox", "true"]);
    assert!(
        run_dirs(&work).is_empty(),
        "stale run directory swept: {:?}",
        run_dirs(&work)
    );
}

#[test]
fn registry_target_is_pulled_and_run() {
    if !require(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    busybox_spec(&work);
    let reference = reg.docker("run/test:v1");
    work.build(&reference, &[]);
    let out = run(&mut strata_run(
        &work,
        &reference,
        &[
            "--",
            "sh",
            "-c",
            "echo registry $GREETING $(/bin/busybox id -u)",
        ],
    ));
    assert_eq!(
        stdout(&out),
        "registry hello-from-strata 1000\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn oci_and_docker_archive_targets() {
    let work = Work::new();
    busybox_spec(&work);
    let layout = work.out("layout");
    work.build(&format!("oci:{}", layout.display()), &[]);
    let out = run(&mut strata_run(
        &work,
        &format!("oci:{}", layout.display()),
        &["--", "sh", "-c", "echo oci $(/bin/busybox id -u)"],
    ));
    assert_eq!(stdout(&out), "oci 1000\n", "{}", stderr(&out));
    let archive = work.out("image.tar");
    work.build(&format!("docker-archive:{}", archive.display()), &[]);
    let out = run(&mut strata_run(
        &work,
        &format!("docker-archive:{}", archive.display()),
        &["--", "sh", "-c", "echo archive $GREETING"],
    ));
    assert_eq!(
        stdout(&out),
        "archive hello-from-strata\n",
        "{}",
        stderr(&out)
    );
    assert!(run_dirs(&work).is_empty(), "{:?}", run_dirs(&work));
}

#[test]
fn tty_with_it() {
    if !require(&["script"]) {
        return;
    }
    let work = Work::new();
    busybox_spec(&work);
    let line = format!(
        "{} --store {} run -it {} -- sh -c 'tty; test -t 0 && echo stdin-is-a-tty; exit 3'",
        strata_bin().display(),
        work.store().display(),
        work.spec().display()
    );
    let out = run(Command::new("script").args(["-qec", &line, "/dev/null"]));
    let text = stdout(&out);
    assert!(
        text.contains("/dev/pts/0"),
        "the terminal is the sandbox's own pty: {text}"
    );
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
}

const TEST_USER: &str = "strata-run-test";

/// Runs `strata run` as an ordinary user (created when the tests run as root).
#[test]
fn rootless_as_an_ordinary_user() {
    if !is_root() {
        // Already an ordinary user: the other tests exercise the rootless path.
        eprintln!("rootless_as_an_ordinary_user: not root, the other tests run rootless");
        return;
    }
    if run(Command::new("id").arg(TEST_USER)).status.code() != Some(0) {
        let out = run(Command::new("useradd").args(["--create-home", TEST_USER]));
        assert!(
            out.status.success() || stderr(&out).contains("already exists"),
            "useradd: {}",
            stderr(&out)
        );
    }
    let work = Work::new();
    busybox_spec(&work);
    // The user reads the spec and owns its store.
    for dir in [work.root().to_path_buf(), work.spec_dir()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let store = work.out("user-store");
    fs::create_dir_all(&store).expect("mkdir");
    fs::set_permissions(work.root().join("out"), fs::Permissions::from_mode(0o755)).expect("chmod");
    run_ok(Command::new("chown").arg(TEST_USER).arg(&store));
    // A copy of the binary the user can reach (the checkout may live under /root).
    let binary = work.out("strata");
    fs::copy(strata_bin(), &binary).expect("copy strata");
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod");
    let as_user = |args: &[&str]| -> Output {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", TEST_USER, "--"])
            .arg(&binary)
            .arg("--store")
            .arg(&store)
            .arg("run")
            .arg(work.spec())
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("STRATA_STORE");
        run(&mut cmd)
    };
    let probe =
        run(Command::new("runuser").args(["-u", TEST_USER, "--", "unshare", "-Ur", "true"]));
    if !probe.status.success() {
        eprintln!(
            "!!!!! SKIPPING the rootless run: this kernel refuses unprivileged user namespaces ({}) !!!!!",
            stderr(&probe).trim()
        );
        let out = as_user(&["--user", "0", "--", "/bin/busybox", "true"]);
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(
            err.contains("user.max_user_namespaces")
                && err.contains("kernel.unprivileged_userns_clone")
                && err.contains("kernel.apparmor_restrict_unprivileged_userns"),
            "the error names the kernel settings: {err}"
        );
        return;
    }
    let out = as_user(&[
        "--user",
        "0",
        "--",
        "sh",
        "-c",
        "/bin/busybox id -u; echo $$",
    ]);
    assert_eq!(
        stdout(&out),
        "0\n2\n",
        "root inside, own PID namespace: {}",
        stderr(&out)
    );
    let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
    let has_range = subuid
        .lines()
        .any(|l| l.starts_with(&format!("{TEST_USER}:")));
    let out = as_user(&[
        "--",
        "sh",
        "-c",
        "/bin/busybox id -u; pwd; echo x > /work/f && echo wrote",
    ]);
    if has_range && Path::new("/usr/bin/newuidmap").exists() {
        assert_eq!(stdout(&out), "1000\n/work\nwrote\n", "{}", stderr(&out));
    } else {
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("/etc/subuid"), "{}", stderr(&out));
    }
    assert_eq!(
        as_user(&["--", "sh", "-c", "exit 9"]).status.code(),
        Some(9),
        "exit status as an ordinary user"
    );
    let leftovers: Vec<_> = fs::read_dir(store.join("v1/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("run-")),
        "{leftovers:?}"
    );
}

/// With user namespaces refused by the kernel, the error names the settings to change.
#[test]
fn refused_user_namespaces_name_the_kernel_setting() {
    if !require(&["unshare"]) {
        return;
    }
    let work = Work::new();
    busybox_spec(&work);
    // Inside a user namespace whose own limit is 0, creating another one fails as it does on
    // a machine with user.max_user_namespaces = 0.
    let line = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} --store {} run {} -- /bin/busybox true",
        strata_bin().display(),
        work.store().display(),
        work.spec().display()
    );
    let out = run(Command::new("unshare").args(["-Ur", "sh", "-c", &line]));
    if stderr(&out).contains("max_user_namespaces: Permission denied")
        || stderr(&out).contains("unshare failed")
    {
        eprintln!(
            "!!!!! cannot lower the user-namespace limit here: {}",
            stderr(&out)
        );
        return;
    }
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    for setting in [
        "user.max_user_namespaces",
        "kernel.unprivileged_userns_clone",
        "kernel.apparmor_restrict_unprivileged_userns",
    ] {
        assert!(err.contains(setting), "the error names {setting}: {err}");
    }
}

/// Runs that start together on a fresh store unpack the image once and all see it whole.
#[test]
fn concurrent_first_runs_share_one_unpacked_root() {
    let work = Work::new();
    busybox_spec(&work);
    let layout = work.out("layout");
    work.build(&format!("oci:{}", layout.display()), &[]);
    let target = format!("oci:{}", layout.display());
    let children: Vec<_> = (0..4)
        .map(|_| {
            strata_run(
                &work,
                &target,
                &["--", "/bin/busybox", "cat", "/etc/passwd"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with("root:x:0:0:"), "{}", stdout(&out));
    }
    let unpacked: Vec<_> = fs::read_dir(work.store().join("v1/sources/rootfs"))
        .expect("rootfs dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        unpacked.len(),
        1,
        "one unpacked root, no temporary left: {unpacked:?}"
    );
}

/// The unpacked root file systems `strata run` keeps in the store.
fn rootfs_dirs(work: &Work) -> Vec<String> {
    fs::read_dir(work.store().join("v1/sources/rootfs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `strata gc` keeps the root file system of an image the store built and removes the one
/// of an image it only ran (built with another store).
#[test]
fn gc_removes_root_file_systems_of_images_the_store_does_not_record() {
    let work = Work::new();
    busybox_spec(&work);
    let layout = work.out("layout");
    work.build(&format!("oci:{}", layout.display()), &[]);
    let out = run(&mut strata_run(
        &work,
        &format!("oci:{}", layout.display()),
        &["--", "sh", "-c", "echo $GREETING"],
    ));
    assert_eq!(stdout(&out), "hello-from-strata\n", "{}", stderr(&out));
    let own = rootfs_dirs(&work);
    assert_eq!(own.len(), 1, "{own:?}");

    // The same image with another config (another env), built by a second store.
    let other = Work::new();
    busybox_spec(&other);
    let spec = fs::read_to_string(other.spec()).expect("read spec");
    other.write_spec(&spec.replace("hello-from-strata", "from-elsewhere"));
    let foreign = other.out("layout");
    other.build(&format!("oci:{}", foreign.display()), &[]);
    let out = run(&mut strata_run(
        &work,
        &format!("oci:{}", foreign.display()),
        &["--", "sh", "-c", "echo $GREETING"],
    ));
    assert_eq!(stdout(&out), "from-elsewhere\n", "{}", stderr(&out));
    assert_eq!(rootfs_dirs(&work).len(), 2, "{:?}", rootfs_dirs(&work));

    let report = run_ok(work.strata().args(["gc", "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("gc --json");
    assert_eq!(json["rootfs_removed"], 1, "{json}");
    assert_eq!(
        rootfs_dirs(&work),
        own,
        "the built image's root file system is kept"
    );

    // The foreign image still runs: its root file system is unpacked again.
    let out = run(&mut strata_run(
        &work,
        &format!("oci:{}", foreign.display()),
        &["--", "sh", "-c", "echo $GREETING"],
    ));
    assert_eq!(stdout(&out), "from-elsewhere\n", "{}", stderr(&out));
}
