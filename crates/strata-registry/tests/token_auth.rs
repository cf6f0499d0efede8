//! Bearer-token auth against a real `docker-registry` (`auth: token`) served
//! over HTTPS with a self-signed certificate, with a tiny token server run by
//! the test that signs JWTs with `openssl`.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use strata_registry::{
    BlobOutcome, Client, ClientOptions, Credentials, NoProgress, Platform, Reference, RegistryError,
};

const SERVICE: &str = "strata-test-registry";
const ISSUER: &str = "strata-test-issuer";
const USER: &str = "tokenuser";
const PASSWORD: &str = "token-pass-98765";

struct TokenServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    /// When set, the next token issued is already expired (the registry
    /// rejects it), to exercise refresh on 401.
    poison_next: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    expires_in: u64,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn openssl(args: &[&str], dir: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(out.stdout)
}

fn sign(key: &Path, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(data)?;
    }
    Ok(child.wait_with_output()?.stdout)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct TokenCtx {
    key: PathBuf,
    cert_der_b64: String,
    requests: Arc<AtomicUsize>,
    poison_next: Arc<AtomicBool>,
    expires_in: u64,
}

fn handle(ctx: &TokenCtx, stream: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    let mut stream = stream;
    let path = request_line.split(' ').nth(1).unwrap_or("");
    if !path.starts_with("/token") {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    ctx.requests.fetch_add(1, Ordering::SeqCst);
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "scope" => scopes.push(percent_decode(v)),
            "service" => service = percent_decode(v),
            _ => {}
        }
    }
    let user = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        Some(b64) => {
            let decoded = String::from_utf8(STANDARD.decode(b64)?)?;
            if decoded != format!("{USER}:{PASSWORD}") {
                let body = r#"{"details":"invalid username or password"}"#;
                write!(
                    stream,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                return Ok(());
            }
            USER.to_string()
        }
        None => String::new(),
    };
    // Grant what was asked to the known user; nothing to anonymous callers.
    let access: Vec<serde_json::Value> = if user.is_empty() {
        Vec::new()
    } else {
        scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (typ, rest) = (parts.next()?, parts.next()?);
                let actions = parts.next()?;
                Some(serde_json::json!({
                    "type": typ, "name": rest,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect()
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let poisoned = ctx.poison_next.swap(false, Ordering::SeqCst);
    let exp = if poisoned {
        now - 3600
    } else {
        now + ctx.expires_in + 60
    };
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [ctx.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": service,
        "exp": exp, "nbf": now - 3700, "iat": now - 3700,
        "jti": format!("jti-{now}-{}", ctx.requests.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let signature = sign(&ctx.key, signing_input.as_bytes())?;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let body = serde_json::json!({"token": token, "expires_in": ctx.expires_in}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

fn start_token_server(
    dir: &Path,
    expires_in: u64,
) -> Result<TokenServer, Box<dyn std::error::Error>> {
    let cert_der = openssl(&["x509", "-in", "cert.pem", "-outform", "DER"], dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let requests = Arc::new(AtomicUsize::new(0));
    let poison_next = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = TokenCtx {
        key: dir.join("key.pem"),
        cert_der_b64: STANDARD.encode(cert_der),
        requests: Arc::clone(&requests),
        poison_next: Arc::clone(&poison_next),
        expires_in,
    };
    let stop2 = Arc::clone(&stop);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = stream
                && let Err(e) = handle(&ctx, stream)
            {
                eprintln!("token server: {e}");
            }
        }
    });
    Ok(TokenServer {
        port,
        requests,
        poison_next,
        stop,
        expires_in,
    })
}

#[test]
fn bearer_token_auth_over_self_signed_https() -> TestResult {
    if !require(&["docker-registry"]) {
        return Ok(());
    }
    if !require(&["openssl"]) {
        return Ok(());
    }
    let keys = tempfile::tempdir()?;
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        keys.path(),
    )?;
    let tokens = start_token_server(keys.path(), 2)?;
    let reg = Registry::start_with(
        RegistryAuth::Token {
            realm: format!("http://127.0.0.1:{}/token", tokens.port),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            root_cert: keys.path().join("cert.pem"),
        },
        Some((keys.path().join("cert.pem"), keys.path().join("key.pem"))),
    );
    let work = tempfile::tempdir()?;
    let l1 = tar_layer(&[("token.txt", b"token auth", 0o644)])?;
    let image = make_image(work.path(), &[l1], serde_json::json!({}))?;
    let r = Reference::parse(&format!("docker://{}/secure/app:v1", reg.host()))?;
    let empty_auth = keys.path().join("none.json");
    let opts = ClientOptions {
        creds: Some(Credentials::new(USER, PASSWORD)),
        auth_file: Some(empty_auth.clone()),
        retries: 1,
        backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    };

    // Verifying TLS against a self-signed certificate must fail.
    let strict = Client::new(ClientOptions {
        tls_verify: Some(true),
        ..opts.clone()
    })?;
    let err = strict
        .push(&r, &image, &NoProgress)
        .err()
        .ok_or("verified a self-signed cert")?;
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");

    // Loopback: HTTPS without verification, bearer token for push.
    let client = Client::new(opts.clone())?;
    let report = client.push(&r, &image, &NoProgress)?;
    assert!(
        report
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Uploaded)
    );
    let after_first = tokens.requests.load(Ordering::SeqCst);
    assert!(after_first >= 1, "no token was fetched");
    // Reused: a second push right away fetches no new token.
    let report2 = client.push(&r, &image, &NoProgress)?;
    assert!(
        report2
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Skipped)
    );
    assert_eq!(
        tokens.requests.load(Ordering::SeqCst),
        after_first,
        "token not reused"
    );
    // Refreshed on expiry (expires_in is 2 s).
    std::thread::sleep(Duration::from_millis(2100));
    client.push(&r, &image, &NoProgress)?;
    assert!(
        tokens.requests.load(Ordering::SeqCst) > after_first,
        "token not refreshed"
    );
    // Refreshed on 401: the next token is already expired for the registry.
    let before = tokens.requests.load(Ordering::SeqCst);
    let fresh = Client::new(opts.clone())?;
    tokens.poison_next.store(true, Ordering::SeqCst);
    let out = tempfile::tempdir()?;
    let pulled = fresh.pull(&r, &Platform::new("linux", "amd64", None), out.path())?;
    assert_eq!(pulled.manifest, image.manifest);
    assert!(tokens.requests.load(Ordering::SeqCst) >= before + 2);
    assert_eq!(tokens.expires_in, 2);

    // Wrong password: the token server refuses; clear error, no secret.
    let wrong = Client::new(ClientOptions {
        creds: Some(Credentials::new(USER, "not-the-password-777")),
        ..opts.clone()
    })?;
    let err = wrong
        .push(&r, &image, &NoProgress)
        .err()
        .ok_or("wrong password accepted")?;
    let text = format!("{err} {err:?}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{text}");
    assert!(!text.contains("not-the-password-777"), "{text}");

    // Anonymous: token without access, registry says 401.
    let anonymous = Client::new(ClientOptions {
        creds: None,
        ..opts
    })?;
    let err = anonymous
        .push(&r, &image, &NoProgress)
        .err()
        .ok_or("anonymous push accepted")?;
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    if require(&["skopeo"]) {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg(format!("docker://{}/secure/app:v1", reg.host()))
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
