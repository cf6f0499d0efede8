//! A real `docker-registry` (CNCF distribution) process on 127.0.0.1 with its own storage and
//! access log, plain-HTTP probes that do not go through strata, and htpasswd lines.

#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `docker-registry` binary. Panics when it is missing: `scripts/test` installs it, so a
/// missing registry is a broken environment, never a reason to skip.
pub fn registry_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("docker-registry"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`docker-registry` is not installed: run ./scripts/test, or apt-get install \
                 docker-registry"
            )
        })
}

/// A free TCP port on 127.0.0.1 (bound and released; the registry binds it right after).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// How the registry authenticates.
pub enum Auth {
    /// Anonymous pull and push.
    None,
    /// `auth: htpasswd` with this htpasswd file.
    Htpasswd(PathBuf),
    /// `auth: token` trusting tokens signed by the key of `root_cert`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert: PathBuf,
    },
}

/// A running `docker-registry` on 127.0.0.1, killed when dropped. Its directory holds
/// `config.yml`, `storage/`, `access.log` (the registry's stdout) and `registry.log`.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Registry {
    /// Starts a registry on a free port with fresh storage.
    pub fn start(auth: Auth) -> Registry {
        Self::start_with(auth, None)
    }

    /// Like [`Registry::start`], serving HTTPS with `(certificate, key)` if given.
    pub fn start_with(auth: Auth, tls: Option<(PathBuf, PathBuf)>) -> Registry {
        let binary = registry_binary();
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .expect("create the registry's temp dir");
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd(path) => format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                path.display()
            ),
            Auth::Token {
                realm,
                service,
                issuer,
                root_cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
                 rootcertbundle: {}\n",
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
        let mut reg = Registry {
            child: None,
            port: 0,
            dir,
            binary,
        };
        // The port may be taken between free_port() and the registry's bind: try a few.
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.port = free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: strata-test-secret\n{tls_yaml}\
                 {auth_yaml}",
                storage = reg.storage().display(),
                port = reg.port,
            );
            std::fs::write(reg.dir.path().join("config.yml"), config).expect("write config.yml");
            match reg.try_restart() {
                Ok(()) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start: {last_err}");
    }

    /// Starts the process (again) on the same port, storage and logs.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("restarting docker-registry: {e}");
        }
    }

    fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap_or_else(|e| panic!("open {name}: {e}"))
        };
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(open("access.log"))
            .stderr(open("registry.log"))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "docker-registry exited with {status}: {}",
                    self.server_log()
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("docker-registry did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// Starts another registry process on the same port, storage and logs, not tracked by
    /// this struct (for restarts from another thread).
    pub fn spawn_untracked(&self) -> std::io::Result<Child> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
        };
        Command::new(&self.binary)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(open("access.log")?)
            .stderr(open("registry.log")?)
            .spawn()
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

    /// Kills the process with SIGKILL (what `Child::kill` sends on Unix) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/{repo}`.
    pub fn docker(&self, repo: &str) -> String {
        format!("docker://{}/{repo}", self.host())
    }

    /// The registry's storage root (`rootdirectory` in its config).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The current end of the access log, for [`Registry::requests_since`]. Waits a moment so
    /// the registry has written the lines of requests already answered.
    pub fn mark(&self) -> usize {
        std::thread::sleep(Duration::from_millis(250));
        self.access_log().len()
    }

    /// `METHOD PATH` of every request in the access log from byte `mark` on.
    pub fn requests_since(&self, mark: usize) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(250));
        let log = self.access_log();
        log.get(mark..)
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                // 127.0.0.1 - - [date] "METHOD PATH HTTP/1.1" STATUS ...
                let start = l.find('"')? + 1;
                let rest = &l[start..];
                let end = rest.find('"')?;
                let mut parts = rest[..end].split(' ');
                Some(format!("{} {}", parts.next()?, parts.next()?))
            })
            .collect()
    }

    /// Status of `METHOD /v2/{path}` asked directly over HTTP/1.1 (not through strata), with
    /// an Accept header for OCI and Docker manifests.
    pub fn status(&self, method: &str, path: &str) -> u16 {
        http_status(self.port, method, &format!("/v2/{path}"))
    }

    /// Bytes received so far by the registry for unfinished uploads to `repo` (the `data`
    /// files under `_uploads/`).
    pub fn upload_bytes(&self, repo: &str) -> u64 {
        let uploads = self
            .storage()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads");
        std::fs::read_dir(uploads)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; returns the status code.
pub fn http_status(port: u16, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.oci.image.index.v1+json\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line from {method} {path}: {line:?}"))
}

/// Uploads (`POST`/`PUT`/`PATCH` under `/blobs/uploads/`) among `requests`.
pub fn upload_requests(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            (r.starts_with("POST ") || r.starts_with("PUT ") || r.starts_with("PATCH "))
                && r.contains("/blobs/uploads/")
        })
        .cloned()
        .collect()
}

/// Completed blob uploads (`PUT …/blobs/uploads/…?digest=…`) among `requests`, as the digests
/// they committed (`sha256:…`).
pub fn committed_digests(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
        .filter_map(|r| {
            let query = r.split_once('?')?.1;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))
                .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
        })
        .collect()
}

/// An htpasswd line for `user` with a bcrypt hash of `password` (what `docker-registry`
/// accepts; `$2y$` like `htpasswd -B` writes).
pub fn htpasswd_line(user: &str, password: &str) -> String {
    let hash = bcrypt::hash_with_result(password, 5)
        .expect("bcrypt hash")
        .format_for_version(bcrypt::Version::TwoY);
    format!("{user}:{hash}\n")
}

/// Writes `len` bytes of deterministic, incompressible pseudo-random data (xorshift64*) to
/// `path`, one MiB at a time.
pub fn write_noise(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}
