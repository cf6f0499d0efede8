//! Push and pull against a real `docker-registry` on 127.0.0.1, checked
//! independently with the registry's access log, `skopeo` and `podman`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use strata_registry::{
    BlobOutcome, Client, ClientOptions, Credentials, NoProgress, Platform, PushImage, Reference,
    RegistryError, Reporter,
};

fn new_client() -> Result<Client, RegistryError> {
    Client::new(ClientOptions {
        retries: 2,
        backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    })
}

fn small_image(dir: &Path, seed: u64) -> Result<PushImage, Box<dyn std::error::Error>> {
    let l1 = tar_layer(&[("etc/hello.txt", b"hello from strata\n", 0o644)])?;
    let l2 = tar_layer(&[("data/noise.bin", &noise(300_000, seed), 0o644)])?;
    Ok(make_image(dir, &[l1, l2], serde_json::json!({}))?)
}

fn reference(reg: &Registry, repo_tag: &str) -> Result<Reference, RegistryError> {
    Reference::parse(&format!("docker://{}/{repo_tag}", reg.host()))
}

/// Pulls `reference` into a fresh directory and checks every blob against
/// the pushed files.
fn pull_and_compare(client: &Client, r: &Reference, image: &PushImage) -> TestResult {
    let out = tempfile::tempdir()?;
    let pulled = client.pull(r, &Platform::new("linux", "amd64", None), out.path())?;
    assert_eq!(pulled.manifest, image.manifest);
    assert_eq!(pulled.manifest_media_type, image.manifest_media_type);
    assert_eq!(pulled.manifest_digest, sha256(&image.manifest));
    assert_eq!(pulled.config.digest, image.config.digest);
    assert_eq!(pulled.layers.len(), image.layers.len());
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let path = out
            .path()
            .join("blobs/sha256")
            .join(blob.digest.trim_start_matches("sha256:"));
        assert_eq!(
            std::fs::read(&path)?,
            std::fs::read(&blob.path)?,
            "{}",
            blob.digest
        );
    }
    let manifest_path = out
        .path()
        .join("blobs/sha256")
        .join(pulled.manifest_digest.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(manifest_path)?, image.manifest);
    Ok(())
}

#[test]
fn push_then_skopeo_inspect_then_pull_back() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let image = small_image(work.path(), 1)?;
    let client = new_client()?;
    let r = reference(&reg, "strata/app:v1")?;
    let report = client.push(&r, &image, &NoProgress)?;
    assert_eq!(report.manifest_digest, sha256(&image.manifest));
    assert_eq!(report.blobs.len(), 3);
    assert!(
        report
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Uploaded)
    );
    assert_eq!(
        client.manifest_digest(&r)?,
        Some(report.manifest_digest.clone())
    );

    if require(&["skopeo"]) {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/strata/app:v1", reg.host()))
            .output()?;
        assert!(
            out.status.success(),
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(v["Digest"], report.manifest_digest.as_str());
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Architecture"], "amd64");
        let layers: Vec<&str> = v["Layers"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
            .unwrap_or_default();
        let expected: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(layers, expected);
    }

    pull_and_compare(&client, &r, &image)?;
    // Pull by digest too.
    pull_and_compare(&client, &r.with_digest(&report.manifest_digest), &image)?;
    Ok(())
}

#[test]
fn repush_uploads_nothing_and_shared_layers_are_skipped() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let image = small_image(&work.path().join("a"), 2)?;
    let client = new_client()?;
    let r = reference(&reg, "strata/app:v1")?;
    client.push(&r, &image, &NoProgress)?;

    // Same image again, with a new client (no cached state): nothing uploaded.
    let mark = reg.mark();
    let started = std::time::Instant::now();
    let report = new_client()?.push(&r, &image, &NoProgress)?;
    let elapsed = started.elapsed();
    assert!(
        report
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Skipped)
    );
    let requests = reg.requests_since(mark);
    assert!(upload_requests(&requests).is_empty(), "{requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT /v2/strata/app/manifests/v1")),
        "{requests:#?}"
    );
    eprintln!("unchanged re-push took {elapsed:?}");

    // An image sharing the first layer: only the new layer and config go up.
    let shared = std::fs::read(&image.layers[0].path)?;
    let new_layer = tar_layer(&[("new.txt", b"new content", 0o644)])?;
    let image2 = make_image(
        &work.path().join("b"),
        &[shared, new_layer],
        serde_json::json!({}),
    )?;
    let mark = reg.mark();
    let report = client.push(&reference(&reg, "strata/app:v2")?, &image2, &NoProgress)?;
    let outcome = |d: &str| {
        report
            .blobs
            .iter()
            .find(|b| b.digest == d)
            .map(|b| b.outcome)
    };
    assert_eq!(
        outcome(&image2.layers[0].digest),
        Some(BlobOutcome::Skipped)
    );
    assert_eq!(
        outcome(&image2.layers[1].digest),
        Some(BlobOutcome::Uploaded)
    );
    assert_eq!(outcome(&image2.config.digest), Some(BlobOutcome::Uploaded));
    let uploads = upload_requests(&reg.requests_since(mark));
    let puts: Vec<&String> = uploads.iter().filter(|u| u.starts_with("PUT ")).collect();
    assert_eq!(puts.len(), 2, "{uploads:#?}");
    for digest in [&image2.layers[1].digest, &image2.config.digest] {
        let encoded = digest.replace(':', "%3A");
        assert!(
            puts.iter().any(|p| p.contains(&encoded)),
            "{digest} not uploaded: {puts:#?}"
        );
    }
    assert!(
        !uploads
            .iter()
            .any(|u| u.contains(&image2.layers[0].digest.replace(':', "%3A")))
    );
    Ok(())
}

#[test]
fn cross_repository_mount() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let image = small_image(work.path(), 3)?;
    let client = new_client()?;
    client.push(&reference(&reg, "team/base:1")?, &image, &NoProgress)?;

    let mut mounted = image.clone();
    mounted.config.mount_from = Some("team/base".into());
    for l in &mut mounted.layers {
        l.mount_from = Some("team/base".into());
    }
    let mark = reg.mark();
    let r2 = reference(&reg, "team/other:1")?;
    let report = client.push(&r2, &mounted, &NoProgress)?;
    assert!(
        report
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Mounted),
        "{report:#?}"
    );
    let uploads = upload_requests(&reg.requests_since(mark));
    assert_eq!(uploads.len(), 3, "{uploads:#?}");
    assert!(
        uploads
            .iter()
            .all(|u| u.starts_with("POST /v2/team/other/blobs/uploads/?") && u.contains("mount=")),
        "{uploads:#?}"
    );
    pull_and_compare(&client, &r2, &image)?;
    Ok(())
}

fn htpasswd_line(user: &str, password: &str) -> Result<String, bcrypt::BcryptError> {
    let hash = bcrypt::hash_with_result(password, 5)?.format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{user}:{hash}\n"))
}

#[test]
fn htpasswd_basic_auth() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let secrets = tempfile::tempdir()?;
    let htpasswd = secrets.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line("alice", "correct-horse-battery")?)?;
    let reg = Registry::start(RegistryAuth::Htpasswd(htpasswd));
    let work = tempfile::tempdir()?;
    let image = small_image(work.path(), 4)?;
    let r = reference(&reg, "private/app:v1")?;
    // Keep the test away from the real user's auth files.
    let empty_auth = secrets.path().join("empty.json");

    // No credentials: a clear error.
    let anonymous = Client::new(ClientOptions {
        auth_file: Some(empty_auth.clone()),
        ..ClientOptions::default()
    })?;
    let err = anonymous
        .push(&r, &image, &NoProgress)
        .err()
        .ok_or("anonymous push worked")?;
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no credentials found"), "{err}");

    // Wrong password: a clear error without the password in it.
    let wrong = Client::new(ClientOptions {
        creds: Some(Credentials::new("alice", "wrong-password-xyzzy")),
        auth_file: Some(empty_auth.clone()),
        ..ClientOptions::default()
    })?;
    let err = wrong
        .push(&r, &image, &NoProgress)
        .err()
        .ok_or("wrong password worked")?;
    let text = format!("{err} {err:?} {wrong:?}");
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{text}"
    );
    assert!(
        err.to_string().contains("check the username and password"),
        "{err}"
    );
    assert!(!text.contains("wrong-password-xyzzy"), "{text}");
    // And not base64-encoded either.
    assert!(!text.contains("d3JvbmctcGFzc3dvcmQteHl6enk"), "{text}");

    // Right password via --creds.
    let good_creds = Credentials::new("alice", "correct-horse-battery");
    let good = Client::new(ClientOptions {
        creds: Some(good_creds.clone()),
        auth_file: Some(empty_auth),
        ..ClientOptions::default()
    })?;
    good.check_login(&reg.host())?;
    let report = good.push(&r, &image, &NoProgress)?;
    pull_and_compare(&good, &r, &image)?;
    assert!(!format!("{good:?} {report:?}").contains("correct-horse-battery"));

    // Via `login` into a docker config.json.
    let config = secrets.path().join("docker/config.json");
    strata_registry::login(&reg.host(), &good_creds, Some(&config))?;
    let from_file = Client::new(ClientOptions {
        auth_file: Some(config.clone()),
        ..ClientOptions::default()
    })?;
    let r2 = reference(&reg, "private/app:v2")?;
    from_file.push(&r2, &image, &NoProgress)?;
    assert_eq!(
        from_file.manifest_digest(&r2)?,
        Some(report.manifest_digest)
    );

    // skopeo reads the same file format.
    if require(&["skopeo"]) {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(&config)
            .arg(format!("docker://{}/private/app:v2", reg.host()))
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Kills the registry once `kill_after` bytes of the big blob were sent.
struct KillingReporter {
    big: String,
    kill_after: u64,
    pid: u32,
    killed: AtomicBool,
    progress: Mutex<Vec<u64>>,
}

impl Reporter for KillingReporter {
    fn blob_progress(&self, digest: &str, bytes: u64) {
        if digest != self.big {
            return;
        }
        if let Ok(mut p) = self.progress.lock() {
            p.push(bytes);
        }
        if bytes >= self.kill_after && !self.killed.swap(true, Ordering::SeqCst) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

#[test]
fn registry_killed_mid_push_leaves_no_tag_and_retry_completes() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let mut reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let big = noise(48 << 20, 5);
    let small = tar_layer(&[("a.txt", b"a", 0o644)])?;
    let image = make_image(work.path(), &[small, big], serde_json::json!({}))?;
    let big_digest = image.layers[1].digest.clone();
    let r = reference(&reg, "crash/app:v1")?;
    let opts = ClientOptions {
        retries: 2,
        backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(20),
        chunk_size: 4 << 20,
        parallel: 1,
        ..ClientOptions::default()
    };
    let reporter = KillingReporter {
        big: big_digest.clone(),
        kill_after: 20 << 20,
        pid: reg.pid().ok_or("no registry process")?,
        killed: AtomicBool::new(false),
        progress: Mutex::new(Vec::new()),
    };
    let err = Client::new(opts.clone())?
        .push(&r, &image, &reporter)
        .err()
        .ok_or("push survived the registry being killed")?;
    assert!(reporter.killed.load(Ordering::SeqCst));
    eprintln!("push failed as expected: {err}");
    assert!(err.is_retryable(), "{err:?}");
    reg.reap();

    reg.restart();
    let client = Client::new(opts)?;
    assert_eq!(
        client.manifest_digest(&r)?,
        None,
        "a tag survived the crash"
    );
    let report = client.push(&r, &image, &NoProgress)?;
    let big_outcome = report
        .blobs
        .iter()
        .find(|b| b.digest == big_digest)
        .map(|b| b.outcome);
    assert_eq!(big_outcome, Some(BlobOutcome::Uploaded));
    // Chunked: several PATCHes for the big blob.
    let patches = reg
        .requests_since(0)
        .iter()
        .filter(|l| l.starts_with("PATCH "))
        .count();
    assert!(
        patches >= 12,
        "expected chunked upload, saw {patches} PATCH requests"
    );
    assert_eq!(client.manifest_digest(&r)?, Some(report.manifest_digest));
    pull_and_compare(&client, &r, &image)?;
    Ok(())
}

#[test]
fn podman_pulls_and_runs_what_strata_pushed() -> TestResult {
    if !require(&["docker-registry", "podman", "static:/bin/busybox"]) {
        return Ok(());
    }
    let reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let busybox = std::fs::read("/bin/busybox")?;
    let layer = tar_layer(&[("bin/busybox", &busybox, 0o755)])?;
    let image = make_image(
        work.path(),
        &[layer],
        serde_json::json!({"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "strata-ok"]}),
    )?;
    let r = reference(&reg, "podman/busybox:v1")?;
    new_client()?.push(&r, &image, &NoProgress)?;

    let root = work.path().join("podman-root");
    let runroot = work.path().join("podman-runroot");
    let podman = |args: &[&str]| -> std::io::Result<std::process::Output> {
        Command::new("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args([
                "--storage-driver=vfs",
                "--cgroup-manager=cgroupfs",
                "--runtime=runc",
                "--events-backend=file",
            ])
            .args(args)
            .output()
    };
    let name = format!("{}/podman/busybox:v1", reg.host());
    let out = podman(&["pull", "--tls-verify=false", &name])?;
    assert!(
        out.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(&[
        "run",
        "--rm",
        "--network=none",
        "--ulimit=nofile=1024:1024",
        "--ulimit=nproc=1024:1024",
        &name,
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podman run: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "strata-ok");
    let _ = podman(&["rmi", "-a", "-f"]);
    Ok(())
}

/// Kills the registry once, mid-upload, and starts it again shortly after.
struct RestartingReporter<'a> {
    reg: &'a Registry,
    big: String,
    kill_after: u64,
    killed: AtomicBool,
    replacement: Mutex<Option<std::process::Child>>,
}

impl Reporter for RestartingReporter<'_> {
    fn blob_progress(&self, digest: &str, bytes: u64) {
        if digest != self.big || bytes < self.kill_after || self.killed.swap(true, Ordering::SeqCst)
        {
            return;
        }
        if let Some(pid) = self.reg.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(child) = self.reg.spawn_untracked()
            && let Ok(mut slot) = self.replacement.lock()
        {
            *slot = Some(child);
        }
    }
}

#[test]
fn interrupted_upload_is_restarted_within_the_same_push() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let mut reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let image = make_image(work.path(), &[noise(24 << 20, 9)], serde_json::json!({}))?;
    let r = reference(&reg, "restart/app:v1")?;
    let client = Client::new(ClientOptions {
        retries: 5,
        backoff: Duration::from_millis(200),
        parallel: 1,
        ..ClientOptions::default()
    })?;
    let reporter = RestartingReporter {
        reg: &reg,
        big: image.layers[0].digest.clone(),
        kill_after: 8 << 20,
        killed: AtomicBool::new(false),
        replacement: Mutex::new(None),
    };
    let result = client.push(&r, &image, &reporter);
    let replacement = reporter
        .replacement
        .lock()
        .map(|mut c| c.take())
        .ok()
        .flatten();
    assert!(
        reporter.killed.load(Ordering::SeqCst),
        "the registry was never killed"
    );
    reg.reap();
    let mut replacement = replacement.ok_or("the registry was not restarted")?;
    let checked = (|| -> TestResult {
        let report = result?;
        assert_eq!(report.blobs[1].outcome, BlobOutcome::Uploaded);
        // Two upload sessions at least: the killed one and the complete one.
        let sessions = reg
            .requests_since(0)
            .iter()
            .filter(|l| l.starts_with("POST /v2/restart/app/blobs/uploads/"))
            .count();
        assert!(sessions >= 2, "upload sessions opened: {sessions}");
        pull_and_compare(&client, &r, &image)
    })();
    let _ = replacement.kill();
    let _ = replacement.wait();
    checked
}

#[test]
fn docker_media_types_and_manifest_list_pull_selects_platform() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    let reg = Registry::start(RegistryAuth::None);
    let work = tempfile::tempdir()?;
    let mut image = small_image(work.path(), 11)?;
    // Re-label as a Docker v2 schema 2 image.
    image.config.media_type = "application/vnd.docker.container.image.v1+json".into();
    for l in &mut image.layers {
        l.media_type = "application/vnd.docker.image.rootfs.diff.tar".into();
    }
    let descriptor = |b: &strata_registry::Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    image.manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": strata_registry::MEDIA_TYPE_DOCKER_MANIFEST,
        "config": descriptor(&image.config),
        "layers": image.layers.iter().map(descriptor).collect::<Vec<_>>(),
    }))?;
    image.manifest_media_type = strata_registry::MEDIA_TYPE_DOCKER_MANIFEST.into();
    let client = new_client()?;
    let by_digest = reference(&reg, "multi/app")?;
    let report = client.push(&by_digest, &image, &NoProgress)?;
    assert_eq!(report.manifest_digest, sha256(&image.manifest));

    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": strata_registry::MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        "manifests": [{
            "mediaType": strata_registry::MEDIA_TYPE_DOCKER_MANIFEST,
            "digest": report.manifest_digest,
            "size": image.manifest.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    }))?;
    let tagged = reference(&reg, "multi/app:latest")?;
    let list_digest = client.put_manifest(
        &tagged,
        &list,
        strata_registry::MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    )?;

    let out = tempfile::tempdir()?;
    let pulled = client.pull(&tagged, &Platform::new("linux", "amd64", None), out.path())?;
    assert_eq!(pulled.manifest, image.manifest);
    assert_eq!(
        pulled.manifest_media_type,
        strata_registry::MEDIA_TYPE_DOCKER_MANIFEST
    );
    let index = pulled.index.as_ref().ok_or("no index recorded")?;
    assert_eq!(index.digest, list_digest);
    assert_eq!(index.bytes, list);
    assert!(
        out.path()
            .join("blobs/sha256")
            .join(list_digest.trim_start_matches("sha256:"))
            .is_file()
    );
    pull_and_compare(&client, &tagged, &image)?;

    let err = client
        .pull(&tagged, &Platform::new("linux", "arm64", None), out.path())
        .err()
        .ok_or("arm64 was found")?;
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("linux/amd64"), "{err}");
    Ok(())
}
