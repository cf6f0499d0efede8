//! The HTTP side: agents, transport selection, authentication, retries.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ureq::http::{self, Response};

use crate::auth::{Challenge, Credentials, find_credentials, parse_challenge};
use crate::error::RegistryError;
use crate::{ClientOptions, DOCKER_HUB};

/// The most bytes of an error body or token answer read into memory.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// A blocking registry client. Cheap to share between threads (`&Client`
/// is `Sync`); it remembers, per registry, the transport that works, the
/// authentication scheme and the bearer tokens it got.
pub struct Client {
    pub(crate) opts: ClientOptions,
    verifying: ureq::Agent,
    insecure: ureq::Agent,
    registries: Mutex<HashMap<String, Arc<RegistryState>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a client knows about one registry.
pub(crate) struct RegistryState {
    /// The registry name as in references (`host[:port]`, `docker.io`).
    pub(crate) name: String,
    /// `https://host[:port]` or `http://host[:port]`.
    pub(crate) base: String,
    /// Whether TLS certificates are not verified for this registry.
    insecure: bool,
    auth: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// `None` until looked up; then the credentials found, if any.
    creds: Option<Option<Credentials>>,
    tokens: HashMap<String, Token>,
}

struct Token {
    value: String,
    expires: Instant,
}

/// A request body.
pub(crate) enum ReqBody<'a> {
    /// No body at all (GET, HEAD).
    None,
    /// Bytes in memory (an empty slice sends `Content-Length: 0`).
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, reporting the count of bytes
    /// sent (counted from the file's start) to `progress`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        progress: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

/// A request to send: method, URL, extra headers, body.
pub(crate) struct Req<'a> {
    pub(crate) method: &'static str,
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: ReqBody<'a>,
}

impl<'a> Req<'a> {
    pub(crate) fn new(method: &'static str, url: String) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: ReqBody::None,
        }
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub(crate) fn body(mut self, body: ReqBody<'a>) -> Self {
        self.body = body;
        self
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `registry` (`host[:port]`) is a loopback host.
pub(crate) fn is_loopback(registry: &str) -> bool {
    if let Ok(ip) = registry.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host to connect to for a registry name.
fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Percent-encodes a query parameter value.
pub(crate) fn qs(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Summarizes a registry error body (`{"errors":[{"code","message"}]}`) in one line.
pub(crate) fn summarize_error_body(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(errors) = v.get("errors").and_then(|e| e.as_array())
    {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                match (code.is_empty(), msg.is_empty()) {
                    (false, false) => format!("{code}: {msg}"),
                    (false, true) => code.to_string(),
                    _ => msg.to_string(),
                }
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(300).collect()
}

/// Reads a file range, reporting progress.
struct ProgressReader<'a, R> {
    inner: R,
    sent: u64,
    last_report: u64,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        if let Some(p) = self.progress
            && (n == 0 || self.sent - self.last_report >= 1 << 20)
        {
            self.last_report = self.sent;
            p(self.sent);
        }
        Ok(n)
    }
}

impl Client {
    /// A client with the given options. Makes no request yet.
    pub fn new(opts: ClientOptions) -> Result<Self, RegistryError> {
        if opts.timeout.is_zero() {
            return Err(RegistryError::Config("the timeout must not be zero".into()));
        }
        let build = |insecure: bool| {
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .disable_verification(insecure)
                .build();
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .tls_config(tls)
                .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(opts.timeout))
                .timeout_send_request(Some(opts.timeout))
                .timeout_recv_response(Some(opts.timeout))
                .timeout_per_read(Some(opts.timeout))
                .timeout_per_write(Some(opts.timeout))
                .max_idle_connections_per_host(opts.parallel.max(1) * 2)
                .build()
                .new_agent()
        };
        Ok(Client {
            verifying: build(false),
            insecure: build(true),
            registries: Mutex::new(HashMap::new()),
            opts,
        })
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn agent(&self, insecure: bool) -> &ureq::Agent {
        if insecure {
            &self.insecure
        } else {
            &self.verifying
        }
    }

    /// How long to wait before retry number `attempt` (0-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.opts.backoff.as_millis() as u64;
        let ms = base.saturating_mul(1u64 << attempt.min(16)).min(8_000);
        // A little jitter so parallel uploads do not retry in lockstep.
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) % (ms / 4 + 1));
        Duration::from_millis(ms + jitter)
    }

    /// Sends one request, without retries or authentication handling.
    fn send_once(
        &self,
        insecure: bool,
        req: &Req<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let transport = |source: ureq::Error| RegistryError::Transport {
            method: req.method.to_string(),
            url: req.url.clone(),
            source,
        };
        let mut builder = http::Request::builder()
            .method(req.method)
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.as_str());
        }
        if let Some(auth) = authorization {
            builder = builder.header("Authorization", auth);
        }
        let agent = self.agent(insecure);
        let built = |b: http::request::Builder, body| {
            b.body(body).map_err(|e| transport(ureq::Error::Http(e)))
        };
        match &req.body {
            ReqBody::None => agent.run(built(builder, ())?).map_err(transport),
            ReqBody::Bytes(bytes) => {
                let request = builder
                    .body(*bytes)
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                agent.run(request).map_err(transport)
            }
            ReqBody::File {
                path,
                offset,
                len,
                progress,
            } => {
                let mut file = std::fs::File::open(path)
                    .map_err(|e| RegistryError::io(format!("open {}", path.display()), e))?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| RegistryError::io(format!("seek {}", path.display()), e))?;
                let mut reader = ProgressReader {
                    inner: std::io::BufReader::with_capacity(256 << 10, file).take(*len),
                    sent: *offset,
                    last_report: *offset,
                    progress: *progress,
                };
                let request = builder
                    .header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| transport(ureq::Error::Http(e)))?;
                agent.run(request).map_err(transport)
            }
        }
    }

    /// The state for `registry`, pinging it (`GET /v2/`) the first time to
    /// learn the transport and the authentication scheme.
    pub(crate) fn registry(&self, registry: &str) -> Result<Arc<RegistryState>, RegistryError> {
        if let Some(state) = lock(&self.registries).get(registry) {
            return Ok(Arc::clone(state));
        }
        let state = Arc::new(self.ping(registry)?);
        lock(&self.registries).insert(registry.to_string(), Arc::clone(&state));
        Ok(state)
    }

    fn ping(&self, registry: &str) -> Result<RegistryState, RegistryError> {
        let host = api_host(registry);
        let insecure = match self.opts.tls_verify {
            Some(v) => !v,
            None => is_loopback(host),
        };
        // HTTPS first; insecure registries fall back to plain HTTP when
        // HTTPS cannot even be spoken. Loopback registries, which Docker
        // treats as insecure, are tried with plain HTTP first: the same two
        // transports, but a local registry is reached without a failed TLS
        // handshake (an HTTPS server answers plain HTTP with a 400, which
        // moves on to HTTPS).
        let loopback_first = self.opts.tls_verify.is_none() && insecure;
        let candidates = match (insecure, loopback_first) {
            (false, _) => vec![format!("https://{host}")],
            (true, false) => vec![format!("https://{host}"), format!("http://{host}")],
            (true, true) => vec![format!("http://{host}"), format!("https://{host}")],
        };
        let mut last_err = None;
        let count = candidates.len();
        for (i, base) in candidates.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let req = Req::new("GET", format!("{base}/v2/"));
            let mut attempt = 0;
            let resp = loop {
                match self.send_once(insecure, &req, None) {
                    Ok(r) if is_last && should_retry_status(r.status().as_u16()) => {
                        if attempt >= self.opts.retries {
                            break Ok(r);
                        }
                    }
                    Ok(r) => break Ok(r),
                    Err(e) if is_last && e.is_retryable() && attempt < self.opts.retries => {}
                    Err(e) => break Err(e),
                }
                std::thread::sleep(self.backoff(attempt));
                attempt += 1;
            };
            let mut resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let status = resp.status().as_u16();
            if status == 400 && !is_last && base.starts_with("http://") {
                // Most likely an HTTPS server refusing plain HTTP.
                last_err = Some(self.status_error(&req, &mut resp, registry));
                continue;
            }
            let challenge = if status == 401 {
                let header = resp
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(parse_challenge)
                    // Prefer bearer over basic when both are offered.
                    .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
                if header.is_none() {
                    return Err(RegistryError::AuthProtocol {
                        url: req.url.clone(),
                        reason: "HTTP 401 without a usable WWW-Authenticate challenge".into(),
                    });
                }
                header
            } else if (200..300).contains(&status) {
                None
            } else {
                return Err(self.status_error(&req, &mut resp, registry));
            };
            return Ok(RegistryState {
                name: registry.to_string(),
                base,
                insecure,
                auth: Mutex::new(AuthState {
                    challenge,
                    ..AuthState::default()
                }),
            });
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Config("no transport to try".into())))
    }

    /// The credentials for `reg`, looked up once.
    fn credentials(
        &self,
        reg: &RegistryState,
        state: &mut AuthState,
        repository: Option<&str>,
    ) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = &state.creds {
            return Ok(c.clone());
        }
        let found = match &self.opts.creds {
            Some(c) => Some(c.clone()),
            None => find_credentials(&reg.name, repository, self.opts.auth_file.as_deref())?,
        };
        state.creds = Some(found.clone());
        Ok(found)
    }

    /// The `Authorization` header value for a request needing `scopes`.
    fn authorization(
        &self,
        reg: &RegistryState,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let mut state = lock(&reg.auth);
        let repository = scopes
            .first()
            .and_then(|s| s.strip_prefix("repository:"))
            .and_then(|s| s.rsplit_once(':'))
            .map(|(repo, _)| repo.to_string());
        match state.challenge.clone() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .credentials(reg, &mut state, repository.as_deref())?
                .map(|c| c.basic_header())),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut all: BTreeSet<String> = scopes.iter().cloned().collect();
                if let Some(s) = scope {
                    all.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_string));
                }
                let key = all.iter().cloned().collect::<Vec<_>>().join(" ");
                if let Some(t) = state.tokens.get(&key)
                    && t.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let creds = self.credentials(reg, &mut state, repository.as_deref())?;
                let token =
                    self.fetch_token(reg, &realm, service.as_deref(), &all, creds.as_ref())?;
                let header = format!("Bearer {}", token.value);
                state.tokens.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    /// Gets a bearer token from the token server at `realm`.
    fn fetch_token(
        &self,
        reg: &RegistryState,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
        creds: Option<&Credentials>,
    ) -> Result<Token, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = service {
            url.push_str(&format!("{sep}service={}", qs(service)));
            sep = '&';
        }
        for scope in scopes {
            url.push_str(&format!("{sep}scope={}", qs(scope)));
            sep = '&';
        }
        let realm_host = url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or("");
        let insecure = reg.insecure || (self.opts.tls_verify.is_none() && is_loopback(realm_host));
        let mut req = Req::new("GET", url);
        if let Some(c) = creds {
            req = req.header("Authorization", c.basic_header());
        }
        let mut attempt = 0;
        let mut resp = loop {
            match self.send_once(insecure, &req, None) {
                Ok(r)
                    if should_retry_status(r.status().as_u16()) && attempt < self.opts.retries => {}
                Ok(r) => break r,
                Err(e) if e.is_retryable() && attempt < self.opts.retries => {}
                Err(e) => return Err(e),
            }
            std::thread::sleep(self.backoff(attempt));
            attempt += 1;
        };
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(&req, &mut resp, &reg.name));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(SMALL_BODY_LIMIT)
            .read_to_string()
            .map_err(|source| RegistryError::Transport {
                method: "GET".into(),
                url: req.url.clone(),
                source,
            })?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| RegistryError::AuthProtocol {
                url: req.url.clone(),
                reason: format!("token answer is not JSON: {e}"),
            })?;
        let value = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::AuthProtocol {
                url: req.url.clone(),
                reason: "token answer has no token".into(),
            })?;
        let expires_in = v
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .filter(|e| *e > 0)
            .unwrap_or(60);
        // Renew a little before the token server's deadline.
        let margin = (expires_in / 10).clamp(1, 30);
        Ok(Token {
            value: value.to_string(),
            expires: Instant::now() + Duration::from_secs(expires_in.saturating_sub(margin)),
        })
    }

    /// Sends `req` to `reg` with authentication for `scopes`. On 401 it takes
    /// the new challenge, gets a fresh token and tries once more; with
    /// `retry`, it also retries 429, 5xx and transport errors with backoff.
    pub(crate) fn request(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        req: &Req<'_>,
        retry: bool,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut attempt = 0;
        let mut reauthenticated = false;
        // Send credentials only to the registry itself, not to other hosts
        // a Location header may name.
        let same_host = req.url.starts_with(&format!("{}/", reg.base));
        loop {
            let authorization = if same_host {
                self.authorization(reg, scopes)?
            } else {
                None
            };
            match self.send_once(reg.insecure, req, authorization.as_deref()) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && same_host && !reauthenticated {
                        reauthenticated = true;
                        let challenge = resp
                            .headers()
                            .get_all("www-authenticate")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .filter_map(parse_challenge)
                            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
                        let mut state = lock(&reg.auth);
                        if let Some(c) = challenge {
                            state.challenge = Some(c);
                        }
                        state.tokens.clear();
                        continue;
                    }
                    if retry && should_retry_status(status) && attempt < self.opts.retries {
                        let wait = retry_after(&resp)
                            .unwrap_or_else(|| self.backoff(attempt))
                            .min(Duration::from_secs(30));
                        std::thread::sleep(wait);
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) if retry && e.is_retryable() && attempt < self.opts.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Turns an unexpected answer into an error, reading (a bounded part
    /// of) the registry's error body.
    pub(crate) fn status_error(
        &self,
        req: &Req<'_>,
        resp: &mut Response<ureq::Body>,
        registry: &str,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let body = if req.method == "HEAD" {
            String::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(SMALL_BODY_LIMIT)
                .lossy_utf8(true)
                .read_to_string()
                .map(|b| summarize_error_body(&b))
                .unwrap_or_default()
        };
        if status == 401 || status == 403 {
            let has_creds = self.opts.creds.is_some()
                || lock(&self.registries)
                    .get(registry)
                    .is_some_and(|r| matches!(lock(&r.auth).creds, Some(Some(_))));
            let hint = if status == 403 {
                format!("the credentials for {registry} lack permission for this")
            } else if has_creds {
                format!("check the username and password for {registry}")
            } else {
                format!(
                    "no credentials found for {registry} (use --creds USER:PASS or `strata login {registry}`)"
                )
            };
            return RegistryError::Unauthorized {
                method: req.method.to_string(),
                url: req.url.clone(),
                status,
                body,
                hint,
            };
        }
        RegistryError::Http {
            method: req.method.to_string(),
            url: req.url.clone(),
            status,
            body,
        }
    }

    /// Checks that `registry` accepts this client's credentials: pings it
    /// and, if it requires authentication, authenticates (for a bearer
    /// registry, fetches a token for no particular scope).
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let reg = self.registry(registry)?;
        let req = Req::new("GET", format!("{}/v2/", reg.base));
        let mut resp = self.request(&reg, &[], &req, true)?;
        if (200..300).contains(&resp.status().as_u16()) {
            Ok(())
        } else {
            Err(self.status_error(&req, &mut resp, &reg.name))
        }
    }

    /// Passes `resp` through if its status is one of `ok`, else turns it
    /// into an error.
    pub(crate) fn expect(
        &self,
        reg: &RegistryState,
        req: &Req<'_>,
        mut resp: Response<ureq::Body>,
        ok: &[u16],
    ) -> Result<Response<ureq::Body>, RegistryError> {
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            Err(self.status_error(req, &mut resp, &reg.name))
        }
    }
}

/// Whether an HTTP status is worth retrying.
fn should_retry_status(status: u16) -> bool {
    status == 429 || status == 502 || status == 503 || status == 504 || status == 500
}

/// The `Retry-After` delay in seconds, if given.
fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A response header as a string.
pub(crate) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "127.0.0.1:5000",
            "127.3.2.1",
            "localhost:1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "example.com",
            "[2001:db8::1]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn error_body_summary() {
        let s = summarize_error_body(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(s, "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(summarize_error_body("  plain\n text "), "plain text");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            qs("repository:a/b:pull,push"),
            "repository%3Aa/b%3Apull%2Cpush"
        );
    }
}
