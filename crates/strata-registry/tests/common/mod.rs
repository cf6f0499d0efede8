//! Test helpers: a real `docker-registry` process on 127.0.0.1 and small
//! hand-made OCI images.

#![allow(dead_code, missing_docs)]

use std::fs::File;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use strata_registry::{Blob, MEDIA_TYPE_OCI_MANIFEST, PushImage};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The layer media type used by the test images.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The registry binary; panics if it is missing (the test script installs it).
pub fn registry_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("docker-registry"))
            .find(|p| p.is_file())
    });
    // scripts/test installs it; a missing registry must fail the suite, not skip silently.
    assert!(
        found.is_some(),
        "`docker-registry` is not installed: run ./scripts/test, or apt-get install docker-registry"
    );
    found
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(cmd).is_file()))
}

/// How the registry authenticates.
pub enum RegistryAuth {
    None,
    /// `auth: htpasswd` with the given htpasswd file.
    Htpasswd(PathBuf),
    /// `auth: token` trusting tokens signed by the key of `root_cert`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert: PathBuf,
    },
}

/// A running `docker-registry`.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    binary: PathBuf,
}

pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    /// Starts a registry on a free port with fresh storage, or `None` if the
    /// binary is missing.
    pub fn start(auth: RegistryAuth) -> Result<Option<Registry>, Box<dyn std::error::Error>> {
        Self::start_with(auth, None)
    }

    /// Like [`Registry::start`], serving HTTPS with `(certificate, key)` if given.
    pub fn start_with(
        auth: RegistryAuth,
        tls: Option<(PathBuf, PathBuf)>,
    ) -> Result<Option<Registry>, Box<dyn std::error::Error>> {
        let Some(binary) = registry_binary() else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let auth_yaml = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd(path) => format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                path.display()
            ),
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                root_cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                root_cert.display()
            ),
        };
        let tls_yaml = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: strata-test-secret\n{tls_yaml}\
             {auth_yaml}",
            storage = dir.path().join("storage").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config)?;
        let mut r = Registry {
            child: None,
            port,
            dir,
            binary,
        };
        r.restart()?;
        Ok(Some(r))
    }

    /// Starts the process (again) on the same port and storage.
    pub fn restart(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.kill();
        let access = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("access.log"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(access)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                return Err(format!(
                    "docker-registry exited with {status}: {}",
                    self.server_log()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err("docker-registry did not start listening within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts another registry process on the same port, storage and logs,
    /// not tracked by this struct (for restarts from another thread).
    pub fn spawn_untracked(&self) -> std::io::Result<Child> {
        let access = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("access.log"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))?;
        Command::new(&self.binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(access)
            .stderr(log)
            .spawn()
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, for killing it from another thread.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Forgets the child after someone else killed it (reaps it).
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The request lines (`METHOD PATH`) of the access log from byte `mark` on.
    /// Waits a moment for the registry to flush its log.
    pub fn requests_since(&self, mark: usize) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        let log = self.access_log();
        log.get(mark..)
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                let start = l.find('"')? + 1;
                let rest = &l[start..];
                let end = rest.find('"')?;
                let mut parts = rest[..end].split(' ');
                Some(format!("{} {}", parts.next()?, parts.next()?))
            })
            .collect()
    }

    /// The current end of the access log, for [`Registry::requests_since`].
    pub fn mark(&self) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        self.access_log().len()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Uploads to blobs (`POST`/`PUT`/`PATCH` on `/blobs/uploads`) in `requests`.
pub fn upload_requests(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            (r.starts_with("POST ") || r.starts_with("PUT ") || r.starts_with("PATCH "))
                && r.contains("/blobs/uploads")
        })
        .cloned()
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// A tar archive holding the given regular files.
pub fn tar_layer(files: &[(&str, &[u8], u32)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *data)?;
    }
    builder.into_inner()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a blob file named by its digest into `dir`.
pub fn write_blob(dir: &Path, bytes: &[u8], media_type: &str) -> std::io::Result<Blob> {
    let digest = sha256(bytes);
    let path = dir.join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, bytes)?;
    Ok(Blob {
        digest,
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
        path,
        mount_from: None,
    })
}

/// An OCI image with the given (uncompressed tar) layers; `extra_config`
/// is merged into the config's `config` object (e.g. an entrypoint).
pub fn make_image(
    dir: &Path,
    layers: &[Vec<u8>],
    extra_config: serde_json::Value,
) -> std::io::Result<PushImage> {
    std::fs::create_dir_all(dir)?;
    let layer_blobs = layers
        .iter()
        .map(|l| write_blob(dir, l, LAYER_TAR))
        .collect::<std::io::Result<Vec<_>>>()?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": extra_config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layer_blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
        },
        "history": layer_blobs.iter().map(|_| serde_json::json!({"created_by": "strata test"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_blob = write_blob(
        dir,
        &config_bytes,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let descriptor = |b: &Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(&config_blob),
        "layers": layer_blobs.iter().map(descriptor).collect::<Vec<_>>(),
    });
    Ok(PushImage {
        manifest: serde_json::to_vec(&manifest)?,
        manifest_media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
        config: config_blob,
        layers: layer_blobs,
    })
}
