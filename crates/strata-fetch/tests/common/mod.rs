//! A small HTTP/1.1 server on 127.0.0.1 for the download tests, and archive builders.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the server answers one path.
#[derive(Clone)]
pub enum Route {
    /// 200 with these bytes.
    Bytes(Vec<u8>),
    /// A 302 to another path.
    Redirect(String),
    /// The first `n` requests send half the body and close the connection; later ones are
    /// served whole.
    DropFirst(usize, Vec<u8>),
    /// 200 only with this `Authorization` header, else 401.
    Auth(String, Vec<u8>),
}

/// The server: routes, and how many requests each path got.
pub struct Server {
    pub base: String,
    routes: Arc<Mutex<BTreeMap<String, Route>>>,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<BTreeMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &r, &h));
            }
        });
        Self { base, routes, hits }
    }

    pub fn route(&self, path: &str, route: Route) -> String {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_owned(), route);
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_hits(&self) -> usize {
        self.hits.lock().expect("hits").values().sum()
    }
}

fn serve(
    stream: TcpStream,
    routes: &Mutex<BTreeMap<String, Route>>,
    hits: &Mutex<BTreeMap<String, usize>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                auth = Some(v.trim().to_owned());
            }
        }
        let n = {
            let mut hits = hits.lock().expect("hits");
            let n = hits.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let route = routes.lock().expect("routes").get(&path).cloned();
        let ok = |s: &mut TcpStream, body: &[u8]| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        };
        match route {
            None => {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
            Some(Route::Bytes(b)) => ok(&mut stream, &b),
            Some(Route::Redirect(to)) => {
                let head =
                    format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(head.as_bytes());
            }
            Some(Route::DropFirst(k, b)) if n <= k => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&b[..b.len() / 2]);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
            Some(Route::DropFirst(_, b)) => ok(&mut stream, &b),
            Some(Route::Auth(want, b)) => {
                if auth.as_deref() == Some(want.as_str()) {
                    ok(&mut stream, &b);
                } else {
                    let _ =
                        stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
        let _ = stream.flush();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// One raw tar entry: name, type flag, link target, mode, content. Written by hand so that
/// malicious names (which the `tar` crate's builder refuses) can be made.
pub struct Raw<'a> {
    pub name: &'a str,
    pub kind: u8,
    pub link: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

pub fn file<'a>(name: &'a str, mode: u32, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: b'0',
        link: "",
        mode,
        data,
    }
}

pub fn dir(name: &str) -> Raw<'_> {
    Raw {
        name,
        kind: b'5',
        link: "",
        mode: 0o755,
        data: b"",
    }
}

pub fn symlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind: b'2',
        link: target,
        mode: 0o777,
        data: b"",
    }
}

pub fn hardlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind: b'1',
        link: target,
        mode: 0o644,
        data: b"",
    }
}

/// A ustar archive of these entries.
pub fn tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, e.mode.into());
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, e.data.len() as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).expect("xz");
    e.finish().expect("xz")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).expect("bzip2");
    e.finish().expect("bzip2")
}

/// A zip entry: name, Some(target) for a symlink, mode, content; a name ending in `/` is a
/// directory.
pub fn zip(entries: &[(&str, Option<&str>, u32, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, link, mode, data) in entries {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        if let Some(target) = link {
            w.add_symlink(*name, *target, opts).expect("zip symlink");
        } else if name.ends_with('/') {
            w.add_directory(*name, opts).expect("zip dir");
        } else {
            w.start_file(*name, opts).expect("zip file");
            w.write_all(data).expect("zip write");
        }
    }
    w.finish().expect("zip finish").into_inner()
}
