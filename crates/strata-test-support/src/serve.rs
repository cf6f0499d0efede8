//! A `strata serve` process on 127.0.0.1, and a small HTTP/1.1 client that shows exactly what
//! the server answered (status, headers, body), with bounded timeouts.

#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, strata_bin};

/// A running `strata serve`, killed when dropped. Its log is `dir/serve.log`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub args: Vec<String>,
    pub store: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `strata --store STORE serve --listen 127.0.0.1:PORT ARGS...` and waits (at most
    /// 30 s) until `/v2/` answers.
    pub fn start(store: PathBuf, log: PathBuf, args: &[String], env: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), store, log, args, env)
    }

    /// Like [`Server::start`] on a port chosen by the caller (replicas that name each other).
    pub fn start_on(
        port: u16,
        store: PathBuf,
        log: PathBuf,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Server {
        let mut s = Server {
            child: None,
            port,
            args: args.to_vec(),
            store,
            log,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.restart();
        s
    }

    /// Starts the process (again), same port, store and arguments.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the serve log");
        let mut cmd = Command::new(strata_bin());
        cmd.arg("--store")
            .arg(&self.store)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("run strata serve"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("strata serve exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "strata serve did not listen within 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/_strata/stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let r = http(
            self.port,
            "GET",
            "/_strata/stats",
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("stats JSON")
    }

    /// One counter of `/_strata/stats`.
    pub fn stat(&self, key: &str) -> u64 {
        self.stats()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `METHOD PATH` on 127.0.0.1:PORT with manifest `Accept` types and `extra` headers; reads
/// the whole answer (`Connection: close`) within `timeout`. Panics when there is no answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Answer {
    try_http(port, method, path, extra, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`http`], with a refused or reset connection as an error (a server still starting,
/// or Docker's port proxy in front of a container not yet listening).
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{method} {path}: sending: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no header end in {raw:?}"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status line: {head}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}
